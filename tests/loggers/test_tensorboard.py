"""The logger group, and logger=tensorboard: event files read back and compared with the run's own files."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from deeprun.commands.run import main as deeprun_main
from deeprun.loggers import LOGGERS, Loggers, MLflow, TensorBoard, all_of, epoch_scalars, flat_hparams
from deeprun.registry import ConfigError
from deeprun.settings import CONFIG_DIR, settings_from_config
from deeprun.sweeps.fusion import fusion_key, group_runs
from helpers.commands import invoke, run_command
from helpers.configs import compose_dict

CONF = Path(CONFIG_DIR) / "logger"
EVENTS = "events.out.tfevents.*"


def read_events(logdir: Path) -> list:
    """Every event of the event files in ``logdir``, each TFRecord's length and data checked against
    their masked CRC-32C (the format TensorBoard reads)."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    events = []
    for path in sorted(logdir.glob(EVENTS)):
        data, position = path.read_bytes(), 0
        while position < len(data):
            header = data[position : position + 8]
            (length,) = struct.unpack("<Q", header)
            (header_crc,) = struct.unpack("<I", data[position + 8 : position + 12])
            payload = data[position + 12 : position + 12 + length]
            (payload_crc,) = struct.unpack("<I", data[position + 12 + length : position + 16 + length])
            assert header_crc == masked_crc32c(header) and payload_crc == masked_crc32c(payload), path
            events.append(Event.FromString(payload))
            position += 16 + length
    return events


def scalars(events) -> dict[str, dict[int, float]]:
    """tag → {step: value}."""
    found: dict[str, dict[int, float]] = {}
    for event in events:
        for value in event.summary.value:
            if value.HasField("simple_value"):
                found.setdefault(value.tag, {})[event.step] = value.simple_value
    return found


def histograms(events) -> dict[str, dict[int, object]]:
    """tag → {step: HistogramProto}."""
    found: dict[str, dict[int, object]] = {}
    for event in events:
        for value in event.summary.value:
            if value.HasField("histo"):
                found.setdefault(value.tag, {})[event.step] = value.histo
    return found


