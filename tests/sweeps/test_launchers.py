"""Sweeps past one process: the joblib and submitit launcher presets (conf/hydra/launcher/), each job's
CPU threads and GPU memory (conf/hydra/job_env/, deeprun.sweeps.resources), and failed jobs under them."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.types import HydraContext
from hydra.utils import instantiate
from omegaconf import OmegaConf

from deeprun.commands.common import quiet_launcher_schema_warning
from deeprun.commands.run import main as deeprun_main
from deeprun.registry import ConfigError
from deeprun.settings import CONFIG_DIR
from deeprun.sweeps.callbacks import SweepSummary
from deeprun.sweeps.resources import (
    gpu_memory_fraction,
    parallel_jobs,
    split_for_workers,
    threads_per_job,
    usable_cpus,
    worker_count,
)
from helpers.commands import invoke
from helpers.configs import FAST
from helpers.runs import without_times


@pytest.fixture(autouse=True)
def _quiet_schema_warning():
    quiet_launcher_schema_warning()  # as the commands do: pytest resets the warning filters per test


# Job 1 is invalid (exit 2 alone), job 2 diverges (NaN in its first epoch).
BAD_AND_DIVERGED = ["optimizer=sgd", "schedule=constant", "activation=relu", "optimizer.learning_rate=0.01,-1,1e30"]


def sweep(*args: str, cwd: Path, script: str | None = None) -> tuple[subprocess.CompletedProcess, int, Path]:
    """Run ``deeprun -m`` (or a Python script that ends in deeprun's main); returns the process, its pid
    and the sweep folder."""
    args = (*args, "++hydra.callbacks.sweep_summary.figures=false")  # the tests read the table only
    command = (
        [sys.executable, "-c", script, "-m", *args]
        if script
        else [sys.executable, "-m", "deeprun.commands.run", "-m", *args]
    )
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = process.communicate(timeout=300)
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    sweeps = list((cwd / "outputs" / "sweeps").glob("*/*"))
    assert len(sweeps) == 1, (sweeps, stderr)
    return result, process.pid, sweeps[0]


def summaries(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")}


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "sweep_summary.csv") as f:
        return list(csv.DictReader(f))


def test_joblib_runs_jobs_in_worker_processes_with_their_share_and_records_failed_and_diverged_ones(tmp_path):
    result, main_pid, sweep_dir = sweep(
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *FAST, *BAD_AND_DIVERGED, cwd=tmp_path
    )
    assert result.returncode == 1  # after every job ran and the summary was written
    assert "deeprun: error: job 1: optimizer.learning_rate must be > 0 (got -1.0)" in result.stderr
    assert "1 of 3 jobs did not finish: job 1 failed" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr
    jobs = summaries(sweep_dir)
    assert [jobs[job]["status"] for job in ("0", "1", "2")] == ["completed", "failed", "diverged"]
    assert jobs["1"]["error"] == "ConfigError: optimizer.learning_rate must be > 0 (got -1.0)"
    assert jobs["2"]["diverged_epoch"] == 1
    assert [row["status"] for row in summary_rows(sweep_dir)] == ["completed", "failed", "diverged"]
    # The jobs' lines interleave, each labelled by its job.
    lines = [line for line in result.stdout.splitlines() if re.search(r"epoch +\d+/|run folder:|compiled the", line)]
    assert lines and all(re.match(r"\[default #[02]\] ", line) for line in lines), lines
    assert {line[:12] for line in lines} == {"[default #0]", "[default #2]"}
    # Two worker processes ran the three jobs, each job with its share of the CPUs and of the GPU.
    pids = {job["process"]["pid"] for job in jobs.values()}
    assert len(pids) == 2 and main_pid not in pids
    for job in jobs.values():
        assert job["process"]["env"]["PJRT_NPROC"] == str(max(1, usable_cpus() // 2))
        assert job["process"]["env"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
        assert job["process"]["env"]["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.45"


@pytest.mark.slow  # a third-party launcher's preset; joblib's is tested by default
def test_submitit_local_runs_jobs_as_processes_and_records_a_failed_one(tmp_path):
    result, main_pid, sweep_dir = sweep(
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "hydra.launcher.cpus_per_task=1",
        *FAST,
        "optimizer.learning_rate=0.01,-1",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert "1 of 2 jobs did not finish: job 1 failed" in result.stderr
    jobs = summaries(sweep_dir)
    assert jobs["0"]["status"] == "completed" and jobs["1"]["status"] == "failed"
    assert jobs["1"]["error"] == "ConfigError: optimizer.learning_rate must be > 0 (got -1.0)"
    pids = {job["process"]["pid"] for job in jobs.values()}
    assert len(pids) == 2 and main_pid not in pids
    for job in jobs.values():
        assert job["process"]["env"]["PJRT_NPROC"] == "1"
        assert job["process"]["env"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert [row["status"] for row in summary_rows(sweep_dir)] == ["completed", "failed"]
    assert (sweep_dir / ".submitit").is_dir()  # the jobs' logs


# Hydra's basic launcher, in this process: the second job's training raises an error that is no
# ConfigError (a bug, a device failure); its traceback is printed, its folder records it, the sweep goes on.
RAISES_IN_JOB_1 = """
import sys
import deeprun.commands.run
import deeprun.training.loop

fit_many = deeprun.training.loop.fit_many

def failing_fit_many(settings, *args, **kwargs):
    if settings[0].trainer.seed == 2:
        raise RuntimeError("device lost")
    return fit_many(settings, *args, **kwargs)

deeprun.training.loop.fit_many = failing_fit_many
sys.argv[0] = "deeprun"
deeprun.commands.run.main()
"""


def test_an_exception_in_one_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    result, _, sweep_dir = sweep(
        "hydra/launcher=basic", *FAST, "trainer.seed=1,2,3", cwd=tmp_path, script=RAISES_IN_JOB_1
    )
    assert result.returncode == 1
    assert "RuntimeError: device lost" in result.stderr and "Traceback" in result.stderr
    jobs = summaries(sweep_dir)
    assert [jobs[job]["status"] for job in ("0", "1", "2")] == ["completed", "failed", "completed"]
    assert jobs["1"]["error"] == "RuntimeError: device lost"
    assert [row["status"] for row in summary_rows(sweep_dir)] == ["completed", "failed", "completed"]


class Submitted(Exception):
    """Raised instead of calling sbatch; carries the batch script."""


def test_submitit_slurm_preset_submits_a_job_array_with_partition_gpus_and_time_limit(tmp_path, monkeypatch):
    """The preset as the plugin turns it into an sbatch script (no cluster needed: sbatch is intercepted)."""
    import submitit.slurm.slurm as slurm

    def intercept(executor, command):
        raise Submitted(executor._make_submission_file_text(command, "uid"))

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # as if srun were there
    monkeypatch.setattr(slurm.SlurmExecutor, "_submit_command", intercept)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "hydra/launcher=submitit_slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.gpus_per_node=2",
                "hydra.launcher.timeout_min=90",
                f"hydra.sweep.dir={tmp_path}",
            ],
            return_hydra_config=True,
        )
    assert OmegaConf.to_container(cfg.hydra.job.env_set, resolve=True) == {"PJRT_NPROC": "8"}
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=HydraContext(config_loader=None, callbacks=None), task_function=print, config=cfg)
    with pytest.raises(Submitted) as submitted:
        launcher.launch([["trainer.seed=1"], ["trainer.seed=2"]], initial_job_idx=0)
    script = str(submitted.value).splitlines()
    for line in (
        "#SBATCH --array=0-1%2",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --time=90",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
    ):
        assert line in script, line


@pytest.mark.parametrize(
    "launcher,variables",
    [
        ("joblib", {"XLA_PYTHON_CLIENT_PREALLOCATE"}),  # + PJRT_NPROC and the memory share: its job_resources callback
        ("submitit_local", {"PJRT_NPROC", "XLA_PYTHON_CLIENT_PREALLOCATE"}),
        ("submitit_slurm", {"PJRT_NPROC"}),
        ("fused", set()),  # one process: the user's environment as it is
    ],
)
def test_only_the_multiprocess_launchers_set_the_jobs_environment(launcher, variables):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_launcher_schema_warning()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert set(cfg.hydra.job.env_set) == variables
    assert ("job_resources" in cfg.hydra.callbacks) == (launcher == "joblib")
    assert not [w for w in caught if "schema" in str(w.message)]  # Hydra's deprecation note is silenced


@pytest.mark.parametrize(
    "n_jobs,cpus,jobs,threads,fraction",
    [
        (2, 2, 2, 1, 0.45),
        (1, 16, 1, 16, 0.75),  # one job: JAX's own default share
        (3, 16, 3, 5, 0.3),
        (-1, 16, 16, 1, 0.05),  # joblib: one job per CPU
        (-2, 16, 15, 1, 0.06),  # all CPUs but one
        (-40, 16, 1, 16, 0.75),
        (8, 2, 8, 1, 0.11),  # more jobs than CPUs: still one thread each
    ],
)
def test_threads_and_gpu_share_per_job(n_jobs, cpus, jobs, threads, fraction):
    assert parallel_jobs(n_jobs, cpus) == jobs
    assert threads_per_job(n_jobs, cpus) == threads
    assert gpu_memory_fraction(n_jobs, cpus) == fraction


@pytest.mark.parametrize(
    "workers,tasks,cpus,threads,expected",
    [
        ("auto", 5, 2, 1, 2),
        ("auto", 1, 16, 1, 1),
        ("auto", 40, 16, 1, 16),
        ("auto", 40, 16, 4, 4),  # PJRT_NPROC=4: a run's threads, so 16 // 4 workers
        ("auto", 40, 2, 4, 1),
        (3, 5, 2, 1, 3),
        (4, 2, 16, 1, 2),
        (1, 9, 16, 1, 1),
    ],
)
def test_worker_count_is_cpus_over_a_runs_threads_or_as_set_never_more_than_the_programs(
    workers, tasks, cpus, threads, expected
):
    assert worker_count(workers, tasks, cpus, threads) == expected


@pytest.mark.parametrize("steps,expected", [(0, 1), (4999, 1), (10_000, 2), (41_256, 8), (10**6, 16)])
def test_auto_starts_no_more_workers_than_the_sweeps_steps_keep_busy(steps, expected):
    assert worker_count("auto", 40, 16, 1, steps) == expected
    assert worker_count(3, 40, 16, 1, steps) == 3  # a number given is that number


@pytest.mark.parametrize("workers", [0, -1, "many", True])
def test_a_bad_worker_count_is_a_config_error(workers):
    with pytest.raises(ConfigError, match="hydra.launcher.workers must be"):
        worker_count(workers, 4, 2, 1)


def test_fused_groups_are_cut_into_even_shares_for_the_workers():
    assert split_for_workers([[0, 1, 2, 3, 4, 5, 6, 7]], 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert split_for_workers([[0, 2, 4, 5, 6, 7, 8, 9], [1], [3]], 2) == [[0, 2, 4, 5, 6], [7, 8, 9], [1], [3]]
    assert split_for_workers([[0, 1], [2, 3]], 1) == [[0, 1], [2, 3]]


def test_the_fused_launcher_trains_programs_side_by_side_in_worker_processes(tmp_path):
    """Two optimizers (programs that cannot fuse) x two seeds (fused): two worker processes, neither of
    them the sweep's, each line they print labelled by job."""
    result, pid, sweep_dir = sweep(
        *FAST, "optimizer=sgd,adam", "trainer.seed=1,2", "hydra.launcher.workers=2", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "Training 2 programs in 2 worker processes" in result.stdout + result.stderr
    jobs = summaries(sweep_dir)
    assert [jobs[job]["status"] for job in ("0", "1", "2", "3")] == ["completed"] * 4
    pids = {job: summary["process"]["pid"] for job, summary in jobs.items()}
    assert pids["0"] == pids["1"] != pids["2"] == pids["3"] and pid not in pids.values()  # (sgd, adam) x (1, 2)
    epoch_lines = [line for line in result.stdout.splitlines() if "epoch " in line and "/" in line]
    assert epoch_lines and all(line.startswith("[default #") for line in epoch_lines)
    # Job 1 (sgd, seed 2), fused with job 0 in a worker, has the numbers it gets alone, bit for bit.
    alone = invoke(deeprun_main, *FAST, "optimizer=sgd", "trainer.seed=2", "hydra.run.dir=alone", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    assert epochs_of(sweep_dir / "1") == epochs_of(tmp_path / "alone")


def epochs_of(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return without_times([json.loads(line) for line in lines])


def test_zero_jobs_is_a_config_error():
    with pytest.raises(ConfigError, match="hydra.launcher.n_jobs must be"):
        threads_per_job(0, 4)


def write_job(folder: Path, status: str | None) -> None:
    """A job folder as a launcher leaves it: .hydra/, and summary.json unless the job's process died."""
    (folder / ".hydra").mkdir(parents=True)
    if status is not None:
        (folder / "summary.json").write_text(json.dumps({"status": status}))


def test_a_sweep_with_a_failed_or_dead_job_exits_1_after_its_summary(tmp_path, capsys):
    for job, status in enumerate(["completed", "diverged", "failed", None]):
        write_job(tmp_path / str(job), status)
    with pytest.raises(SystemExit) as exit_:
        SweepSummary(figures=False).on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert exit_.value.code == 1
    assert [row["status"] for row in summary_rows(tmp_path)] == ["completed", "diverged", "failed", "missing"]
    assert "deeprun: error: 2 of 4 jobs did not finish: job 2 failed, job 3 missing" in capsys.readouterr().err


def test_a_diverged_job_does_not_fail_the_sweep(tmp_path):
    for job, status in enumerate(["completed", "diverged"]):
        write_job(tmp_path / str(job), status)
    SweepSummary(figures=False).on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert [row["status"] for row in summary_rows(tmp_path)] == ["completed", "diverged"]
