"""Hydra callbacks (registered under ``hydra.callbacks`` in ``conf/config.yaml``).

Kept light to import: Hydra instantiates them for every ``deeprun`` command, single runs included.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from deeprun.exit_codes import ExitCode
from deeprun.loggers import finish_sweep
from deeprun.registry import ConfigError

log = logging.getLogger(__name__)

#: A job's status (``deeprun.report.RunRecord.status``) that makes the sweep exit 1: it failed, or its
#: process died before writing ``summary.json``. A diverged job is a result, not a failure.
UNFINISHED = ("failed", "interrupted", "incomplete", "missing")


def unfinished_jobs(sweep_dir: Path) -> tuple[list[str], int]:
    """(``"job <job> <status>"`` for each run folder below ``sweep_dir`` whose status is in
    :data:`UNFINISHED`, the number of run folders)."""
    from deeprun.runs.records import collect_runs

    runs = collect_runs(sweep_dir)
    return [f"job {run.job} {run.status}" for run in runs if run.status in UNFINISHED], len(runs)


class SweepSummary(Callback):
    """At the end of a sweep (``deeprun -m``), write the sweep's summary table and comparison figures
    into the sweep folder (:func:`deeprun.report.write_sweep_summary`); then, if a job failed, print
    which and exit 1 (``ExitCode.FAILED``).

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
            from deeprun.runs.ownership import release_all

            release_all(discard=True)
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
        finish_sweep(sweep_dir, "failed" if unfinished else "completed")
        if unfinished:
            print(
                f"deeprun: error: {len(unfinished)} of {jobs} jobs did not finish: {', '.join(unfinished)} "
                "(see sweep_summary.md; a failed job has its error in its summary.json)",
                file=sys.stderr,
            )
            # SystemExit passes through Hydra's callback runner (it catches Exception only).
            sys.exit(ExitCode.FAILED)


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
    """Each command owns its output folder before Hydra writes anything into it
    (:func:`deeprun.runs.ownership.claim`), and a new run never writes into another's folder.

    - ``deeprun``: ``hydra.run.dir`` must not be empty, nor be or lie inside a run or sweep folder.
      With ``trainer.resume=<dir>``, that folder is the run's: it is claimed, Hydra is pointed at it and
      writes nothing (no ``.hydra/`` rewritten, no new folder made).
    - ``deeprun -m``: ``hydra.sweep.dir`` must not be or lie inside a run folder; a sweep folder is
      continued when the command is the same (:func:`deeprun.sweeps.continuation.check_same_sweep`).
    - ``deeprun-tune``: ``tune.dir`` may be an existing study's folder (it is resumed), not a run's.

    Bad input ends the command here: one error line, exit 2, and what it made removed (Hydra turns an
    exception in a callback into a warning, so the callback exits itself).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with _exit_on_bad_input():
            self._start_run(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with _exit_on_bad_input():
            self._start_sweep(config)

    @staticmethod
    def _start_run(config: DictConfig) -> None:
        from deeprun.runs.ownership import claim

        check_name(config.get("name"))
        folder = _output_folder(config, "hydra.run.dir")
        resume = OmegaConf.select(config, "trainer.resume")
        if resume is not None and "tune" not in config:
            _redirect_to(config, claim_resumed(Path(str(resume))))
            return
        # Hydra's .hydra/ alone is not a run (a study folder of deeprun-tune holds one too).
        _refuse_inside_runs(folder, allowed=(".hydra",))
        claim(folder)
        _refuse_inside_runs(folder, allowed=(".hydra",))  # again, now that no other process can start in it

    @staticmethod
    def _start_sweep(config: DictConfig) -> None:
        from deeprun.runs.ownership import claim
        from deeprun.sweeps.continuation import check_same_sweep

        check_name(config.get("name"))
        folder = _output_folder(config, "hydra.sweep.dir")
        for parent in (folder, *folder.parents):
            if (parent / "summary.json").exists() or (parent / ".hydra").is_dir():
                raise ConfigError(
                    f"hydra.sweep.dir: {parent} is a run folder; a sweep never writes into a run's folder"
                )
        claim(folder)
        check_same_sweep(folder, list(config.hydra.overrides.task))


@contextlib.contextmanager
def _exit_on_bad_input() -> Iterator[None]:
    from deeprun.runs.ownership import release_all

    try:
        yield
    except (ConfigError, OSError) as error:
        program = os.path.basename(sys.argv[0]) if os.path.basename(sys.argv[0]).startswith("deeprun") else "deeprun"
        message = str(error) if isinstance(error, ConfigError) else f"cannot create the output folder: {error}"
        print(f"{program}: error: {message}", file=sys.stderr)
        release_all(discard=True)
        sys.exit(ExitCode.BAD_INPUT)


def check_name(name: Any) -> None:
    """``name`` becomes one folder name (``outputs/runs/<name>/``): no separators, not ``.`` or ``..``."""
    if name is None:  # a command without runs by name (deeprun-signal)
        return
    text = str(name)
    if not text or "/" in text or "\\" in text or "\0" in text or text in (".", ".."):
        raise ConfigError(f"name must be a folder name (no '/', not '.' or '..'; got {text!r})")


def claim_resumed(folder: Path) -> Path:
    """Own the folder of the run ``trainer.resume`` continues (and its sweep's folder, shared)."""
    from deeprun.runs.ownership import claim

    if not (folder / ".hydra" / "config.yaml").is_file():
        raise ConfigError(f"trainer.resume: {folder} is not a deeprun run folder (no .hydra/config.yaml)")
    if (folder.parent / "multirun.yaml").is_file():
        claim(folder.parent, shared=True)
    return claim(folder)


def _output_folder(config: DictConfig, key: str) -> Path:
    text = str(OmegaConf.select(config, key) or "").strip()
    if not text:
        raise ConfigError(f"{key} is empty (an unset shell variable?); give the output folder")
    return Path(text)


def _redirect_to(config: DictConfig, folder: Path) -> None:
    """Point Hydra's run at ``folder`` and keep it from writing there (``.hydra/`` stays the run's own)."""
    from omegaconf import open_dict, read_write

    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.run.dir = str(folder)
        config.hydra.output_subdir = None


def _refuse_inside_runs(folder: Path, allowed: tuple[str, ...] = ()) -> None:
    """ConfigError if ``folder`` holds a run or sweep, or lies inside one (``allowed``: markers that do
    not count in ``folder`` itself)."""
    from deeprun.runs.ownership import holds_run

    for candidate in (folder, *folder.parents):
        marker = holds_run(candidate)
        if marker is None or (candidate == folder and marker in allowed and not _has_run_files(folder)):
            continue
        where = "already holds" if candidate == folder else f"lies inside {candidate}, which holds"
        raise ConfigError(
            f"{folder} {where} a run or sweep ({marker}); a new run never writes into another's folder "
            "(continue a run with trainer.resume=<dir>, a sweep with the same command and hydra.sweep.dir=<dir>)"
        )


def _has_run_files(folder: Path) -> bool:
    return any((folder / name).exists() for name in ("summary.json", "metrics.jsonl", "multirun.yaml"))
