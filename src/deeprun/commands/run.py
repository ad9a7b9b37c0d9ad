"""The ``deeprun`` command: Hydra composes the config, everything else is plain Python.

config → validated settings → data + model + optimizer → compiled epochs → run folder.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from deeprun.commands.common import JOB, composition_message, fail, run_hydra_app, stop_on_interrupt
from deeprun.exit_codes import ExitCode, for_signal
from deeprun.registry import ConfigError, plain_mapping
from deeprun.settings import CONFIG_DIR
from deeprun.training.trainer import configure_compilation_cache


@dataclass
class PreparedRun:
    """A validated run, its folder, the donor of its reused layers (if any) and, for a run that goes on
    in its folder (``trainer.resume``, or a job of a continued sweep), the epochs it can resume after."""

    settings: Any
    config: dict[str, Any]
    run_dir: Path
    label: str
    donor: Any = None
    resume_epochs: list[int] | None = None  # None: a new run; [0, ...]: 0 is "from the start"
    resume_epoch: int = 0  # the one it resumes after (the latest, unless its fused group needs another)
    sweep_dir: Path | None = None  # the sweep it is a job of (its loggers nest it there)


def finished_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished run in ``run_dir`` (a continued sweep keeps it), else None."""
    from deeprun.runs.folder import FINISHED
    from deeprun.runs.records import read_run

    summary = read_run(run_dir).summary
    return summary if summary is not None and summary.get("status") in FINISHED else None


def prepare(cfg: DictConfig) -> PreparedRun:
    """Validate a composed job config (raises ConfigError) and set up the process for it.

    With ``trainer.resume=<run dir>`` the run is that folder's, with its saved config (in a sweep, the
    job's own folder becomes a link to it, so the sweep's summary lists it). A job of a sweep whose
    folder already holds a run (the same command continued) resumes it the same way.
    ``model.init_from`` is recorded as an absolute path and its run is read now (bad input before
    anything compiles).
    """
    from deeprun.runs.folder import holds_progress, record_config
    from deeprun.runs.loading import load_donor, resume_epochs, resumed_config
    from deeprun.settings import advisories, complete_config, settings_from_config
    from deeprun.sweeps.callbacks import claim_resumed
    from deeprun.training.trainer import training_devices

    composed = plain_mapping(cfg)
    config = complete_config(composed)
    settings = settings_from_config(config)
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    resume = settings.trainer.resume
    if resume is None and in_sweep and holds_progress(run_dir):
        resume = str(run_dir)
    epochs = None
    if resume is not None:
        resume_dir = Path(resume)
        if in_sweep and resume_dir.resolve() != run_dir.resolve():
            claim_resumed(resume_dir)
            link_job_folder(run_dir, resume_dir)
        config = resumed_config(resume_dir, list(hydra_cfg.overrides.task), config)
        settings = settings_from_config(config)
        run_dir = resume_dir
        epochs = resume_epochs(run_dir)
    JOB.folder = run_dir if not in_sweep else Path(str(hydra_cfg.sweep.dir))
    donor = None
    if settings.model.init_from is not None:
        donor = load_donor(settings.model.init_from)
    if resume is None:
        # The config in full (a partial YAML's omissions at their defaults), resolved (no interpolation
        # left), its paths absolute: the run's saved config works from any folder (eval, resume, export).
        for group, key in (("model", "init_from"), ("data", "path")):
            value = config.get(group, {}).get(key)
            if isinstance(value, str) and value:
                config[group][key] = str(Path(value).resolve())
        if config != composed:
            settings = settings_from_config(config)
        record_config(run_dir, config)
    training_devices(settings.trainer.devices)
    for note in advisories(settings):
        print(f"deeprun: warning: {note}", file=sys.stderr)
    configure_compilation_cache(settings.trainer.compilation_cache)
    label = settings.name if not in_sweep else f"{settings.name} #{hydra_cfg.job.num}"
    sweep_dir = Path(str(hydra_cfg.sweep.dir)) if in_sweep else None
    return PreparedRun(settings, config, run_dir, label, donor, epochs, epochs[-1] if epochs else 0, sweep_dir)


def link_job_folder(job_dir: Path, run_dir: Path) -> None:
    """A sweep job that resumes another folder: its own folder (Hydra's ``.hydra/`` only) becomes a
    link to that run, where the sweep's summary finds it."""
    import shutil

    if job_dir.is_dir() and not job_dir.is_symlink():
        shutil.rmtree(job_dir)
    job_dir.symlink_to(run_dir.resolve(), target_is_directory=True)


