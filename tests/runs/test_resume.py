"""Resume: a run continued from an epoch checkpoint is the same, bit for bit, as one never stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

from deeprun.commands.run import main as deeprun_main
from deeprun.runs.checkpoints import EpochCheckpoints
from deeprun.runs.folder import read_metrics
from deeprun.runs.loading import load_run
from deeprun.training.loop import fit
from deeprun.training.state import ResumePoint
from deeprun.training.trainer import Trainer
from helpers.commands import invoke
from helpers.runs import assert_same_leaves, without_times


def _host(point: ResumePoint) -> ResumePoint:
    return ResumePoint(jax.device_get(point.state), jax.device_get(point.best_weights), point.progress)


@pytest.mark.parametrize(
    "overrides",
    [
        # the schedule's position (1cycle: lr and momentum per step) must survive the restart
        ("optimizer=momentum", "schedule=1cycle", "regularizer=dropout"),
        # the plateau rule's counters and early stopping's best weights live on the host
        (
            "optimizer=nadam",
            "schedule=performance",
            "schedule.patience=1",
            "normalization=batchnorm",
            "trainer.early_stopping.patience=2",
            "trainer.early_stopping.monitor=val/accuracy",
        ),
        # float16's loss scale is part of the state (it doubles every 7 steps here); diagnostics are in the history
        ("trainer.precision=float16", "trainer.loss_scale.growth_steps=7", "trainer.diagnostics=true"),
    ],
)
def test_resumed_fit_equals_uninterrupted(make_settings, overrides):
    settings = make_settings(*overrides, "trainer.epochs=5")
    dataset = settings.data.load()
    points: list[ResumePoint] = []
    full = fit(settings, dataset, saver=lambda point: points.append(_host(point)))
    assert [len(p.progress["history"]) for p in points] == list(range(1, len(full.history) + 1))[: len(points)]

    resumed = fit(settings, dataset, resume_from=points[1])
    assert without_times(resumed.history) == without_times(full.history)
    assert resumed.status == full.status and resumed.best_epoch == full.best_epoch
    assert resumed.resumed_at == (2,)
    assert_same_leaves(resumed.state, full.state)
    assert resumed.test == full.test


def test_epoch_checkpoint_keeps_the_loss_scale(make_settings, tmp_path):
    """orbax round trip of a float16 run's resume point: the loss scale and its step count come back."""
    settings = make_settings("trainer.precision=float16", "trainer.loss_scale.growth_steps=5")
    checkpoints = EpochCheckpoints(tmp_path / "resume")
    result = fit(settings, settings.data.load(), saver=checkpoints.save)
    checkpoints.close()
    dataset = settings.data.load()
    like, _ = Trainer(settings, len(dataset.y_train), dataset.n_features, dataset.n_classes).init(settings)
    restored = checkpoints.load(like).state
    assert (float(restored.loss_scale.scale), int(restored.loss_scale.good_steps)) == (2.0**15 * 8, 1)
    assert_same_leaves(restored, result.state)


def _checkpointed_epoch(run_dir: Path) -> int:
    """The latest epoch whose checkpoint orbax has finalised (renamed from its temporary name)."""
    resume = run_dir / "resume"
    return max((int(p.name) for p in resume.iterdir() if p.name.isdigit()), default=0) if resume.is_dir() else 0


SLOW_EPOCHS = (
    "data=synthetic",
    "data.n_train=12000",
    "model.hidden=[256,256]",
    "trainer.epochs=4",
    "schedule=1cycle",
    "regularizer=dropout",
    "trainer.plots=false",
)


@pytest.mark.slow  # test_faults kills at every point by default
def test_sigkill_after_epoch_2_then_resume_equals_uninterrupted(tmp_path):
    """SIGKILL once epoch 2 is on disk, ``trainer.resume=<dir>``: metrics.jsonl and the final
    parameters equal an uninterrupted run's (bitwise, CPU)."""
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "deeprun.commands.run", *SLOW_EPOCHS, f"hydra.run.dir={killed}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:
        metrics = killed / "metrics.jsonl"
        if metrics.exists() and _checkpointed_epoch(killed) >= 2:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "summary.json").exists()

    resumed = invoke(deeprun_main, f"trainer.resume={killed}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "reference"
    assert invoke(deeprun_main, *SLOW_EPOCHS, f"hydra.run.dir={reference}", cwd=tmp_path).returncode == 0

    assert not list(tmp_path.glob("outputs/runs/*/*")), "resuming must not leave a new run folder"
    assert without_times(read_metrics(killed / "metrics.jsonl")) == without_times(
        read_metrics(reference / "metrics.jsonl")
    )
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_at"] in ([2], [3])
    assert summary["test"] == json.loads((reference / "summary.json").read_text())["test"]
    assert_same_leaves(load_run(killed).state, load_run(reference).state)
    assert not (killed / "resume").exists(), "a finished run drops its per-epoch checkpoint"


@pytest.mark.slow  # test_faults covers SIGTERM then resume
def test_interrupted_run_keeps_its_epoch_checkpoint_and_resumes(tmp_path):
    """Ctrl-C: status interrupted, resume/ kept; resuming finishes the run in the same folder."""
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "deeprun.commands.run", *SLOW_EPOCHS, "trainer.epochs=6", f"hydra.run.dir={run}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline and not ((run / "metrics.jsonl").exists() and read_metrics(run / "metrics.jsonl")):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    stopped_after = json.loads((run / "summary.json").read_text())["epochs_completed"]
    assert _checkpointed_epoch(run) == stopped_after

    refused = invoke(deeprun_main, f"trainer.resume={run}", "optimizer=adam", cwd=tmp_path)
    assert refused.returncode == 2
    assert "trainer.resume: optimizer=adam disagrees with the saved config" in refused.stderr
    finished = invoke(deeprun_main, f"trainer.resume={run}", "trainer.epochs=6", cwd=tmp_path)  # the run's own override
    assert finished.returncode == 0, finished.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] in ("completed", "stopped_early")
    assert summary["resumed_at"] == [stopped_after]
    assert [r["epoch"] for r in read_metrics(run / "metrics.jsonl")] == list(range(1, summary["epochs_completed"] + 1))


def test_a_diverging_run_exits_3_and_records_the_epoch(tmp_path):
    run = tmp_path / "run"
    result = invoke(
        deeprun_main,
        "data=synthetic",
        "trainer.epochs=3",
        "optimizer=sgd",
        "optimizer.learning_rate=1e30",
        "schedule=constant",
        "activation=relu",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert result.returncode == 3, result.stderr
    assert "deeprun: run diverged at epoch 1" in result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_epoch"] == 1
    assert not (run / "resume").exists(), "a diverged run cannot be resumed: its epoch checkpoint goes"
    refused = invoke(deeprun_main, f"trainer.resume={run}", cwd=tmp_path)
    assert refused.returncode == 2 and "has finished (status: diverged)" in refused.stderr
