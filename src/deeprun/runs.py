"""The run folder: the files a run leaves behind, which later tools and users read.

``metrics.jsonl`` (one JSON object per epoch, flushed as it is written), ``metrics.csv``,
``summary.json`` (written atomically), ``checkpoint/`` (orbax) and ``learning_curves.png``.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import tempfile
import threading
from pathlib import Path
from typing import Any

import jax

import deeprun
from deeprun.train import TrainResult

METRIC_KEYS = ("epoch", "step", "lr", "train/loss", "train/accuracy", "val/loss", "val/accuracy", "epoch_time_s")


def preload_writers(checkpoint: bool, plots: bool) -> threading.Thread:
    """Import orbax and matplotlib (about 1 s together) on a background thread, so the imports overlap
    the first compiled epoch (which runs with the GIL released) instead of delaying the summary."""

    def load() -> None:
        if checkpoint:
            import orbax.checkpoint  # noqa: F401
        if plots:
            import deeprun.plots  # noqa: F401

    thread = threading.Thread(target=load, name="deeprun-preload", daemon=True)
    thread.start()
    return thread


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temp file in the same folder, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl``, ignoring a truncated last line (a run killed mid-write)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def environment() -> dict[str, Any]:
    """Versions and device, for the summary."""
    import flax
    import optax

    device = jax.devices()[0]
    return {
        "versions": {
            "deeprun": deeprun.__version__,
            "python": platform.python_version(),
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
        },
        "device": {"platform": device.platform, "kind": device.device_kind, "count": jax.device_count()},
    }


class RunFolder:
    """Writes one run's files into ``path``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.path / "metrics.jsonl"

    def append_metrics(self, record: dict[str, Any]) -> None:
        """An epoch callback: one whole line per epoch, flushed to disk."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps({key: record[key] for key in METRIC_KEYS}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_csv(self, history: list[dict[str, Any]]) -> Path:
        path = self.path / "metrics.csv"
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_KEYS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(history)
        return path

    def summary(self, result: TrainResult, name: str, wall_time_s: float) -> dict[str, Any]:
        def metrics(record):
            return None if record is None else {k: record[k] for k in METRIC_KEYS if "/" in k}

        return {
            "name": name,
            "status": result.status,
            "epochs_completed": len(result.history),
            "diverged_epoch": result.diverged_epoch,
            "best_epoch": result.best_epoch,
            "final": metrics(result.final),
            "best": metrics(result.best),
            "test": result.test,
            "params": result.params,
            "trace_time_s": result.trace_time_s,
            "compile_time_s": result.compile_time_s,
            "steady_epoch_time_s": result.steady_epoch_time_s,
            "wall_time_s": wall_time_s,
            **environment(),
        }

    def save_checkpoint(self, result: TrainResult) -> Path:
        """The final training state (parameters, batch statistics, optimizer state, step) via orbax."""
        import orbax.checkpoint as ocp

        path = (self.path / "checkpoint").resolve()
        state = result.state
        payload = {
            "params": state.params.to_pure_dict(),
            "batch_stats": state.batch_stats.to_pure_dict(),
            "opt_state": _pure(state.opt_state),
            "step": state.step,
        }
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(path, payload, force=True)
        return path

    def finish(self, result: TrainResult, name: str, wall_time_s: float, checkpoint: bool, plots: bool) -> dict:
        """Write everything but the per-epoch lines; returns the summary."""
        self.write_csv(result.history)
        if checkpoint and result.status != "diverged":
            self.save_checkpoint(result)
        if plots and result.history:
            from deeprun.plots import plot_learning_curves

            plot_learning_curves(result.history, self.path / "learning_curves.png", title=name)
        summary = self.summary(result, name, wall_time_s)
        write_json_atomic(self.path / "summary.json", summary)
        return summary


def _pure(tree: Any) -> Any:
    """Optimizer states hold ``nnx.State`` trees; store them as plain nested dicts/tuples."""
    from flax import nnx

    return jax.tree.map(
        lambda node: node.to_pure_dict() if isinstance(node, nnx.State) else node,
        tree,
        is_leaf=lambda node: isinstance(node, nnx.State),
    )
