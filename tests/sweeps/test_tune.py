"""deeprun-tune: search-space checks, a study and its resumption, pruning, divergence, crashed and
invalid trials, the sweep lock, and the command end to end."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from deeprun.registry import ConfigError
from deeprun.reports.study import STUDY_FIGURES
from deeprun.settings import CONFIG_DIR
from deeprun.sweeps.tune_space import STUDY_DB, TRIALS_CSV, TRIALS_MD, check_space, parse_space, set_path, tune_options
from deeprun.sweeps.tuning import open_study, run_study
from helpers.configs import compose_dict
from helpers.ownership import folder_owned_by_another_process

FAST = [
    "data=synthetic",
    "model.hidden=[16]",
    "trainer.epochs=2",
    "trainer.checkpoint=false",
    "trainer.plots=false",
    "schedule=constant",
    "optimizer=sgd",
]
LR = {"optimizer.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}


def composer(*overrides: str):
    """A Compose over the test config: FAST, ``overrides``, then the trial's group choices."""
    return lambda groups: compose_dict([*FAST, *overrides, *groups])


def options(space=None, **values):
    return tune_options({"space": LR if space is None else space, "sampler": "random", "pruner": "none", **values})


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_optuna_is_version_4():
    assert optuna.__version__.split(".")[0] == "4"


@pytest.mark.parametrize(
    "space, fragment",
    [
        ({}, "tune.space is empty: choose a space file (tune/space=NAME; available: "),
        ({"optimizer.learning_rate": {"low": 0.1, "high": 1}}, "needs a type: float, int or categorical"),
        (
            {"optimizer.learning_rate": {"type": "normal", "low": 0.1, "high": 1}},
            "tune.space.optimizer.learning_rate.type must be one of float, int, categorical",
        ),
        ({"optimizer.learning_rate": {"type": "float", "low": 0.1, "high": 0.1}}, "low must be < high (0.1)"),
        ({"optimizer.learning_rate": {"type": "float", "high": 0.1}}, "needs low and high"),
        (
            {"optimizer.learning_rate": {"type": "float", "low": 0.0, "high": 0.1, "log": True}},
            "low must be > 0 with log: true",
        ),
        (
            {"optimizer.learning_rate": {"type": "float", "low": 0.1, "high": 1, "log": True, "step": 0.1}},
            "step cannot be combined with log: true",
        ),
        ({"trainer.batch_size": {"type": "int", "low": 16.5, "high": 64}}, "batch_size.low must be an integer"),
        ({"trainer.batch_size": {"type": "categorical", "choices": []}}, "batch_size.choices must not be empty"),
        (
            {"trainer.batch_size": {"type": "int", "low": 16, "high": 64, "choices": [32]}},
            "choices is for the categorical type",
        ),
        ({"trainer.batch_size": {"type": "categorical", "choices": [32], "low": 1}}, "low is for float and int types"),
        (
            {"optimizer.learning_rate": {"type": "float", "low": 0.1, "high": 1, "lg": True}},
            "tune.space.optimizer.learning_rate: unknown field 'lg'; valid fields: choices, high, log, low, step, type",
        ),
        (
            {"optimizer.learnin_rate": {"type": "float", "low": 0.1, "high": 1}},
            "'optimizer.learnin_rate' is not in the config; optimizer has: clip_global_norm, clip_norm, clip_value, "
            "learning_rate, name",
        ),
        (
            {"optimiser.learning_rate": {"type": "float", "low": 0.1, "high": 1}},
            "'optimiser.learning_rate' is not in the config; the config has: activation, data,",
        ),
        (
            {"optimizer.learning_rate.x": {"type": "float", "low": 0.1, "high": 1}},
            "optimizer.learning_rate has: nothing (not a mapping)",
        ),
        (
            {"optimiser": {"type": "categorical", "choices": ["sgd"]}},
            "is not a config group; groups: activation, data,",
        ),
        (
            {"optimizer": {"type": "categorical", "choices": ["sgd", "lion"]}},
            "tune.space.optimizer.choices must be options of the group (adagrad, adam,",
        ),
        (
            {"optimizer": {"type": "float", "low": 0.1, "high": 1}},
            "optimizer.type must be categorical for a config group",
        ),
    ],
)
def test_bad_search_spaces_are_rejected_in_one_line(space, fragment):
    with pytest.raises(ConfigError) as error:
        check_space(parse_space(space), compose_dict(FAST))
    assert fragment in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"n_trials": 0}, "tune.n_trials must be > 0"),
        ({"sampler": "grid"}, "tune.sampler must be one of tpe, random"),
        ({"pruner": "hyperband"}, "tune.pruner must be one of median, none"),
        ({"metric": "test/accuracy"}, "tune.metric must be one of"),
        ({"trials": 3}, "tune: unknown field 'trials'"),
    ],
)
def test_bad_tune_options_are_rejected(values, fragment):
    with pytest.raises(ConfigError, match=fragment):
        tune_options({"space": LR, **values})


