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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

import deeprun
from deeprun.train import TrainResult, TrainState

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


def write_failure(run_dir: Path, name: str, error: BaseException) -> None:
    """Record a run that failed: ``summary.json`` with ``status: failed`` and the error, so a sweep's
    summary shows why (the epochs it finished stay in ``metrics.jsonl``)."""
    metrics = Path(run_dir) / "metrics.jsonl"
    write_json_atomic(Path(run_dir) / "summary.json", {
        "name": name,
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
        "epochs_completed": len(read_metrics(metrics)) if metrics.exists() else 0,
    })


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


_STATE_FIELDS = ("params", "batch_stats", "opt_state", "step")


def _payload(state: TrainState) -> dict[str, Any]:
    """The state as plain nested dicts (orbax's format): readable without deeprun."""
    return {field: _pure(getattr(state, field)) for field in _STATE_FIELDS}


def save_state(path: Path, state: TrainState) -> Path:
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, _payload(state), force=True)
    return path


def restore_state(path: Path, like: TrainState) -> TrainState:
    """Restore a checkpoint into the structure of ``like`` (a state of the same run configuration)."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(Path(path).resolve(), _payload(like))
    # Field by field, the pure dicts flatten in the same (sorted-key) order as the nnx.State trees.
    return TrainState(*(
        jax.tree.unflatten(jax.tree.structure(getattr(like, field)), jax.tree.leaves(restored[field]))
        for field in _STATE_FIELDS
    ))


@dataclass
class LoadedRun:
    """A finished run read back from its folder: its settings, dataset dimensions and final state."""

    path: Path
    settings: Any
    n_features: int
    n_classes: int
    state: TrainState

    def model(self):
        from flax import nnx

        from deeprun.train import build_model

        abstract = nnx.eval_shape(lambda: build_model(self.settings, self.n_features, self.n_classes))
        return nnx.merge(nnx.graphdef(abstract), self.state.params, self.state.batch_stats)


def load_run(run_dir: Path) -> LoadedRun:
    """Read ``run_dir``'s config and checkpoint; ConfigError (one line) if it is not a finished run."""
    from omegaconf import OmegaConf

    from deeprun.registry import ConfigError
    from deeprun.settings import settings_from_config
    from deeprun.train import Trainer

    run_dir = Path(run_dir)
    config_file, summary_file = run_dir / ".hydra" / "config.yaml", run_dir / "summary.json"
    if not config_file.is_file() or not summary_file.is_file():
        raise ConfigError(f"{run_dir} is not a deeprun run folder (no .hydra/config.yaml or summary.json)")
    if not (run_dir / "checkpoint").is_dir():
        raise ConfigError(f"{run_dir} has no checkpoint (was it run with trainer.checkpoint=false?)")
    settings = settings_from_config(OmegaConf.to_container(OmegaConf.load(config_file), resolve=True))
    data = json.loads(summary_file.read_text())["data"]
    trainer = Trainer(settings, data["n_train"], data["n_features"], data["n_classes"])
    like, _ = trainer.init(settings)
    state = restore_state(run_dir / "checkpoint", like)
    return LoadedRun(run_dir, settings, data["n_features"], data["n_classes"], state)


def _pure(tree: Any) -> Any:
    """Optimizer states hold ``nnx.State`` trees; store them as plain nested dicts/tuples."""
    from flax import nnx

    return jax.tree.map(
        lambda node: nnx.to_pure_dict(node) if isinstance(node, nnx.State) else node,
        tree,
        is_leaf=lambda node: isinstance(node, nnx.State),
    )