def hparams_data(events) -> dict[str, object]:
    """The HParams plugin's records by tag (experiment, session start and end)."""
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    return {
        value.tag: HParamsPluginData.FromString(value.metadata.plugin_data.content)
        for event in events
        for value in event.summary.value
        if value.metadata.plugin_data.plugin_name == "hparams"
    }


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Two seeds × {tensorboard, none}: four jobs that differ in numbers and the logger, fused."""
    cwd = tmp_path_factory.mktemp("loggers")
    result = invoke(
        deeprun_main,
        "-m",
        "data=synthetic",
        "model.hidden=[16,8]",
        "trainer.epochs=3",
        "schedule=constant",
        "trainer.seed=1,2",
        "trainer.plots=false",
        "trainer.diagnostics=true",
        "logger=tensorboard,none",
        "hydra.sweep.dir=sweep",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    assert "4 fused runs" in result.stdout
    return cwd / "sweep"


def jobs(sweep: Path, logger: str) -> list[Path]:
    return [
        job
        for job in sorted(sweep.iterdir())
        if job.is_dir() and list(OmegaConf.load(job / ".hydra/config.yaml").logger) == ([logger] if logger else [])
    ]


def test_epoch_scalars_equal_metrics_jsonl_per_fused_run(sweep):
    runs = jobs(sweep, "tensorboard")
    assert len(runs) == 2
    seen = []
    for job in runs:
        records = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
        found = scalars(read_events(job / "tensorboard"))
        for key in ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr", "epoch_time_s"):
            expected = {record["epoch"]: record[key] for record in records}
            assert found[key].keys() == expected.keys(), key
            for epoch, value in expected.items():  # TensorBoard keeps float32
                assert found[key][epoch] == pytest.approx(value, rel=1e-6), (key, epoch)
        summary = json.loads((job / "summary.json").read_text())
        for key in ("loss", "accuracy"):
            assert found[f"test/{key}"] == {3: pytest.approx(summary["test"][key], rel=1e-6)}
        seen.append(found["train/loss"][3])
    assert seen[0] != seen[1]  # each run's own numbers (two seeds), not one run's twice


def test_diagnostics_rows_are_scalars_per_statistic_and_layer(sweep):
    job = jobs(sweep, "tensorboard")[0]
    found = scalars(read_events(job / "tensorboard"))
    lines = [json.loads(line) for line in (job / "diagnostics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    tags = set()
    for line in lines:
        assert [row["layer"] for row in line["layers"]] == [1, 2]
        for row in line["layers"]:
            for key in ("pre_mean", "pre_std", "act_mean", "act_std", "grad_norm"):
                tag = f"diagnostics/{key}/layer_{row['layer']}"
                assert found[tag][line["epoch"]] == pytest.approx(row[key], rel=1e-6, abs=1e-12), tag
                tags.add(tag)
    assert {tag for tag in found if tag.startswith("diagnostics/")} == tags


def test_weight_histograms_per_layer_match_the_final_weights(sweep):
    from deeprun.loggers.tensorboard import parameter_arrays
    from deeprun.runs.loading import load_run

    job = jobs(sweep, "tensorboard")[0]
    found = histograms(read_events(job / "tensorboard"))
    weights = parameter_arrays(load_run(job).state.params)
    assert set(weights) == {
        "blocks/0/dense/kernel",
        "blocks/0/dense/bias",
        "blocks/1/dense/kernel",
        "blocks/1/dense/bias",
        "output/kernel",
        "output/bias",
    }
    assert set(found) == {f"weights/{name}" for name in weights}
    for name, values in weights.items():
        per_epoch = found[f"weights/{name}"]
        assert sorted(per_epoch) == [1, 2, 3]
        last = per_epoch[3]  # the run completed: its final weights are the last epoch's
        assert last.num == values.size and sum(last.bucket) == values.size
        assert last.min == pytest.approx(values.min()) and last.max == pytest.approx(values.max())
        assert last.sum == pytest.approx(values.sum(), abs=1e-5)


def test_hparams_are_the_flattened_config_with_the_final_metrics(sweep):
    job = jobs(sweep, "tensorboard")[0]
    records = hparams_data(read_events(job / "tensorboard"))
    assert set(records) == {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}
    start = records["_hparams_/session_start_info"].session_start_info.hparams
    config = OmegaConf.to_container(OmegaConf.load(job / ".hydra/config.yaml"))
    assert set(start) == set(flat_hparams(config))
    assert start["trainer.seed"].number_value == config["trainer"]["seed"]
    assert start["model.hidden"].string_value == "[16, 8]"
    assert start["optimizer.name"].string_value == "momentum"
    assert start["trainer.shuffle"].bool_value is True
    metrics = [info.name.tag for info in records["_hparams_/experiment"].experiment.metric_infos]
    assert metrics == ["test/accuracy", "test/loss", "val/accuracy", "val/loss"]
    assert set(metrics) <= set(scalars(read_events(job / "tensorboard")))  # TensorBoard reads them there


def test_logger_none_writes_no_event_files(sweep):
    runs = jobs(sweep, "")
    assert len(runs) == 2
    for job in runs:
        assert not list(job.rglob(EVENTS)) and not (job / "tensorboard").exists()
        assert (job / "metrics.jsonl").is_file() and (job / "summary.json").is_file()


def test_histogram_every_n_epochs_and_none_at_zero(tmp_path):
    from types import SimpleNamespace

    from flax import nnx

    params = nnx.state(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), nnx.Param)

    def point(epoch):
        return SimpleNamespace(state=SimpleNamespace(params=params), progress={"history": [{}] * epoch})

    log = Loggers((TensorBoard(dir="every2", histogram_every=2),)).open(tmp_path, {})
    for epoch in range(1, 6):
        log.saver(point(epoch))
    log.close()
    found = histograms(read_events(tmp_path / "every2"))
    assert {tag: sorted(steps) for tag, steps in found.items()} == {"weights/kernel": [2, 4], "weights/bias": [2, 4]}
    assert Loggers((TensorBoard(dir="off", histogram_every=0),)).open(tmp_path, {}).saver is None


def test_a_resumed_run_tells_tensorboard_to_drop_the_epochs_it_trains_again(tmp_path):
    from tensorboardX.proto.event_pb2 import SessionLog

    def record(epoch, loss):
        return {"epoch": epoch, "step": 10 * epoch, "val/loss": loss}

    killed = Loggers((TensorBoard(),)).open(tmp_path, {})
    for epoch in (1, 2, 3):  # killed after logging epoch 3, with epoch 2's checkpoint on disk
        killed.epoch(record(epoch, 1.0 / epoch))
    killed.close()
    resumed = Loggers((TensorBoard(),)).open(tmp_path, {})
    for epoch in (3, 4):
        resumed.epoch(record(epoch, 0.1 / epoch))
    resumed.close()
    files = sorted((tmp_path / "tensorboard").glob(EVENTS))
    assert len(files) == 2
    starts = [
        (event.step, event.session_log.status)
        for event in read_events(tmp_path / "tensorboard")
        if event.HasField("session_log")
    ]
    assert starts == [(1, SessionLog.START), (3, SessionLog.START)]  # TensorBoard purges steps >= 3 of earlier files


def test_tune_trials_write_event_files(tmp_path):
    from deeprun.sweeps.tune_space import tune_options
    from deeprun.sweeps.tuning import run_study

    options = tune_options(
        {
            "n_trials": 1,
            "sampler": "random",
            "pruner": "none",
            "space": {"optimizer.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1}},
        }
    )
    overrides = [
        "data=synthetic",
        "model.hidden=[16]",
        "trainer.epochs=2",
        "trainer.checkpoint=false",
        "trainer.plots=false",
        "logger=tensorboard",
    ]
    run_study(options, lambda groups: compose_dict([*overrides, *groups]), tmp_path / "sweep", log=lambda line: None)
    trial = tmp_path / "sweep/trials/0"
    found = scalars(read_events(trial / "tensorboard"))
    records = [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()]
    assert found["val/loss"] == {r["epoch"]: pytest.approx(r["val/loss"], rel=1e-6) for r in records}
    assert "test/accuracy" in found


def test_unknown_logger_exits_2_naming_the_valid_ones(tmp_path):
    result = run_command("logger=foo", "data=synthetic", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "deeprun: error: logger=foo: no such option; valid: mlflow, none, tensorboard"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("logger.tensorboard.histogram_every=-1", "logger.tensorboard.histogram_every must be >= 0 (got -1)"),
        ("logger.tensorboard.dir=/tmp/tb", "logger.tensorboard.dir must be a folder name relative to the run folder"),
        ("logger.tensorboard.dir=''", "logger.tensorboard.dir must be a folder name relative to the run folder"),
        ("+logger.tensorboard.bins=3", "logger.tensorboard: unknown field 'bins'"),
    ],
)
def test_bad_tensorboard_fields_are_rejected(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings_from_config(compose_dict(["logger=tensorboard", override]))


def test_default_is_none_and_older_configs_still_load():
    assert compose_dict()["logger"] == {}
    assert settings_from_config(compose_dict()).logger == Loggers()
    older = {k: v for k, v in compose_dict(["logger=tensorboard"]).items() if k != "logger"}
    assert settings_from_config(older).logger == Loggers()  # a run folder saved before the group existed
    # Saved before several loggers at once: one option with its name.
    one = {**older, "logger": {"name": "tensorboard", "dir": "tb", "histogram_every": 2}}
    assert settings_from_config(one).logger == Loggers((TensorBoard("tb", 2),))
    assert settings_from_config({**older, "logger": {"name": "none"}}).logger == Loggers()


def test_several_loggers_at_once_each_with_its_fields():
    config = compose_dict(["logger=[tensorboard,mlflow]", "logger.mlflow.experiment=study"])
    assert list(config["logger"]) == ["tensorboard", "mlflow"]
    assert settings_from_config(config).logger == Loggers((TensorBoard(), MLflow(experiment="study")))
    with pytest.raises(ConfigError, match="logger: unknown option 'bogus'; valid options: mlflow, none, tensorboard"):
        settings_from_config(compose_dict(["logger=[tensorboard]"]) | {"logger": {"bogus": {}}})


def test_yaml_files_are_exactly_the_registered_options_with_every_field():
    import dataclasses

    assert sorted(p.stem for p in CONF.glob("*.yaml")) == LOGGERS.names()
    for name in LOGGERS.names():
        values = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
        fields = {f.name: f.default for f in dataclasses.fields(LOGGERS.get(name))}
        assert values == ({name: fields} if name != "none" else {}), name


def test_runs_with_different_loggers_fuse():
    base = compose_dict(["data=synthetic"])
    tensorboard = compose_dict(["data=synthetic", "logger=tensorboard", "trainer.seed=7"])
    assert fusion_key(base) == fusion_key(tensorboard)
    assert group_runs([base, tensorboard], max_members=8) == [[0, 1]]


def test_epoch_scalars_skip_counters_flags_and_non_finite_values():
    record = {
        "epoch": 2,
        "step": 20,
        "lr": 0.1,
        "val/loss": float("nan"),
        "flag": True,
        "diagnostics": [{"layer": 1, "grad_norm": 0.5, "act_std": float("inf")}],
    }
    assert epoch_scalars(record) == {"lr": 0.1, "diagnostics/grad_norm/layer_1": 0.5}


def test_flat_hparams():
    config = {"a": {"b": 1, "c": [16, 8], "d": None, "e": {}}, "f": "x", "g": True, "h": 0.5}
    assert flat_hparams(config) == {"a.b": 1, "a.c": "[16, 8]", "a.e": "{}", "f": "x", "g": True, "h": 0.5}


def test_all_of_calls_each_saver_in_order():
    calls = []
    assert all_of(None, None) is None
    saver = all_of(lambda p: calls.append(("a", p)), None, lambda p: calls.append(("b", p)))
    saver(1)
    assert calls == [("a", 1), ("b", 1)]