def test_fields_under_a_switched_group_are_checked_per_trial_and_a_group_can_be_searched():
    space = parse_space(
        {
            "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
            "optimizer.beta_1": {"type": "float", "low": 0.8, "high": 0.99},
        }
    )
    check_space(space, compose_dict(FAST))  # sgd has no beta_1, adam has
    assert set_path({"a": {"b": 1, "c": 2}}, "a.b", 5) == {"a": {"b": 5, "c": 2}}


def test_a_study_resumes_to_n_trials_without_repeating_its_first_points(tmp_path):
    sweep = tmp_path / "sweep"
    study = run_study(options(n_trials=2), composer("trainer.epochs=1"), sweep, log=lambda line: None)
    assert (sweep / STUDY_DB).is_file()
    first = read_csv(sweep / TRIALS_CSV)
    assert [row["number"] for row in first] == ["0", "1"]

    lines = []
    study = run_study(options(n_trials=4), composer("trainer.epochs=1"), sweep, log=lines.append)
    assert lines[0] == f"resuming the study in {sweep}: 2 of 4 trials done"
    rows = read_csv(sweep / TRIALS_CSV)
    assert len(study.trials) == 4 and [row["number"] for row in rows] == ["0", "1", "2", "3"]
    assert rows[:2] == first  # the first run's trials are untouched
    learning_rates = [float(row["optimizer.learning_rate"]) for row in rows]
    assert len(set(learning_rates)) == 4  # the resumed sampler does not replay its seed's first draws
    for row in rows:
        run_dir = sweep / "trials" / row["number"]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert (row["state"], row["status"], summary["status"]) == ("complete", "completed", "completed")
        assert float(row["value"]) == metrics(run_dir)[0]["val/accuracy"] and row["epochs"] == "1"
        assert (run_dir / ".hydra" / "overrides.yaml").read_text().startswith("- optimizer.learning_rate=")
    assert "| number | state | status | value |" in (sweep / TRIALS_MD).read_text()
    assert all((sweep / name).read_bytes().startswith(b"\x89PNG") for name in STUDY_FIGURES)

    with pytest.raises(ConfigError, match=r"tune.metric must be the study's metric in .* \(val/accuracy\)"):
        run_study(options(n_trials=4, metric="val/loss"), composer(), sweep)


def test_an_unpromising_trial_is_pruned_and_a_diverging_one_recorded_while_the_study_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    rates = [0.1, 1e-6, 1e30]  # good, hopeless (pruned after epoch 1), diverging
    opts = options(
        {"optimizer.learning_rate": {"type": "categorical", "choices": rates}},
        n_trials=3,
        pruner="median",
        pruner_startup_trials=1,
        pruner_warmup_epochs=0,
    )
    study = open_study(sweep, opts, "prune")
    for learning_rate in rates:  # in this order
        study.enqueue_trial({"optimizer.learning_rate": learning_rate})
    lines: list[str] = []
    run_study(opts, composer("trainer.epochs=3"), sweep, log=lines.append)

    rows = read_csv(sweep / TRIALS_CSV)
    assert [(row["state"], row["status"], row["epochs"]) for row in rows] == [
        ("complete", "completed", "3"),
        ("pruned", "pruned", "1"),
        ("pruned", "diverged", "1"),
    ]
    completed = metrics(sweep / "trials" / "0")
    best = max(completed, key=lambda record: record["val/accuracy"])  # a trial's value: its best epoch's
    assert float(rows[0]["value"]) == best["val/accuracy"] and rows[0]["best_epoch"] == str(best["epoch"])
    pruned = sweep / "trials" / "1"
    assert len(metrics(pruned)) == 1  # stopped before the 3-epoch budget
    summary = json.loads((pruned / "summary.json").read_text())
    assert (summary["status"], summary["epochs_completed"]) == ("pruned", 1)
    assert summary["final"]["val/accuracy"] < completed[0]["val/accuracy"]
    assert json.loads((sweep / "trials" / "2" / "summary.json").read_text())["status"] == "diverged"
    # The study's figures beside trials.md; the pruner's view has a curve per trial, the pruned ones too.
    for name in ("optimization_history.png", "intermediate_values.png"):
        assert (sweep / name).read_bytes().startswith(b"\x89PNG"), name
    study = open_study(sweep, opts, "prune")
    reported = [trial for trial in study.trials if trial.intermediate_values]
    assert "PRUNED" in {trial.state.name for trial in reported}
    assert len(STUDY_FIGURES["intermediate_values.png"](study).get_lines()) == len(reported)
    # One complete trial has no importances to compare: said, not drawn.
    assert not (sweep / "param_importances.png").exists()
    assert any(line.startswith("param_importances.png not drawn: ") for line in lines), lines


