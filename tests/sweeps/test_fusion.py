"""Which sweep jobs fuse, and the fused launcher end to end."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from deeprun.commands.run import main as deeprun_main
from deeprun.runs.folder import read_metrics
from deeprun.sweeps.fusion import fusion_key, group_runs
from helpers.commands import invoke
from helpers.configs import compose_dict
from helpers.runs import without_times


def key(*overrides):
    return fusion_key(compose_dict(["data=synthetic", *overrides]))


def test_numbers_read_as_data_fuse():
    base = key()
    for override in (
        "trainer.seed=7",
        "optimizer.learning_rate=0.1",
        "optimizer.momentum=0.5",
        "schedule.max_lr=0.3",
        "initializer=glorot_uniform",
        "name=other",
        "trainer.early_stopping.patience=2",
    ):
        assert key(override) == base, override
    assert key("regularizer=dropout", "regularizer.dropout.rate=0.5") == key("regularizer=dropout")
    assert key("regularizer=l2", "regularizer.l2.factor=0.5") == key("regularizer=l2")


def test_structure_does_not_fuse():
    base = key()
    for override in (
        "model.hidden=[10]",
        "trainer.batch_size=64",
        "trainer.epochs=3",
        "activation=relu",
        "activation.alpha=0.5",
        "optimizer=nadam",
        "schedule=constant",
        "regularizer=dropout",
        "data.n_train=100",
        "normalization=batchnorm",
        "optimizer.clip_norm=1.0",
        "schedule.cycle_momentum=true",
    ):
        assert key(override) != base, override
    assert key("regularizer=dropout") != key("regularizer=dropout", "regularizer.dropout.placement=output")
    assert key("regularizer=max_norm") != key("regularizer=max_norm", "regularizer.max_norm.axis=1")


def test_groups_keep_order_and_size_limit():
    configs = [
        compose_dict(["data=synthetic", o])
        for o in ("trainer.seed=1", "activation=relu", "trainer.seed=2", "trainer.seed=3", "activation=relu")
    ]
    assert group_runs(configs, max_members=32) == [[0, 2, 3], [1, 4]]
    assert group_runs(configs, max_members=2) == [[0, 2], [1, 4], [3]]
    assert group_runs(configs, max_members=1) == [[0], [1], [2], [3], [4]]


@pytest.mark.slow  # the scheduling test compares fused and lone jobs bitwise
def test_fused_launcher_writes_each_job_folder_with_the_numbers_of_a_lone_run(tmp_path):
    common = ["data=synthetic", "model.hidden=[16]", "trainer.epochs=2", "optimizer=sgd", "name=sweep"]

    def run(*args, cwd):
        cwd.mkdir()
        flags = [a for a in args if a.startswith("-")]
        overrides = [a for a in args if not a.startswith("-")]
        result = invoke(deeprun_main, *flags, *common, *overrides, cwd=cwd)
        assert result.returncode == 0, result.stderr
        return result

    fused = run(
        "-m",
        "hydra.launcher.max_members=8",
        "trainer.seed=1,2",
        "optimizer.learning_rate=0.01,0.1",
        cwd=tmp_path / "fused",
    )
    assert "4 fused runs" in fused.stdout
    jobs = sorted((tmp_path / "fused/outputs/sweeps/sweep").glob("*/[0-9]*"))
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    alone = run("trainer.seed=2", "optimizer.learning_rate=0.1", cwd=tmp_path / "alone")
    assert "fused runs" not in alone.stdout
    alone_dir = next((tmp_path / "alone/outputs/runs/sweep").iterdir())
    overrides = (jobs[3] / ".hydra/overrides.yaml").read_text()
    assert "trainer.seed=2" in overrides and "optimizer.learning_rate=0.1" in overrides
    for name in ("metrics.jsonl", "metrics.csv", "summary.json", "learning_curves.png", "checkpoint"):
        assert (jobs[3] / name).exists(), name
    lines = [json.loads(line) for line in (jobs[3] / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (alone_dir / "metrics.jsonl").read_text().splitlines()]
    assert without_times(lines) == without_times(expected)  # bitwise: see the test below


#: Dropout, batch norm and Nadam over several epochs: where float rounding differences grow.
SCHEDULING = (
    "data=synthetic",
    "data.n_train=400",
    "model.hidden=[16,8]",
    "regularizer=dropout",
    "normalization=batchnorm",
    "optimizer=nadam",
    "trainer.epochs=3",
    "trainer.plots=false",
    "trainer.checkpoint=false",
)


def _job_record(folder: Path) -> tuple[list, dict]:
    return without_times(read_metrics(folder / "metrics.jsonl")), json.loads((folder / "summary.json").read_text())[
        "test"
    ]


SCHEDULINGS = [
    pytest.param("43", "hydra.launcher.workers=1", id="fused-with-1-in-the-sweeps-process"),
    # Slow: a job fused in a worker process is compared with the job alone by default in test_launchers.py.
    pytest.param("43,44,45", "hydra.launcher.workers=2", id="4-jobs-in-2-workers", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("others", "launcher"), SCHEDULINGS)
def test_a_jobs_numbers_do_not_depend_on_what_it_is_fused_with(others, launcher, tmp_path):
    """The same job (seed 42) alone, then fused with 1 other in the sweep's process, or in a 4-job sweep
    that two worker processes share (2 fused jobs each): metrics.jsonl and the test metrics bitwise equal
    (with ``hydra.launcher.batched=true``, vmap, they agree to float tolerance only: the next test)."""
    alone = invoke(deeprun_main, *SCHEDULING, f"hydra.run.dir={tmp_path / 'alone'}", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    sweep = tmp_path / "sweep"
    args = ("-m", *SCHEDULING, launcher, f"trainer.seed=42,{others}", f"hydra.sweep.dir={sweep}")
    fused = invoke(deeprun_main, *args, cwd=tmp_path)
    assert fused.returncode == 0 and "fused runs" in fused.stdout, fused.stderr
    assert _job_record(sweep / "0") == _job_record(tmp_path / "alone")
    assert "[default #0] epoch   3/3" in fused.stdout  # every job's lines labelled


@pytest.mark.slow
def test_a_batched_job_agrees_with_the_job_alone_to_float_tolerance(tmp_path):
    alone = invoke(deeprun_main, *SCHEDULING, f"hydra.run.dir={tmp_path / 'alone'}", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    expected = _job_record(tmp_path / "alone")
    batched = tmp_path / "batched"
    args = ("-m", *SCHEDULING, "hydra.launcher.batched=true", "hydra.launcher.workers=1", "trainer.seed=42,43")
    args = (*args, f"hydra.sweep.dir={batched}")
    assert invoke(deeprun_main, *args, cwd=tmp_path).returncode == 0
    history, _ = _job_record(batched / "0")
    assert history[-1]["val/loss"] == pytest.approx(expected[0][-1]["val/loss"], rel=1e-3)


def test_default_launcher_fuses_and_max_members_1_does_not(tmp_path):
    for max_members, fused in ((None, True), (1, False)):
        cwd = tmp_path / str(max_members)
        cwd.mkdir()
        extra = ["hydra.launcher.workers=1"] + (
            [] if max_members is None else [f"hydra.launcher.max_members={max_members}"]
        )
        result = invoke(
            deeprun_main,
            "-m",
            "data=synthetic",
            "model.hidden=[16]",
            "trainer.epochs=1",
            "trainer.seed=1,2",
            "trainer.checkpoint=false",
            *extra,
            cwd=cwd,
        )
        assert result.returncode == 0, result.stderr
        assert "Launching 2 jobs locally" in result.stdout
        assert ("2 fused runs" in result.stdout) == fused
        assert len(list((cwd / "outputs/sweeps").rglob("summary.json"))) == 2


def test_a_bad_job_is_recorded_as_failed_and_the_others_still_run(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deeprun.commands.run",
            "-m",
            "data=synthetic",
            "model.hidden=[16]",
            "trainer.epochs=1",
            "trainer.checkpoint=false",
            "optimizer.learning_rate=0.01,-1,0.1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1  # the sweep reports the failure at its end, after its summary
    assert "job 1: optimizer.learning_rate must be > 0 (got -1.0)" in result.stderr
    assert "1 of 3 jobs did not finish: job 1 failed" in result.stderr
    summaries = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "outputs/sweeps").rglob("summary.json")}
    assert summaries["0"]["status"] == summaries["2"]["status"] == "completed"
    assert summaries["1"]["status"] == "failed"
    assert summaries["1"]["error"] == "ConfigError: optimizer.learning_rate must be > 0 (got -1.0)"
    [table] = (tmp_path / "outputs/sweeps").rglob("sweep_summary.csv")
    with open(table) as f:
        assert [row["status"] for row in csv.DictReader(f)] == ["completed", "failed", "completed"]


def test_a_sweep_whose_every_job_is_bad_is_refused_and_the_corrected_command_uses_its_folder(tmp_path):
    """A typo every job shares: one error line, exit 2, nothing left (no multirun.yaml, no job folder),
    so the same command with the value corrected runs in the same folder."""
    sweep = tmp_path / "sweep"
    args = ("-m", "data=synthetic", "model.hidden=[8]", "trainer.plots=false", f"hydra.sweep.dir={sweep}")
    bad = invoke(deeprun_main, *args, "trainer.epochs=0", "trainer.seed=1,2", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == ["deeprun: error: every job of the sweep: trainer.epochs must be > 0 (got 0)"]
    assert not sweep.exists()
    good = invoke(deeprun_main, *args, "trainer.epochs=1", "trainer.seed=1,2", cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert sorted(p.parent.name for p in sweep.glob("*/summary.json")) == ["0", "1"]