def train_and_record(
    runs: Sequence[PreparedRun], dataset, batched: bool = False, progress_bar: bool = True
) -> list[dict[str, Any]]:
    """Train runs (several: fused into one program; ``batched``: under ``jax.vmap``) and write each run's
    folder; returns summaries. ``progress_bar=False``: epoch lines only (a sweep's worker process).

    Everything that can be checked is checked before the first write: that the runs fit (steps,
    counters, memory) and, for resumed runs, that their checkpoints restore whole into their configs'
    structure. A ConfigError from here leaves every folder as it was."""
    from deeprun.commands.console import EpochProgress, console, results_table, summary_line
    from deeprun.loggers import all_of
    from deeprun.runs.folder import RunFolder, preload_writers
    from deeprun.runs.loading import load_resume_point
    from deeprun.training.limits import check_run_fits
    from deeprun.training.loop import fit_many

    start = time.perf_counter()
    first = runs[0].settings
    for run in runs:
        check_run_fits(run.settings, len(dataset.y_train), dataset.n_features, dataset.n_classes, len(runs), run.donor)
    points = [
        load_resume_point(run.run_dir, run.settings, dataset.n_features, dataset.n_classes, run.resume_epoch)
        for run in runs
    ]
    preload_writers(first.trainer.checkpoint, first.trainer.plots)
    folders = [RunFolder(run.run_dir) for run in runs]
    title = runs[0].label if len(runs) == 1 else f"{len(runs)} fused runs ({', '.join(r.label for r in runs)})"
    console.print(
        f"[bold]deeprun[/] {title}: {dataset.name} "
        f"({len(dataset.y_train):,} train / {len(dataset.y_val):,} val / {len(dataset.y_test):,} test)"
    )
    # A sweep's jobs may print side by side (joblib, submitit, worker processes): every line names its job.
    labelled = len(runs) > 1 or runs[0].sweep_dir is not None

    def prefix(run: PreparedRun) -> str:
        return f"[{run.label}] " if labelled else ""

    for run, folder, point in zip(runs, folders, points, strict=True):
        if run.resume_epochs is not None:
            folder.restart(point.progress["history"] if point is not None else [])
            after = f"after epoch {run.resume_epoch}" if run.resume_epoch else "from the start (no epoch had finished)"
            console.print(f"{prefix(run)}resuming {folder.path} {after}", markup=False)
    logs = [run.settings.logger.open(run.run_dir, run.config, run.sweep_dir, run.label) for run in runs]
    savers = [
        all_of(folder.epoch_checkpoints.save if run.settings.trainer.checkpoint else None, log.saver)
        for run, folder, log in zip(runs, folders, logs, strict=True)
    ]
    line_label = runs[0].label if labelled and len(runs) == 1 else ""
    with (
        EpochProgress(first.trainer.epochs, title, bar=progress_bar, label=line_label) as progress,
        stop_on_interrupt() as stop,
    ):
        steps_done = None
        if progress_bar and first.trainer.step_progress and console.is_terminal:  # off in pipes and files
            steps_done = progress.steps_done(len(runs) * (len(dataset.y_train) // first.trainer.batch_size))
        callbacks = [
            [folder.append_metrics, progress.printer(run.label if labelled else ""), log.epoch]
            for run, folder, log in zip(runs, folders, logs, strict=True)
        ]
        try:
            results = fit_many(
                [run.settings for run in runs],
                dataset,
                callbacks,
                savers,
                points,
                stop,
                [run.donor for run in runs],
                batched=batched,
                compiling=progress.compiling,
                steps_done=steps_done,
            )
        except BaseException as error:
            for log in logs:
                log.close()
            if isinstance(error, KeyboardInterrupt):  # a second Ctrl-C: what the folders hold is kept
                from deeprun.runs.folder import write_failure

                for run, folder in zip(runs, folders, strict=True):
                    folder.epoch_checkpoints.close()
                    if folder.metrics_path.exists():
                        write_failure(folder.path, run.settings.name, error, status="interrupted")
            raise
        finally:  # an error or a second Ctrl-C: the last epoch's checkpoint still reaches the disk
            for folder in folders:
                folder.epoch_checkpoints.close()
    wall_time_s = time.perf_counter() - start
    summaries = []
    for run, folder, result, log in zip(runs, folders, results, logs, strict=True):
        trainer = run.settings.trainer
        summary = folder.finish(
            result, run.settings.name, wall_time_s, checkpoint=trainer.checkpoint, plots=trainer.plots
        )
        log.finish(summary)
        if labelled:
            console.print(summary_line(run.label, summary), markup=False)
        else:
            console.print(results_table(summary))
        console.print(f"{prefix(run)}run folder: {run.run_dir}", markup=False, soft_wrap=True)
        summaries.append(summary)
    return summaries


def sweep_job(cfg: DictConfig) -> dict[str, Any]:
    """One job of a sweep, under a launcher that runs jobs one by one in this process or in others
    (Hydra's basic launcher, joblib, submitit; the fused launcher trains its jobs itself).

    A job never raises or exits here (Ctrl-C aside): one that fails, bad input included, is recorded in
    its folder (``summary.json``: ``status: failed`` and the error) and returns that summary, as a
    diverged job returns its own. Otherwise ``sys.exit`` would kill a joblib worker or a submitit job
    (and with it the sweep), and Hydra's sweeper would stop at the first failed job, before the sweep
    summary is written. The sweep's exit status comes from :class:`deeprun.sweeps.callbacks.SweepSummary`.
    A job whose folder holds a finished run (a continued sweep, a requeued submitit job) keeps it.
    A job whose resume point cannot be read leaves its folder as it was (the sweep reports it unfinished).
    """
    from deeprun.runs.checkpoints import CheckpointError
    from deeprun.runs.folder import write_failure

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    finished = finished_summary(run_dir)
    if finished is not None:
        return finished
    try:
        run = prepare(cfg)
        run_dir = run.run_dir
        summary = train_and_record([run], run.settings.data.load())[0]
    except Exception as error:
        if not isinstance(error, (ConfigError, OSError)):
            traceback.print_exc()
        print(f"deeprun: error: job {hydra_cfg.job.num}: {error}", file=sys.stderr)
        if isinstance(error, CheckpointError):
            return {"status": "incomplete", "error": str(error)}
        return write_failure(run_dir, str(cfg.get("name", "")), error)
    if summary["status"] == "interrupted":
        exit_stopped(summary, run_dir)
    return summary


def exit_stopped(summary: dict[str, Any], run_dir: Path) -> None:
    """A run stopped cleanly by SIGINT/SIGTERM at the end of an epoch: one line, exit 130/143."""
    print(
        f"deeprun: interrupted after epoch {summary['epochs_completed']}; its state is in {run_dir} "
        f"(continue with trainer.resume={run_dir})",
        file=sys.stderr,
    )
    sys.exit(for_signal(JOB.signal))


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> dict[str, Any]:
    """One job: a single run, or one job of a sweep (:func:`sweep_job`)."""
    from deeprun.runs.folder import write_failure

    JOB.started = True
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return sweep_job(cfg)
    try:
        run = prepare(cfg)
        dataset = run.settings.data.load()
    except ConfigError as error:
        fail(str(error))
    try:
        summary = train_and_record([run], dataset)[0]
    except ConfigError as error:  # before anything was written (model.init_from's shapes, a damaged resume point)
        fail(str(error))
    except OSError as error:  # the folder became unwritable (disk full, read-only): the last checkpoint is kept
        fail_to_write(run.run_dir, run.settings.name, error)
    except Exception as error:
        write_failure(run.run_dir, run.settings.name, error)
        raise
    if summary["status"] == "diverged":
        print(f"deeprun: run diverged at epoch {summary['diverged_epoch']} (NaN/inf loss)", file=sys.stderr)
        sys.exit(ExitCode.DIVERGED)
    if summary["status"] == "interrupted":
        exit_stopped(summary, run.run_dir)
    return summary


def fail_to_write(run_dir: Path, name: str, error: OSError) -> None:
    """One line naming the path and the cause, exit 1; the summary says so where it still can be written."""
    from deeprun.runs.folder import write_failure

    with contextlib.suppress(OSError):
        write_failure(run_dir, name, error)
    cause = error.strerror or str(error)
    # orbax's writer threads fail on their way out (unraisable errors, thread exceptions): this line says it.
    sys.unraisablehook = lambda unraisable: None
    threading.excepthook = lambda args: None
    JOB.stuck_writers = True
    print(
        f"deeprun: error: cannot write {error.filename or run_dir}: {cause}; the last finished epoch's checkpoint "
        f"is kept (continue with trainer.resume={run_dir} once the folder is writable)",
        file=sys.stderr,
    )
    sys.exit(ExitCode.FAILED)


def main() -> None:
    """``deeprun``: ``--cfg job`` validates the config and prints it in full; otherwise Hydra's app."""
    run_hydra_app(_hydra_main, "deeprun", show=shown_config)


def shown_config(argv: list[str]) -> str | None:
    """With ``--cfg``/``-c`` (a single run, not ``-m``): the composed config validated (ConfigError if it
    is not) and, for ``--cfg job``, the YAML of the config in full that a run would record (None: leave
    the printing to Hydra). Without ``--cfg``: None."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from deeprun.settings import complete_config, settings_from_config

    args, unknown = get_args_parser().parse_known_args(argv)
    if args.cfg is None or args.multirun or unknown:  # unknown: Hydra's own usage error
        return None
    overrides = list(args.overrides)
    if args.config_dir is not None:
        overrides.append(f"hydra.searchpath=[file://{Path(args.config_dir).resolve()}]")
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(args.config_name or "config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(composition_message(error)) from None
    config = complete_config(plain_mapping(cfg, resolve=False))
    settings_from_config(complete_config(plain_mapping(cfg)))
    if args.cfg != "job":
        return None
    return OmegaConf.to_yaml(OmegaConf.create(config), resolve=bool(args.resolve))


if __name__ == "__main__":
    main()
