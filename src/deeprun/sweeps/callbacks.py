"""Hydra callbacks (registered under ``hydra.callbacks`` in ``conf/config.yaml``).

Kept light to import: Hydra instantiates them for every ``deeprun`` command, single runs included.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from deeprun.exit_codes import ExitCode

log = logging.getLogger(__name__)

#: A job's status (``deeprun.report.RunRecord.status``) that makes the sweep exit 1: it failed, or its
#: process died before writing ``summary.json``. A diverged job is a result, not a failure.
UNFINISHED = ("failed", "incomplete", "missing")


def unfinished_jobs(sweep_dir: Path) -> tuple[list[str], int]:
    """(``"job <job> <status>"`` for each run folder below ``sweep_dir`` whose status is in
    :data:`UNFINISHED`, the number of run folders)."""
    from deeprun.runs.records import collect_runs

    runs = collect_runs(sweep_dir)
    return [f"job {run.job} {run.status}" for run in runs if run.status in UNFINISHED], len(runs)


class SweepSummary(Callback):
    """At the end of a sweep (``deeprun -m``), write the sweep's summary table and comparison figures
    into the sweep folder (:func:`deeprun.report.write_sweep_summary`); then, if a job failed, print
    which and exit 1 (``ExitCode.FAILED_JOBS``).

    The report never fails the sweep (a failure to write it is logged as a warning). The launchers
    record a failed job in its folder and go on, so this runs after every job of the sweep and its
    summary lists them all, failed ones included (``status: failed``).
    """

    def __init__(self, figures: bool = True) -> None:
        self.figures = figures

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        selected = OmegaConf.select(config, "hydra.sweep.dir")
        if selected is None:
            log.warning("deeprun: no hydra.sweep.dir, so no sweep summary")
            return
        sweep_dir = Path(str(selected))
        if not unfinished_jobs(sweep_dir)[1]:
            # An override like `trainer.seed='range(0)'`: bad input, so nothing stays behind but the line.
            if sweep_dir.is_dir() and {p.name for p in sweep_dir.iterdir()} <= {"multirun.yaml"}:
                shutil.rmtree(sweep_dir)
            print(
                "deeprun: error: the sweep expands to zero jobs (an empty list or range in the overrides)",
                file=sys.stderr,
            )
            sys.exit(ExitCode.BAD_INPUT)
        try:
            from deeprun.reports.sweep import write_sweep_summary

            csv_path, md_path = write_sweep_summary(sweep_dir, figures=self.figures)
            print(f"sweep summary: {md_path} ({csv_path.name})", flush=True)
        except Exception as error:
            log.warning("deeprun: could not write the sweep summary: %s: %s", type(error).__name__, error)
        unfinished, jobs = unfinished_jobs(sweep_dir)
        if unfinished:
            print(
                f"deeprun: error: {len(unfinished)} of {jobs} jobs did not finish: {', '.join(unfinished)} "
                "(see sweep_summary.md; a failed job has its error in its summary.json)",
                file=sys.stderr,
            )
            # SystemExit passes through Hydra's callback runner (it catches Exception only).
            sys.exit(ExitCode.FAILED_JOBS)


class JobResources(Callback):
    """Each job's share of the machine under a launcher that runs ``n_jobs`` jobs side by side (joblib):
    set in the job's process when the job starts, before JAX starts its backend there.

    - ``PJRT_NPROC`` (XLA's CPU thread pool): :func:`deeprun.sweeps.resources.threads_per_job`
    - ``XLA_PYTHON_CLIENT_MEM_FRACTION``: :func:`deeprun.sweeps.resources.gpu_memory_fraction`

    Constructed (and ``n_jobs`` checked) in the launching process; Hydra hands it to every worker.
    """

    def __init__(self, n_jobs: int) -> None:
        from deeprun.runs.environment import usable_cpus
        from deeprun.sweeps.resources import parallel_jobs

        parallel_jobs(n_jobs, usable_cpus())  # ConfigError for n_jobs=0, before any job starts
        self.n_jobs = n_jobs

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from deeprun.sweeps.resources import gpu_memory_fraction, threads_per_job

        os.environ["PJRT_NPROC"] = str(threads_per_job(self.n_jobs))
        os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{gpu_memory_fraction(self.n_jobs):.2f}"


class RunFolderGuard(Callback):
    """A new run never writes into an existing run's folder: ``hydra.run.dir`` (or a sweep's
    ``hydra.sweep.dir``) that already holds a run is refused before Hydra writes anything into it.
    (``trainer.resume=<dir>`` is how a run's own folder is continued.)"""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_if_used(Path(str(config.hydra.run.dir)), ("summary.json", "metrics.jsonl"))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_if_used(Path(str(config.hydra.sweep.dir)), ("multirun.yaml",))


def _refuse_if_used(folder: Path, markers: tuple[str, ...]) -> None:
    used = [name for name in markers if (folder / name).exists()]
    if used:
        print(
            f"deeprun: error: {folder} already holds a run ({used[0]}); a new run never writes into "
            "another's folder (continue a run with trainer.resume=<dir>)",
            file=sys.stderr,
        )
        sys.exit(ExitCode.BAD_INPUT)