def test_a_trial_cut_off_by_a_crash_is_marked_failed_and_tried_again(tmp_path):
    sweep = tmp_path / "sweep"
    opts = options(n_trials=1)
    study = open_study(sweep, opts, "crash")
    crashed = study.ask()  # a process that died in this trial: it stays RUNNING in study.db
    learning_rate = crashed.suggest_float("optimizer.learning_rate", 1e-3, 1e-1, log=True)

    lines = []
    study = run_study(opts, composer("trainer.epochs=1"), sweep, log=lines.append)
    assert lines[0] == "trial 0 was cut off by a crash: marked failed, its parameters queued again"
    first, retry = study.trials
    assert (first.state, retry.state) == (TrialState.FAIL, TrialState.COMPLETE)
    assert retry.params["optimizer.learning_rate"] == learning_rate and retry.user_attrs["retry_of"] == 0
    rows = read_csv(sweep / TRIALS_CSV)
    assert [row["status"] for row in rows] == ["crashed", "completed"]
    assert rows[0]["duration_s"] == "" and float(rows[1]["duration_s"]) > 0  # a crashed trial's end is unknown


def test_an_invalid_sample_fails_its_trial_with_the_reason(tmp_path):
    sweep = tmp_path / "sweep"
    space = {
        "optimizer": {"type": "categorical", "choices": ["sgd"]},
        "optimizer.beta_1": {"type": "float", "low": 0.8, "high": 0.99},
        "trainer.batch_size": {"type": "categorical", "choices": [0]},
    }
    study = run_study(options(space, n_trials=2), composer(), sweep, log=lambda line: None)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    rows = read_csv(sweep / TRIALS_CSV)
    assert {row["status"] for row in rows} == {"invalid"}
    assert rows[0]["error"].startswith("tune.space: 'optimizer.beta_1' is not in the config; optimizer has: ")
    summary = json.loads((sweep / "trials" / "0" / "summary.json").read_text())
    assert summary["status"] == "failed" and "beta_1" in summary["error"]

    space.pop("optimizer.beta_1")
    study = run_study(options(space, n_trials=3), composer(), sweep, log=lambda line: None)
    assert "trainer.batch_size must be > 0" in study.trials[2].user_attrs["error"]


def test_a_bad_value_in_the_command_fails_once_before_any_trial(tmp_path):
    with pytest.raises(ConfigError, match="trainer.epochs must be > 0"):
        run_study(options(n_trials=3), composer("trainer.epochs=0"), tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


def test_one_process_at_a_time_tunes_a_sweep_folder(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    with folder_owned_by_another_process(sweep):
        with pytest.raises(ConfigError, match="is in use by another deeprun process"):
            run_study(options(n_trials=1), composer(), sweep)
    assert not (sweep / STUDY_DB).exists()


def tune_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "deeprun.commands.tune", *FAST, *args]


def test_the_command_rejects_a_bad_config_in_one_line_and_leaves_no_folder(tmp_path):
    result = subprocess.run(tune_command("tune.dir=empty"), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.startswith("deeprun: error: tune.space is empty") and result.stderr.count("\n") == 1
    assert not (tmp_path / "empty").exists()


@pytest.mark.slow  # resuming a study is tested by default (test_a_study_resumes_to_n_trials_...)
def test_ctrl_c_saves_the_study_and_the_same_command_resumes_it(tmp_path):
    """The first SIGINT ends the trial after its epoch: exit 130, the trial failed as interrupted (not
    counted) and its parameters queued; the same command on the folder runs them first and prints the
    trials table."""
    import signal
    import time

    command = tune_command("tune/space=learning_rate", "tune.dir=sweep", "tune.n_trials=1")
    process = subprocess.Popen(
        [*command, "data.n_train=4000", "model.hidden=[64]", "trainer.epochs=500"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics_file, deadline = tmp_path / "sweep" / "trials" / "0" / "metrics.jsonl", time.time() + 120
    while time.time() < deadline and not (metrics_file.is_file() and metrics_file.read_text().count("\n") >= 1):
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "deeprun-tune: interrupted in trial 0; run the same command with tune.dir=" in stderr
    [row] = read_csv(tmp_path / "sweep" / TRIALS_CSV)
    assert (row["state"], row["status"]) == ("fail", "interrupted") and 1 <= int(row["epochs"]) < 500

    result = subprocess.run([*command, "trainer.epochs=1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "sweep: 0 of 1 trials done" in result.stdout
    assert "Study tune: maximize val/accuracy" in result.stdout and "best: trial 1" in result.stdout
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'sweep' / STUDY_DB}")
    interrupted, retry = study.trials
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["retry_of"] == 0
    assert retry.params == interrupted.params


@pytest.mark.parametrize("name", sorted(p.stem for p in Path(CONFIG_DIR, "tune", "space").glob("*.yaml")))
def test_every_space_file_is_valid(name):
    space = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR, "tune", "space", f"{name}.yaml")))
    check_space(parse_space(space), compose_dict(FAST))
