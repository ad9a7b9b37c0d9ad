"""The `deeprun` command end to end, in subprocesses: a run, a sweep, help, bad input, real data."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deeprun.commands.run import main as deeprun_main
from deeprun.runs.folder import METRIC_KEYS
from helpers.commands import deeprun, invoke
from helpers.datasets import fashion_mnist_available

FAST = ["data=synthetic", "model.hidden=[32]"]


def only_child(path: Path) -> Path:
    children = [p for p in path.iterdir()]
    assert len(children) == 1, children
    return children[0]


def test_single_run_writes_every_file(tmp_path):
    result = deeprun(*FAST, "trainer.epochs=2", "name=smoke", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = only_child(tmp_path / "outputs" / "runs" / "smoke")
    assert f"run folder: {run_dir}" in result.stdout.replace("\n", "")
    assert "epoch   2/2" in result.stdout
    assert re.search(r"^compiled the epoch program in \d+\.\ds$", result.stdout, re.MULTILINE)  # before epoch 1
    assert result.stdout.index("compiled the epoch program") < result.stdout.index("epoch   1/2")
    assert "steps of this epoch" not in result.stdout  # a pipe: no progress within the epoch
    for name in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "metrics.jsonl",
        "metrics.csv",
        "summary.json",
        "learning_curves.png",
    ):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoint").is_dir()

    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [list(line) for line in lines] == [list(METRIC_KEYS)] * 2
    assert [line["epoch"] for line in lines] == [1, 2] and lines[1]["step"] == 32
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[1]["val/loss"]) == pytest.approx(lines[1]["val/loss"])

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    for key in (
        "best_epoch",
        "final",
        "best",
        "test",
        "params",
        "compile_time_s",
        "steady_epoch_time_s",
        "versions",
        "device",
    ):
        assert key in summary, key
    assert summary["final"]["val/accuracy"] == lines[1]["val/accuracy"]
    assert set(summary["test"]) == {"loss", "accuracy"}
    assert summary["params"]["total"] == 64 * 32 + 32 + 32 * 10 + 10


def test_same_config_and_seed_give_identical_metrics(tmp_path):
    for name in ("a", "b"):
        assert (
            invoke(
                deeprun_main,
                *FAST,
                "trainer.epochs=2",
                f"name={name}",
                "regularizer=dropout",
                "trainer.checkpoint=false",
                cwd=tmp_path,
            ).returncode
            == 0
        )

    def metrics(name):
        lines = (only_child(tmp_path / "outputs/runs" / name) / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "epoch_time_s"} for line in lines]

    assert metrics("a") == metrics("b")


def test_multirun_sweeps_each_job_into_its_own_folder(tmp_path):
    result = invoke(deeprun_main, "-m", *FAST, "optimizer=sgd,adam", "trainer.epochs=1", "name=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    sweep_dir = only_child(tmp_path / "outputs" / "sweeps" / "sweep")
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    optimizers = []
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed"
        optimizers.append((job / ".hydra" / "overrides.yaml").read_text())
    assert "optimizer=sgd" in optimizers[0] and "optimizer=adam" in optimizers[1]


def test_help_lists_groups_and_options(tmp_path):
    result = invoke(deeprun_main, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "optimizer: adagrad, adam, adamax, adamw, momentum, nadam, nesterov, rmsprop, sgd" in result.stdout
    assert "schedule: 1cycle, constant, exponential, performance, piecewise, power" in result.stdout
    assert "regularizer=[l2,dropout]" in result.stdout


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = invoke(deeprun_main, "--cfg", "job", "optimizer=nadam", cwd=tmp_path)
    assert result.returncode == 0
    assert "name: nadam" in result.stdout and "momentum_schedule: legacy" in result.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["optimizer.learning_rate=-1"], "optimizer.learning_rate must be > 0 (got -1.0)"),
        (["regularizer=dropout", "regularizer.dropout.rate=1.5"], "regularizer.dropout.rate must be in [0, 1)"),
        (["trainer.batch_size=0"], "trainer.batch_size must be > 0"),
    ],
)
def test_invalid_value_exits_2_with_one_line_and_no_run_folder(tmp_path, args, message):
    result = invoke(deeprun_main, *FAST, *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"deeprun: error: {message}" or message in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "outputs" / "runs").rglob("summary.json"))
    assert not any((tmp_path / "outputs" / "runs").rglob(".hydra"))


def test_unknown_option_lists_the_valid_ones(tmp_path):
    result = invoke(deeprun_main, "optimizer=adamm", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "deeprun: error: optimizer=adamm: no such option; valid: adagrad, adam, "
        "adamax, adamw, momentum, nadam, nesterov, rmsprop, sgd"
    )


def test_missing_data_says_how_to_get_it(tmp_path):
    result = invoke(deeprun_main, f"data.root={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert result.returncode == 2
    for hint in ("data.root", "DEEPRUN_DATA", "apt-get install dataset-fashion-mnist"):
        assert hint in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST not installed (make data)")
def test_nadam_1cycle_one_epoch_on_real_fashion_mnist(tmp_path):
    result = deeprun("optimizer=nadam", "schedule=1cycle", "trainer.epochs=1", "name=real", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((only_child(tmp_path / "outputs/runs/real") / "summary.json").read_text())
    assert summary["final"]["val/accuracy"] > 0.8
    assert summary["params"]["total"] == 266_610
    lines = (only_child(tmp_path / "outputs/runs/real") / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["step"] == 1719


def test_second_identical_run_compiles_nothing(tmp_path):
    """The persistent compilation cache (under DEEPRUN_CACHE_DIR here) serves the second run."""
    args = [
        "data=synthetic",
        "trainer.epochs=1",
        "model=deep_mlp",
        "model.depth=20",
        "model.width=64",
        "trainer.plots=false",
    ]
    times = []
    for name in ("first", "second"):
        assert deeprun(*args, f"name={name}", cwd=tmp_path).returncode == 0
        times.append(
            json.loads((only_child(tmp_path / "outputs/runs" / name) / "summary.json").read_text())["compile_time_s"]
        )
    assert times[1] < 0.3 * times[0], times
    assert any((Path(os.environ["DEEPRUN_CACHE_DIR"]) / "jax").iterdir())


def test_checkpoint_restores_the_final_state(tmp_path, make_settings):
    """The run folder's checkpoint holds the final state: restored, it reproduces the test metrics."""
    import numpy as np

    from deeprun.runs.loading import load_run
    from deeprun.training.trainer import Trainer

    result = invoke(
        deeprun_main, *FAST, "trainer.epochs=2", "name=ckpt", "optimizer=adam", "normalization=batchnorm", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    run_dir = only_child(tmp_path / "outputs/runs/ckpt")
    loaded = load_run(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert int(loaded.state.step) == 32
    dataset = loaded.settings.data.load()
    trainer = Trainer(loaded.settings, len(dataset.y_train), dataset.n_features, dataset.n_classes)
    test = trainer.evaluate(
        loaded.state, loaded.settings.regularization, dataset.scaling, dataset.pixels_test, dataset.y_test
    )
    assert test["accuracy"] == summary["test"]["accuracy"]
    assert np.isclose(test["loss"], summary["test"]["loss"], rtol=1e-6)
    assert float(loaded.state.opt_state.hyperparams["learning_rate"]) > 0
    logits = loaded.model()(dataset.x_test[:5])
    assert logits.shape == (5, 10)


def test_ctrl_c_stops_after_the_epoch_with_a_checkpoint(tmp_path):
    """The first SIGINT ends the run cleanly at the end of the current epoch: status interrupted,
    metrics and checkpoint of the finished epochs, exit code 130."""
    import signal
    import time

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deeprun.commands.run",
            "data=synthetic",
            "data.n_train=20000",
            "model.hidden=[256,256]",
            "trainer.epochs=200",
            "name=stop",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    metrics = None
    while time.time() < deadline:
        found = list((tmp_path / "outputs/runs/stop").glob("*/metrics.jsonl"))
        if found and found[0].read_text().count("\n") >= 1:
            metrics = found[0]
            break
        time.sleep(0.1)
    assert metrics is not None, "no epoch finished in time"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted after epoch" in stderr
    summary = json.loads((metrics.parent / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert 1 <= summary["epochs_completed"] < 200
    assert summary["epochs_completed"] == len(metrics.read_text().splitlines())
    assert (metrics.parent / "checkpoint").is_dir() and summary["test"] is not None


def on_a_terminal(*args: str, cwd: Path) -> tuple[int, str]:
    """``deeprun ARGS`` with its stdout on a pseudo-terminal (what a user's shell gives it)."""
    import pty

    main, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    process = subprocess.Popen(
        [sys.executable, "-m", "deeprun.commands.run", *args], cwd=cwd, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    return process.wait(timeout=300), b"".join(chunks).decode(errors="replace")


def test_a_terminal_shows_progress_within_the_epoch_unless_turned_off(tmp_path):
    code, shown = on_a_terminal(*FAST, "trainer.epochs=2", "trainer.batch_size=4", "hydra.run.dir=tty", cwd=tmp_path)
    assert code == 0, shown
    assert "steps of this epoch" in shown and "epoch   2/2" in shown
    code, shown = on_a_terminal(
        *FAST, "trainer.epochs=1", "trainer.step_progress=false", "hydra.run.dir=off", cwd=tmp_path
    )
    assert code == 0, shown
    assert "steps of this epoch" not in shown and "epoch   1/1" in shown
