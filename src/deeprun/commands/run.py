"""The ``deeprun`` command: Hydra composes the config, everything else is plain Python.

config → validated settings → data + model + optimizer → compiled epochs → run folder.
"""

from __future__ import annotations

import sys
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

from deeprun.commands.common import (
    JOB,
    discard_if_empty,
    fail,
    run_hydra_app,
    stop_on_interrupt,
)
from deeprun.exit_codes import ExitCode
from deeprun.registry import ConfigError, plain_mapping
from deeprun.settings import CONFIG_DIR
from deeprun.training.trainer import configure_compilation_cache


@dataclass
class PreparedRun:
    """A validated run, the folder Hydra made for it and the donor of its reused layers, if any."""

    settings: Any
    config: dict[str, Any]
    run_dir: Path
    label: str
    donor: Any = None


def prepare(cfg: DictConfig) -> PreparedRun:
    """Validate a composed job config (raises ConfigError) and set up the process for it.

    With ``trainer.resume=<run dir>`` the run is that folder's, with its saved config, and the folder
    Hydra made for this invocation is removed. ``model.init_from`` is recorded as an absolute path and
    its run is read now (bad input before anything compiles).
    """
    from deeprun.runs.folder import record_config
    from deeprun.runs.loading import load_donor, resumed_config
    from deeprun.settings import advisories, settings_from_config
    from deeprun.training.trainer import training_devices

    config = plain_mapping(cfg)
    settings = settings_from_config(config)
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if settings.trainer.resume is not None:
        resume_dir = Path(settings.trainer.resume)
        config = resumed_config(resume_dir, list(hydra_cfg.overrides.task), config)
        settings = settings_from_config(config)
        discard_if_empty(run_dir)
        run_dir = resume_dir
    donor = None
    if settings.model.init_from is not None:
        donor = load_donor(settings.model.init_from)
        absolute = str(Path(settings.model.init_from).resolve())
        if absolute != settings.model.init_from:
            config["model"]["init_from"] = absolute
            settings = settings_from_config(config)
            record_config(run_dir, config)
    training_devices(settings.trainer.devices)
    for note in advisories(settings):
        print(f"deeprun: warning: {note}", file=sys.stderr)
    configure_compilation_cache(settings.trainer.compilation_cache)
    label = settings.name if hydra_cfg.mode == RunMode.RUN else f"{settings.name} #{hydra_cfg.job.num}"
    return PreparedRun(settings, config, run_dir, label, donor)


def train_and_record(runs: Sequence[PreparedRun], dataset) -> list[dict[str, Any]]:
    """Train runs (several: fused into one program) and write each run's folder; returns summaries."""
    from deeprun.commands.console import EpochProgress, console, results_table, summary_line
    from deeprun.loggers import all_of
    from deeprun.runs.folder import RunFolder, preload_writers
    from deeprun.training.loop import fit_many

    start = time.perf_counter()
    trainer_settings = runs[0].settings.trainer
    preload_writers(trainer_settings.checkpoint, trainer_settings.plots)
    folders = [RunFolder(run.run_dir) for run in runs]
    epochs = runs[0].settings.trainer.epochs
    title = runs[0].label if len(runs) == 1 else f"{len(runs)} fused runs ({', '.join(r.label for r in runs)})"
    console.print(
        f"[bold]deeprun[/] {title}: {dataset.name} "
        f"({len(dataset.y_train):,} train / {len(dataset.y_val):,} val / {len(dataset.y_test):,} test)"
    )
    logs = [run.settings.logger.open(run.run_dir, run.config) for run in runs]
    savers = [
        all_of(folder.epoch_checkpoints.save if run.settings.trainer.checkpoint else None, log.saver)
        for run, folder, log in zip(runs, folders, logs, strict=True)
    ]
    resume_from = resume_point_loader(folders[0]) if runs[0].settings.trainer.resume is not None else None
    with EpochProgress(epochs, title) as progress, stop_on_interrupt() as stop:
        callbacks = [
            [folder.append_metrics, progress.printer(run.label if len(runs) > 1 else ""), log.epoch]
            for run, folder, log in zip(runs, folders, logs, strict=True)
        ]
        try:
            results = fit_many(
                [run.settings for run in runs],
                dataset,
                callbacks,
                savers,
                resume_from,
                stop,
                [run.donor for run in runs],
            )
        except BaseException:
            for log in logs:
                log.close()
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
        if len(runs) == 1:
            console.print(results_table(summary))
        else:
            console.print(summary_line(run.label, summary), markup=False)
        console.print(f"run folder: {run.run_dir}")
        summaries.append(summary)
    return summaries


def resume_point_loader(folder):
    """``fit``'s ``resume_from``: the folder's latest epoch checkpoint; ``metrics.jsonl`` is cut back to it."""
    from deeprun.commands.console import console

    def load(like):
        point = folder.epoch_checkpoints.load(like)
        folder.restart_metrics(point.progress["history"])
        console.print(f"resuming {folder.path} after epoch {len(point.progress['history'])}")
        return point

    return load


def sweep_job(cfg: DictConfig) -> dict[str, Any]:
    """One job of a sweep, under a launcher that runs jobs one by one in this process or in others
    (Hydra's basic launcher, joblib, submitit; the fused launcher trains its jobs itself).

    A job never raises or exits here (Ctrl-C aside): one that fails, bad input included, is recorded in
    its folder (``summary.json``: ``status: failed`` and the error) and returns that summary, as a
    diverged job returns its own. Otherwise ``sys.exit`` would kill a joblib worker or a submitit job
    (and with it the sweep), and Hydra's sweeper would stop at the first failed job, before the sweep
    summary is written. The sweep's exit status comes from :class:`deeprun.sweeps.callbacks.SweepSummary`.
    """
    from deeprun.runs.folder import write_failure

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        run = prepare(cfg)
        run_dir = run.run_dir
        summary = train_and_record([run], run.settings.data.load())[0]
    except Exception as error:
        if not isinstance(error, ConfigError):
            traceback.print_exc()
        print(f"deeprun: error: job {hydra_cfg.job.num}: {error}", file=sys.stderr)
        return write_failure(run_dir, str(cfg.get("name", "")), error)
    if summary["status"] == "interrupted":
        exit_interrupted(summary, run_dir)
    return summary


def exit_interrupted(summary: dict[str, Any], run_dir: Path) -> None:
    print(f"deeprun: interrupted after epoch {summary['epochs_completed']}; its state is in {run_dir}", file=sys.stderr)
    sys.exit(ExitCode.INTERRUPTED)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> dict[str, Any]:
    """One job: a single run, or one job of a sweep (:func:`sweep_job`)."""
    JOB.started = True
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return sweep_job(cfg)
    try:
        run = prepare(cfg)
        dataset = run.settings.data.load()
    except ConfigError as error:
        fail(str(error), Path(HydraConfig.get().runtime.output_dir))
    try:
        summary = train_and_record([run], dataset)[0]
    except ConfigError as error:  # found while setting up (model.init_from's shapes): still bad input
        fail(str(error), run.run_dir)
    except Exception as error:
        from deeprun.runs.folder import write_failure

        write_failure(run.run_dir, run.settings.name, error)
        raise
    if summary["status"] == "diverged":
        print(f"deeprun: run diverged at epoch {summary['diverged_epoch']} (NaN/inf loss)", file=sys.stderr)
        sys.exit(ExitCode.DIVERGED)
    if summary["status"] == "interrupted":
        exit_interrupted(summary, run.run_dir)
    return summary


def main() -> None:
    """``deeprun``."""
    run_hydra_app(_hydra_main, "deeprun")


if __name__ == "__main__":
    main()
