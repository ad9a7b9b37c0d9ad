"""``hydra/launcher=fused``: run a sweep's jobs in this process, training runs that differ only in
numbers (seeds, learning rates, penalty factors, ...) together as one vmapped program.

Every job still gets its own folder (``.hydra/``, metrics, summary, checkpoint, plots), made by Hydra's
``run_job`` exactly as the basic launcher makes it. Jobs are validated first (a bad job fails alone),
then grouped by :func:`deeprun.sweeps.fusion.group_runs` and trained group by group: in this process, or
with ``workers`` > 1 side by side in worker processes (:mod:`deeprun.commands.worker`), the groups cut so that the
workers share the sweep evenly (:func:`deeprun.sweeps.resources.split_for_workers`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from deeprun.registry import ConfigError
from deeprun.sweeps.continuation import resume_parts
from deeprun.sweeps.resources import gpu_memory_fraction, split_for_workers, worker_count

log = logging.getLogger(__name__)


class FusedLauncher(Launcher):
    """Configured by ``conf/hydra/launcher/fused.yaml``; ``max_members: 1`` trains every job alone;
    ``batched: true`` trains a group's members under ``jax.vmap`` (faster; numbers to float tolerance);
    ``workers``: processes training programs side by side (``auto``: one per ``PJRT_NPROC`` CPUs)."""

    def __init__(self, max_members: int = 32, batched: bool = False, workers: int | str = "auto") -> None:
        self.max_members, self.batched, self.workers = max_members, batched, workers
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from deeprun.commands.run import PreparedRun

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        worker_count(self.workers, len(job_overrides))  # a bad setting: one line before any job starts
        worker_env = dict(os.environ)
        # This process only validates and reads; on a GPU it must leave the memory to the workers.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

        max_members = self.max_members
        log.info(
            f"Launching {len(job_overrides)} jobs locally"
            + (
                f", fusing runs that differ only in numbers ({max_members} per program at most"
                + (", batched" if self.batched else "")
                + ")"
                if max_members > 1
                else ""
            )
        )
        returns: list[JobReturn] = []
        for offset, overrides in enumerate(job_overrides):
            index = initial_job_idx + offset
            log.info(f"\t#{index} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = index
                sweep_config.hydra.job.num = index
            # Makes the job's folder and .hydra/ files and validates it (a finished job of a continued
            # sweep returns its summary); training comes below.
            returns.append(
                run_job(
                    hydra_context=self.hydra_context,
                    task_function=_prepare_job,
                    config=sweep_config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            )
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)

        _reject_if_every_job_is_bad(returns)
        for ret in returns:
            error = _job_error(ret)
            if error is not None:  # invalid job: recorded in its folder, the others still run
                _record_failure(ret, Path(ret.hydra_cfg.hydra.runtime.output_dir), str(ret.cfg.get("name", "")), error)
        pending = [ret for ret in returns if isinstance(ret.return_value, PreparedRun)]
        datasets = _datasets([ret.return_value for ret in pending])
        ready = [ret for ret in pending if _resume_point_readable(ret, datasets)]
        steps = sum(_training_steps(ret.return_value, datasets) for ret in ready)
        parts = self._parts(ready, steps)
        workers = worker_count(self.workers, len(parts), steps=steps)
        if workers > 1:
            self._train_in_workers(parts, workers, worker_env)
            return returns
        for members in parts:
            self._train(members, datasets[_data_key(members[0].return_value)])
            if any(_interrupted(m) for m in members):
                _exit_stopped(Path(str(self.config.hydra.sweep.dir)))
        return returns

    def _parts(self, ready: list[JobReturn], steps: int) -> list[list[JobReturn]]:
        """The programs to train: fused groups, cut where their members resume at different epochs
        and, for worker processes (as many as ``steps``, the sweep's workload, keep busy), into even
        shares; the longest first (workers finish together)."""
        from deeprun.sweeps.fusion import group_runs

        groups = group_runs([ret.return_value.config for ret in ready], self.max_members)
        workers = worker_count(self.workers, sum(len(group) for group in groups), steps=steps)
        parts = []
        for group in split_for_workers(groups, workers):
            available = [ready[i].return_value.resume_epochs or [0] for i in group]
            for part, epoch in resume_parts(available):
                for i in part:
                    ready[group[i]].return_value.resume_epoch = epoch
                parts.append([ready[group[i]] for i in part])
        if workers == 1:
            return parts
        return sorted(parts, key=lambda part: -len(part) * part[0].return_value.settings.trainer.epochs)

    def _train_in_workers(self, parts: list[list[JobReturn]], workers: int, env: dict[str, str]) -> None:
        """Train the parts in ``workers`` processes; a part whose worker failed is recorded as failed."""
        from deeprun.commands.worker import INTERRUPTED, NOT_STARTED, WorkerPool, worker_environment

        pool_env = worker_environment(env, gpu_memory_fraction(workers))
        log.info(f"Training {len(parts)} programs in {workers} worker processes")
        pool = WorkerPool(workers, pool_env, self.batched)
        labels = [",".join(f"#{m.hydra_cfg.hydra.job.num}" for m in part) for part in parts]
        for index, outcome in pool.run([[m.return_value for m in part] for part in parts], labels):
            for ret in parts[index]:
                if outcome in (NOT_STARTED, INTERRUPTED):
                    ret.return_value = {"status": "interrupted"}
                elif isinstance(outcome, Exception):
                    run = ret.return_value
                    _record_failure(ret, run.run_dir, run.settings.name, outcome)
            if isinstance(outcome, list):
                for ret, summary in zip(parts[index], outcome, strict=True):
                    ret.return_value = summary
        if pool.signal is not None or any(_interrupted(m) for part in parts for m in part):
            _exit_stopped(Path(str(self.config.hydra.sweep.dir)))

    def _train(self, group: list[JobReturn], dataset: Any) -> None:
        """Train one group; each job's return value becomes its summary (a failed one's, if it fails)."""
        from deeprun.commands.run import train_and_record

        runs = [ret.return_value for ret in group]
        try:
            summaries: list[Any] = train_and_record(runs, dataset, batched=self.batched)
        except Exception as error:  # one group's failure does not stop the others
            log.exception("deeprun: %s failed", ", ".join(run.label for run in runs))
            for ret, run in zip(group, runs, strict=True):
                _record_failure(ret, run.run_dir, run.settings.name, error)
            return
        for ret, summary in zip(group, summaries, strict=True):
            ret.return_value = summary


def _job_error(ret: JobReturn) -> BaseException | None:
    """The error a job's validation raised, or None. Read from the field: Hydra's ``return_value``
    property would log a line of its own before raising it."""
    return ret._return_value if ret.status == JobStatus.FAILED else None


def _reject_if_every_job_is_bad(returns: Sequence[JobReturn]) -> None:
    """Bad input in every job (a typo shared by the whole sweep): the sweep is refused as a single run
    is, with one ``deeprun: error:`` line and exit 2, and what it made removed (the jobs' ``.hydra/``
    folders, then the sweep folder), so the corrected command can use the same folder. A sweep with
    some valid jobs records the bad ones as failed and trains the others."""
    import shutil

    from deeprun.commands.common import fail
    from deeprun.runs.ownership import SCAFFOLDING

    errors = [_job_error(ret) for ret in returns]
    if not errors or not all(isinstance(error, ConfigError) for error in errors):
        return
    for ret in returns:
        job_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir)
        if job_dir.is_dir() and {p.name for p in job_dir.iterdir()} <= SCAFFOLDING:
            shutil.rmtree(job_dir)
    where = "every job" if len(returns) > 1 else "the job"
    fail(f"{where} of the sweep: {errors[0]}")


def _training_steps(run: Any, datasets: dict[str, Any]) -> int:
    """A job's optimizer steps (0 when its data cannot be loaded): the workload that sizes the workers."""
    from deeprun.training.trainer import steps_per_epoch

    dataset, trainer = datasets[_data_key(run)], run.settings.trainer
    if isinstance(dataset, _Unloadable):
        return 0
    return trainer.epochs * steps_per_epoch(len(dataset.y_train), trainer.batch_size, trainer.drop_remainder)


