"""Orbax checkpoints of a run's state: the final ``checkpoint/`` and the per-epoch ``resume/<epoch>/``."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax

from deeprun.registry import ConfigError
from deeprun.runs import native_stderr
from deeprun.training.state import ResumePoint, TrainState


def _state_fields(state: TrainState) -> tuple[str, ...]:
    """The fields a state holds (``loss_scale`` only in float16 runs)."""
    return tuple(field for field in TrainState._fields if getattr(state, field) is not None)


def _payload(state: TrainState) -> dict[str, Any]:
    """The state as plain nested dicts (orbax's format): readable without deeprun."""
    return {field: _pure(getattr(state, field)) for field in _state_fields(state)}


def save_state(path: Path, state: TrainState) -> Path:
    """Write ``state`` to ``path`` (replacing what is there); OSError naming the path if it cannot be."""
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    with _writing(path), ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, _payload(state), force=True)
    return path


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A failed checkpoint write (orbax reports a full disk or a read-only folder as a ValueError from
    its writer threads) becomes one OSError with the cause's errno and ``path``; its temporary folders
    are removed, the checkpoints already finished stay."""
    try:
        yield
    except OSError:
        _remove_temporary(path)
        raise
    except Exception as error:
        _remove_temporary(path)
        code = re.search(r"os_error_code='?(\d+)", str(error))
        number = int(code[1]) if code else errno.EIO
        raise OSError(number, os.strerror(number), str(path)) from error


def _remove_temporary(path: Path) -> None:
    """orbax's unfinished ``*.orbax-checkpoint-tmp*`` folders in or beside ``path``."""
    for folder in (path, path.parent):
        for tmp in folder.glob("*.orbax-checkpoint-tmp*") if folder.is_dir() else ():
            shutil.rmtree(tmp, ignore_errors=True)


def restore_state(path: Path, like: TrainState) -> TrainState:
    """Restore a checkpoint into the structure of ``like`` (a state of the same run configuration, or
    its ``jax.ShapeDtypeStruct`` structure); ConfigError if it is damaged or holds another structure."""
    import orbax.checkpoint as ocp

    with _unreadable(path), ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(Path(path).resolve(), _payload(like))
        return _state_like(like, restored)


class CheckpointError(ConfigError):
    """A checkpoint that cannot be read back (damaged, or of another structure)."""


@contextlib.contextmanager
def _unreadable(path: Path) -> Iterator[None]:
    """Any error reading a checkpoint becomes one ConfigError line naming it."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as error:
        detail = " ".join(str(error).split())[:300]
        raise CheckpointError(
            f"{path}: the checkpoint is damaged or does not match the run's config ({type(error).__name__}: {detail})"
        ) from None


def _state_like(like: TrainState, restored: dict[str, Any]) -> TrainState:
    # Field by field, the pure dicts flatten in the same (sorted-key) order as the nnx.State trees.
    return TrainState(
        **{
            field: jax.tree.unflatten(jax.tree.structure(getattr(like, field)), jax.tree.leaves(restored[field]))
            for field in _state_fields(like)
        }
    )


KEPT_EPOCHS = 2


class EpochCheckpoints:
    """``resume/<epoch>/``: after every epoch, everything a resumed run needs (its training state, the
    best weights early stopping keeps, the host-side counters and history), as one orbax checkpoint.

    Saving is asynchronous (the files are written while the next epoch trains) and atomic (orbax
    finalises a checkpoint by renaming it; a half-written one is ignored). The last two epochs are kept:
    a kill during one save still leaves the one before, and the members of a fused sweep killed while
    saving can all go back to the epoch they share.
    """

    def __init__(self, path: Path):
        self.path = Path(path).resolve()
        self._manager: Any = None
        self._filtering = False

    def save(self, point: ResumePoint) -> None:
        import orbax.checkpoint as ocp

        if self._manager is None:
            if not self._filtering:
                native_stderr.acquire()
                self._filtering = True
            self._manager = ocp.CheckpointManager(
                self.path, options=ocp.CheckpointManagerOptions(max_to_keep=KEPT_EPOCHS)
            )
        progress = {**point.progress, "has_best_weights": point.best_weights is not None}
        with self._failure_ends_manager():
            self._manager.save(
                len(point.progress["history"]),
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(_resume_payload(point.state, point.best_weights)),
                    progress=ocp.args.JsonSave(progress),
                ),
            )

    def close(self) -> None:
        """Wait for the last save to be on disk (OSError if it could not be written)."""
        with self._failure_ends_manager():
            if self._manager is not None:
                self._manager.close()
                self._manager = None
        self._end_filter()

    def _end_filter(self) -> None:
        if self._filtering:
            native_stderr.release()
            self._filtering = False

    @contextlib.contextmanager
    def _failure_ends_manager(self) -> Iterator[None]:
        """A failed save ends the manager (and its writer threads); the finished epochs stay."""
        try:
            with _writing(self.path):
                yield
        except OSError:
            manager, self._manager = self._manager, None
            if manager is not None:
                with contextlib.suppress(Exception):
                    manager.close()
                time.sleep(WRITER_GRACE_S)
            self._end_filter()
            raise

    def epochs(self) -> list[int]:
        """The epochs with a complete checkpoint, in order (empty: none)."""
        import orbax.checkpoint as ocp

        if not self.path.is_dir():
            return []
        with _unreadable(self.path), ocp.CheckpointManager(self.path) as manager:
            epochs = sorted(manager.all_steps())
        # orbax names a checkpoint by its epoch only once it is complete (renamed from a temporary name):
        # a numbered folder that orbax does not list is a finished checkpoint damaged since.
        damaged = sorted(int(p.name) for p in self.path.iterdir() if p.name.isdigit() and int(p.name) not in epochs)
        if damaged:
            raise CheckpointError(
                f"{self.path / str(damaged[-1])}: the checkpoint is damaged (orbax does not see it as complete)"
            )
        return epochs

    def latest_epoch(self) -> int | None:
        """The last epoch with a complete checkpoint (None: there is none)."""
        epochs = self.epochs()
        return epochs[-1] if epochs else None

    def load(self, like: TrainState, epoch: int | None = None) -> ResumePoint:
        """Epoch ``epoch``'s point (None: the latest), restored into the structure of ``like`` (the run's
        initial state or its abstract structure); ConfigError if it is damaged or does not fit ``like``."""
        import orbax.checkpoint as ocp

        with _unreadable(self.path / str(epoch or "")), ocp.CheckpointManager(self.path) as manager:
            epoch = manager.latest_step() if epoch is None else epoch
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
            if len(progress["history"]) != epoch:
                raise CheckpointError(f"{self.path / str(epoch)}: its history has {len(progress['history'])} epochs")
            return ResumePoint(_state_like(like, restored), best, progress)


#: How long the writer threads of a failed save get to fail in turn (their tracebacks filtered).
WRITER_GRACE_S = 0.5


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
