"""Orbax checkpoints of a run's state: the final ``checkpoint/`` and the per-epoch ``resume/<epoch>/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax

from deeprun.training.state import ResumePoint, TrainState


def _state_fields(state: TrainState) -> tuple[str, ...]:
    """The fields a state holds (``loss_scale`` only in float16 runs)."""
    return tuple(field for field in TrainState._fields if getattr(state, field) is not None)


def _payload(state: TrainState) -> dict[str, Any]:
    """The state as plain nested dicts (orbax's format): readable without deeprun."""
    return {field: _pure(getattr(state, field)) for field in _state_fields(state)}


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
    return _state_like(like, restored)


def _state_like(like: TrainState, restored: dict[str, Any]) -> TrainState:
    # Field by field, the pure dicts flatten in the same (sorted-key) order as the nnx.State trees.
    return TrainState(
        **{
            field: jax.tree.unflatten(jax.tree.structure(getattr(like, field)), jax.tree.leaves(restored[field]))
            for field in _state_fields(like)
        }
    )


class EpochCheckpoints:
    """``resume/<epoch>/``: after every epoch, everything a resumed run needs (its training state, the
    best weights early stopping keeps, the host-side counters and history), as one orbax checkpoint.

    Saving is asynchronous (the files are written while the next epoch trains) and atomic (orbax
    finalises a checkpoint by renaming it; a half-written one is ignored); the latest epoch is kept.
    """

    def __init__(self, path: Path):
        self.path = Path(path).resolve()
        self._manager: Any = None

    def save(self, point: ResumePoint) -> None:
        import orbax.checkpoint as ocp

        if self._manager is None:
            self._manager = ocp.CheckpointManager(self.path, options=ocp.CheckpointManagerOptions(max_to_keep=1))
        progress = {**point.progress, "has_best_weights": point.best_weights is not None}
        self._manager.save(
            len(point.progress["history"]),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_resume_payload(point.state, point.best_weights)),
                progress=ocp.args.JsonSave(progress),
            ),
        )

    def close(self) -> None:
        """Wait for the last save to be on disk."""
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    def latest_epoch(self) -> int | None:
        """The last epoch with a complete checkpoint (None: there is none)."""
        import orbax.checkpoint as ocp

        if not self.path.is_dir():
            return None
        with ocp.CheckpointManager(self.path) as manager:
            return manager.latest_step()

    def load(self, like: TrainState) -> ResumePoint:
        """The latest epoch's point, restored into the structure of ``like`` (the run's initial state)."""
        import orbax.checkpoint as ocp

        with ocp.CheckpointManager(self.path) as manager:
            epoch = manager.latest_step()
            progress = manager.restore(epoch, args=ocp.args.Composite(progress=ocp.args.JsonRestore()))["progress"]
            best_like = (like.params, like.batch_stats) if progress.pop("has_best_weights") else None
            restored = manager.restore(
                epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(_resume_payload(like, best_like)))
            )["state"]
        best = None
        if best_like is not None:
            best = tuple(
                jax.tree.unflatten(jax.tree.structure(tree), jax.tree.leaves(restored["best"][field]))
                for tree, field in zip(best_like, ("params", "batch_stats"), strict=True)
            )
        return ResumePoint(_state_like(like, restored), best, progress)


def _resume_payload(state: TrainState, best_weights: tuple[Any, Any] | None) -> dict[str, Any]:
    payload = _payload(state)
    if best_weights is not None:
        payload["best"] = {"params": _pure(best_weights[0]), "batch_stats": _pure(best_weights[1])}
    return payload


def _pure(tree: Any) -> Any:
    """Optimizer states hold ``nnx.State`` trees; store them as plain nested dicts/tuples."""
    from flax import nnx

    return jax.tree.map(
        lambda node: nnx.to_pure_dict(node) if isinstance(node, nnx.State) else node,
        tree,
        is_leaf=lambda node: isinstance(node, nnx.State),
    )