def _interrupted(ret: JobReturn) -> bool:
    return isinstance(ret.return_value, dict) and ret.return_value.get("status") == "interrupted"


def _exit_stopped(sweep_dir: Path) -> None:
    """Ctrl-C or SIGTERM stopped a group at the end of an epoch: the other groups do not start; the same
    command continues the sweep."""
    from deeprun.commands.common import JOB
    from deeprun.exit_codes import for_signal

    print(
        f"deeprun: interrupted; the sweep's state is in {sweep_dir} (continue it with the same command and "
        f"hydra.sweep.dir={sweep_dir})",
        file=sys.stderr,
    )
    sys.exit(for_signal(JOB.signal))


def _prepare_job(cfg: DictConfig) -> Any:
    """A job's :class:`PreparedRun`, or the summary of the finished run its folder already holds."""
    from hydra.core.hydra_config import HydraConfig

    from deeprun.commands.run import finished_summary, prepare

    finished = finished_summary(Path(HydraConfig.get().runtime.output_dir))
    return finished if finished is not None else prepare(cfg)


def _data_key(run: Any) -> str:
    return json.dumps(run.config["data"], sort_keys=True, default=str)


def _datasets(runs: Sequence[Any]) -> dict[str, Any]:
    """Each distinct dataset of the sweep, loaded once (a load error is raised by the groups that need it)."""
    datasets: dict[str, Any] = {}
    for run in runs:
        key = _data_key(run)
        if key not in datasets:
            try:
                datasets[key] = run.settings.data.load()
            except Exception as error:
                datasets[key] = _Unloadable(error)
    return datasets


class _Unloadable:
    """A dataset that failed to load: training a group on it raises the error."""

    def __init__(self, error: Exception):
        self.error = error

    def __getattr__(self, name: str) -> Any:
        raise self.error


def _resume_point_readable(ret: JobReturn, datasets: dict[str, Any]) -> bool:
    """A resumed job whose checkpoint is damaged is left as it was (one error line; the sweep reports
    it unfinished); the others go on."""
    from deeprun.runs.loading import load_resume_point

    run = ret.return_value
    dataset = datasets[_data_key(run)]
    if run.resume_epochs is None or isinstance(dataset, _Unloadable):
        return True
    try:
        load_resume_point(run.run_dir, run.settings, dataset.n_features, dataset.n_classes, run.resume_epoch)
    except ConfigError as error:
        print(f"deeprun: error: job {ret.hydra_cfg.hydra.job.num}: {error}", file=sys.stderr)
        ret.return_value = {"status": "incomplete", "error": str(error)}
        return False
    return True


def _record_failure(ret: JobReturn, run_dir: Path, name: str, error: BaseException) -> None:
    """Write a failed job's ``summary.json`` (status failed, the error) and make that summary its result.

    Hydra is told the job completed: its sweeper stops at the first FAILED job, before the sweep's end
    callbacks, and :class:`deeprun.sweeps.callbacks.SweepSummary` must still list every job (it then sets the
    sweep's exit status from the jobs' folders), as under the joblib and submitit launchers.
    """
    from deeprun.runs.folder import write_failure

    print(f"deeprun: error: job {ret.hydra_cfg.hydra.job.num}: {error}", file=sys.stderr)
    ret.status, ret.return_value = JobStatus.COMPLETED, write_failure(run_dir, name, error)
