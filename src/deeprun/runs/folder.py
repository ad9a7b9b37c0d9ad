"""The run folder: the files a run leaves behind, which later tools and users read.

``metrics.jsonl`` (one JSON object per epoch, flushed as it is written), ``metrics.csv``,
``summary.json`` (written atomically), ``checkpoint/`` (orbax: the final state),
``resume/<epoch>/`` (orbax: the latest epoch's full state, while the run is unfinished) and
``learning_curves.png``; with ``trainer.diagnostics``, ``diagnostics.jsonl`` (one line per epoch:
``{"epoch", "layers": [{"layer", "pre_mean", "pre_std", "act_mean", "act_std", "grad_norm"}, …]}``) and
``layer_stats.png``.
"""

from __future__ import annotations

import csv
import json
import shutil
import threading
from pathlib import Path
from typing import Any

from deeprun.files import append_line, atomic_open, json_text, write_json, write_lines, write_text
from deeprun.runs.checkpoints import EpochCheckpoints, save_state
from deeprun.runs.environment import environment, process_environment
from deeprun.training.state import TrainResult

RESUME_DIR = "resume"
FINISHED = ("completed", "stopped_early", "diverged")  # statuses a run cannot be resumed from
#: ``summary.json``'s layout (the README's "The run folder"); raised when a field changes meaning or goes.
SUMMARY_SCHEMA_VERSION = 1
METRIC_KEYS = ("epoch", "step", "lr", "train/loss", "train/accuracy", "val/loss", "val/accuracy", "epoch_time_s")


def preload_writers(checkpoint: bool, plots: bool) -> threading.Thread:
    """Import orbax and matplotlib (about 1 s together) on a background thread, so the imports overlap
    the first compiled epoch (which runs with the GIL released) instead of delaying the summary."""

    def load() -> None:
        if checkpoint:
            import orbax.checkpoint  # noqa: F401
        if plots:
            import deeprun.runs.plots  # noqa: F401

    thread = threading.Thread(target=load, name="deeprun-preload", daemon=True)
    thread.start()
    return thread


def write_failure(run_dir: Path, name: str, error: BaseException, status: str = "failed") -> dict[str, Any]:
    """Record a run that failed (or, ``status="interrupted"``, was stopped at once): ``summary.json``
    with the status and the error, so a sweep's summary shows why (the epochs it finished stay in
    ``metrics.jsonl``, its last epoch checkpoint in ``resume/``); returns that summary."""
    metrics = Path(run_dir) / "metrics.jsonl"
    summary = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "name": name,
        "status": status,
        "error": f"{type(error).__name__}: {error}",
        "epochs_completed": len(read_metrics(metrics)) if metrics.exists() else 0,
        "process": process_environment(),
    }
    write_json(Path(run_dir) / "summary.json", summary)
    return summary


def holds_progress(run_dir: Path) -> bool:
    """Whether a run has started in ``run_dir`` (a metrics line, an epoch checkpoint or a summary)."""
    return any((Path(run_dir) / name).exists() for name in ("metrics.jsonl", RESUME_DIR, "summary.json"))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl``, ignoring a truncated last line (a run killed mid-write)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def _metrics_line(record: dict[str, Any]) -> str:
    return json_text({key: record[key] for key in METRIC_KEYS}, indent=None)


def _diagnostics_line(record: dict[str, Any]) -> str:
    return json_text({"epoch": record["epoch"], "layers": record["diagnostics"]}, indent=None)


class RunFolder:
    """Writes one run's files into ``path``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.path / "metrics.jsonl"
        self.diagnostics_path = self.path / "diagnostics.jsonl"
        self.epoch_checkpoints = EpochCheckpoints(self.path / RESUME_DIR)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """An epoch callback: one whole line per epoch in ``metrics.jsonl`` (:data:`METRIC_KEYS` only)
        and, for a run with diagnostics, one in ``diagnostics.jsonl``; each flushed to disk."""
        append_line(self.metrics_path, _metrics_line(record))
        if "diagnostics" in record:
            append_line(self.diagnostics_path, _diagnostics_line(record))

    def restart(self, history: list[dict[str, Any]]) -> None:
        """On resume: ``metrics.jsonl`` (and ``diagnostics.jsonl``) hold exactly the checkpoint's epochs
        (a killed run may have written a line for an epoch whose checkpoint it did not finish); with
        no checkpoint (``history`` empty) the run starts again and its epoch checkpoints go."""
        write_lines(self.metrics_path, [_metrics_line(record) for record in history])
        if self.diagnostics_path.exists() or any("diagnostics" in record for record in history):
            write_lines(
                self.diagnostics_path, [_diagnostics_line(record) for record in history if "diagnostics" in record]
            )
        if not history:
            shutil.rmtree(self.epoch_checkpoints.path, ignore_errors=True)

    def write_csv(self, history: list[dict[str, Any]]) -> Path:
        path = self.path / "metrics.csv"
        with atomic_open(path) as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_KEYS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(history)
        return path

    def summary(self, result: TrainResult, name: str, wall_time_s: float) -> dict[str, Any]:
        def metrics(record):
            return None if record is None else {k: record[k] for k in METRIC_KEYS if "/" in k}

        return {
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "name": name,
            "status": result.status,
            "epochs_completed": len(result.history),
            "diverged_epoch": result.diverged_epoch,
            "resumed_at": list(result.resumed_at),
            "best_epoch": result.best_epoch,
            "final": metrics(result.final),
            "best": metrics(result.best),
            "test": result.test,
            "params": result.params,
            "data": result.data,
            "trace_time_s": result.trace_time_s,
            "compile_time_s": result.compile_time_s,
            "steady_epoch_time_s": result.steady_epoch_time_s,
            "wall_time_s": wall_time_s,
            **environment(),
        }

    def save_checkpoint(self, result: TrainResult) -> Path:
        """The final training state (parameters, batch statistics, optimizer state, step) via orbax."""
        return save_state(self.path / "checkpoint", result.state)

    def finish(self, result: TrainResult, name: str, wall_time_s: float, checkpoint: bool, plots: bool) -> dict:
        """Write everything but the per-epoch lines; returns the summary. A finished run's per-epoch
        checkpoint goes once its final files are written; an interrupted one keeps it for resuming."""
        self.epoch_checkpoints.close()
        self.write_csv(result.history)
        if checkpoint and result.status != "diverged":
            self.save_checkpoint(result)
        if plots and result.history:
            from deeprun.runs.plots import plot_learning_curves, run_title

            title = run_title(name, self.path)
            plot_learning_curves(result.history, self.path / "learning_curves.png", title=title)
            if any("diagnostics" in record for record in result.history):
                from deeprun.runs.plots import plot_layer_stats

                plot_layer_stats(result.history, self.path / "layer_stats.png", title=title)
        summary = self.summary(result, name, wall_time_s)
        write_json(self.path / "summary.json", summary)
        if result.status in FINISHED:
            shutil.rmtree(self.epoch_checkpoints.path, ignore_errors=True)
        return summary


def record_config(run_dir: Path, config: dict[str, Any]) -> Path:
    """Rewrite the run's ``.hydra/config.yaml`` with ``config`` (the config as it ran, e.g. with
    ``model.init_from`` made absolute)."""
    from omegaconf import OmegaConf

    return write_text(Path(run_dir) / ".hydra" / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config)))
