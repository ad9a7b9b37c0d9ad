"""The host's epoch loop: run the compiled epoch, keep each run's history, early stopping and plateau rule,
hand resume points to the savers, and evaluate at the end. No Hydra, no files."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from deeprun.models import count_parameters
from deeprun.monitor import improved, initial_best, monitor_mode
from deeprun.settings import Settings
from deeprun.techniques.optimizers import learning_rate_of, with_hyperparams
from deeprun.techniques.schedules import PlateauState
from deeprun.training.diagnostics import layer_records
from deeprun.training.state import (
    DeviceData,
    EpochCallback,
    EpochSaver,
    Member,
    ResumePoint,
    TrainResult,
    TrainState,
    stack,
    unstack,
)
from deeprun.training.trainer import Trainer
from deeprun.training.transfer import Donor


class _Monitor:
    """The best epoch so far of early stopping's monitored metric (:mod:`deeprun.monitor`'s rule)."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        self.monitor, self.min_delta = monitor, min_delta
        self.mode = monitor_mode(monitor, mode)
        self.best_value = initial_best(self.mode)
        self.best_epoch: int | None = None
        self.wait = 0

    def improved(self, value: float) -> bool:
        return improved(value, self.best_value, self.mode, self.min_delta)


def _copy(tree):
    """A copy that survives the donation of the original buffers to the next epoch."""
    return jax.tree.map(jnp.copy, tree)


class _RunTracker:
    """Host-side bookkeeping of one run: history, early stopping, plateau rule, divergence."""

    def __init__(self, settings: Settings, plateau, callbacks: Sequence[EpochCallback]):
        early = settings.trainer.early_stopping
        self.early = early
        self.monitor = _Monitor(early.monitor, early.mode, early.min_delta)
        self.plateau = plateau
        self.plateau_state = plateau.initial_state() if plateau is not None else None
        self.callbacks = callbacks
        self.history: list[dict[str, Any]] = []
        self.status, self.diverged_epoch = "running", None
        self.best_weights: tuple[nnx.State, nnx.State] | None = None
        self.final_state: TrainState | None = None
        self.batch_losses: list[np.ndarray] = []
        self.resumed_at: list[int] = []

    @property
    def running(self) -> bool:
        return self.status == "running"

    def progress(self) -> dict[str, Any]:
        """The host-side counters a resumed run needs (JSON-able: an infinite best is None)."""
        monitor = self.monitor
        return {
            "history": list(self.history),  # a copy: savers may write it after the next epoch began
            "best_value": monitor.best_value if math.isfinite(monitor.best_value) else None,
            "best_epoch": monitor.best_epoch,
            "wait": monitor.wait,
            "plateau": self.plateau_state.as_dict() if self.plateau_state is not None else None,
            "resumed_at": list(self.resumed_at),
        }

    def resume(self, point: ResumePoint) -> None:
        """Continue from ``point`` (saved by an earlier process at the end of an epoch)."""
        progress, monitor = point.progress, self.monitor
        self.history = list(progress["history"])
        if progress["best_value"] is not None:
            monitor.best_value = progress["best_value"]
        monitor.best_epoch, monitor.wait = progress["best_epoch"], progress["wait"]
        if self.plateau is not None:
            self.plateau_state = PlateauState.from_dict(progress["plateau"])
        self.best_weights = point.best_weights
        self.resumed_at = [*progress["resumed_at"], len(self.history)]

    def end_epoch(self, record: dict[str, Any], state: TrainState) -> float | None:
        """Record an epoch of this run (``state``: its unstacked state). Returns a new learning rate
        when the plateau rule changes it; sets ``status`` when the run ends."""
        epoch = record["epoch"]
        self.history.append(record)
        for callback in self.callbacks:
            callback(record)
        if not all(math.isfinite(record[k]) for k in ("train/loss", "val/loss")):
            self.status, self.diverged_epoch, self.final_state = "diverged", epoch, state
            return None
        new_lr = None
        if self.plateau is not None:
            self.plateau_state, lr = self.plateau.update(self.plateau_state, record["lr"], record[self.plateau.monitor])
            new_lr = lr if lr != record["lr"] else None
        # Keras EarlyStopping: wait counts epochs since the last improvement.
        monitor, early = self.monitor, self.early
        monitor.wait += 1
        if monitor.improved(record[monitor.monitor]):
            monitor.best_value, monitor.best_epoch, monitor.wait = record[monitor.monitor], epoch, 0
            if early.enabled and early.restore_best:
                self.best_weights = _copy((state.params, state.batch_stats))
        elif early.enabled and monitor.wait >= early.patience and epoch > 1:
            self.status = "stopped_early"
            if self.best_weights is not None:
                state = state._replace(params=self.best_weights[0], batch_stats=self.best_weights[1])
            self.final_state = _copy(state)
        return new_lr

    def finish(self, state: TrainState) -> None:
        if self.running:
            self.status = "completed"
        if self.final_state is None:  # completed or interrupted: the last epoch's state
            self.final_state = state


class StopRequest:
    """Set (by a command's signal handler) to stop training cleanly after the current epoch: each
    still-running run ends ``interrupted`` with its state saved."""

    requested = False


def fit(
    settings: Settings,
    dataset,
    callbacks: Sequence[EpochCallback] = (),
    saver: EpochSaver | None = None,
    resume_from: ResumePoint | None = None,
    stop: StopRequest | None = None,
    donor: Donor | None = None,
) -> TrainResult:
    """Train ``settings`` on ``dataset`` and evaluate on its test split.

    ``callbacks`` are called with each epoch's record (``epoch``, ``step``, ``lr``, ``train/loss``,
    ``train/accuracy``, ``val/loss``, ``val/accuracy``, ``epoch_time_s``; with ``trainer.diagnostics``
    also ``diagnostics``, the rows of :func:`layer_records`) as soon as it is known.
    ``saver`` receives a :class:`ResumePoint` after every epoch the run goes on from; ``resume_from``
    is the point (saved by an earlier process) to continue from.
    ``stop``, once requested, ends the run after the current epoch (status ``interrupted``); ``donor``
    holds ``model.init_from``'s trained variables.
    """
    return fit_many([settings], dataset, [callbacks], [saver], [resume_from], stop, [donor])[0]


def fit_many(
    runs: Sequence[Settings],
    dataset,
    callbacks: Sequence[Sequence[EpochCallback]] | None = None,
    savers: Sequence[EpochSaver | None] | None = None,
    resume_from: Sequence[ResumePoint | None] | None = None,
    stop: StopRequest | None = None,
    donors: Sequence[Donor | None] | None = None,
    batched: bool = False,
    compiling: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    steps_done: Callable[[int], None] | None = None,
) -> list[TrainResult]:
    """Train several runs that differ only in numbers as one compiled program; each run's numbers are
    the same as alone (``batched``: the members under ``jax.vmap``, faster, numbers to float tolerance).

    The runs must share the data, the model structure, the optimizer and schedule kinds, the selected
    regularizers and the trainer's shape settings (see ``deeprun.sweeps.fusion``); each gets its own result.
    ``savers``, ``resume_from`` and ``donors`` (one per run) and ``stop`` are as in :func:`fit`; runs
    that resume all resume from the same epoch, so a fused group continues as one program.
    ``compiling``: a context manager the epoch program is traced and compiled in (a command's feedback);
    ``steps_done``: progress within each epoch, called on the host with a count of steps done (see
    :class:`~deeprun.training.trainer.Trainer`; the numbers are the same with or without it).
    """
    first = runs[0]
    callbacks = callbacks or [() for _ in runs]
    savers = savers or [None for _ in runs]
    fused = len(runs) > 1
    points = [point for point in (resume_from or []) if point is not None]
    if points and (len(points) != len(runs) or len({len(p.progress["history"]) for p in points}) > 1):
        raise ValueError("resume_from: every run of a fused group resumes, from the same epoch")
    trainer = Trainer(
        first,
        len(dataset.y_train),
        dataset.n_features,
        dataset.n_classes,
        members=len(runs),
        batched=batched,
        steps_done=steps_done,
    )
    donors = donors or [None for _ in runs]
    members = [trainer.init(settings, donor) for settings, donor in zip(runs, donors, strict=True)]
    params_count = count_parameters(trainer.model(members[0][0]))
    plateaus = [run_member.schedule.plateau for _, run_member in members]
    state, member = trainer.place(stack(members) if fused else members[0])
    del members  # their arrays now belong to the (donated) training state
    trackers = [
        _RunTracker(settings, plateau, run_callbacks)
        for settings, plateau, run_callbacks in zip(runs, plateaus, callbacks, strict=True)
    ]
    if points:
        for tracker, point in zip(trackers, points, strict=True):
            tracker.resume(point)
        state = trainer.place(stack([p.state for p in points]) if fused else points[0].state)

    data = trainer.place(DeviceData.of(dataset))
    data_shape = {
        "name": dataset.name,
        "n_train": len(dataset.y_train),
        "n_features": dataset.n_features,
        "n_classes": dataset.n_classes,
        "fingerprint": dataset.fingerprint,
    }
    start = time.perf_counter()
    phases = first.trainer.phases
    masks = [trainer.trainable_mask(phase) for phase in phases]
    with compiling() if compiling is not None else contextlib.nullcontext():  # the caller's feedback
        lowered = trainer.epoch_fn.lower(state, member, data, jnp.int32(0), masks[0] if masks else None)
        trace_time_s = time.perf_counter() - start
        compiled = lowered.compile()  # served by the persistent compilation cache when enabled

    compile_time_s = time.perf_counter() - start - trace_time_s
    loop = _EpochLoop(
        first.trainer,
        len(runs) if fused else None,
        compiled,
        member,
        data,
        phases,
        masks,
        trackers,
        savers,
        trainer.place,
        trainer.fresh_optimizer_state,
        stop,
    )
    state = loop.run(state, start_epoch=len(trackers[0].history))
    return _results(runs, trackers, trainer, state, fused, data, data_shape, params_count, trace_time_s, compile_time_s)


@dataclass
class _EpochLoop:
    """The host's epoch loop: run the compiled epoch, hand each run's record to its tracker, save."""

    trainer: Any  # TrainerSettings
    members: int | None  # None: one run, unstacked
    compiled: Any
    member: Member
    data: DeviceData
    phases: Sequence[Any]
    masks: Sequence[nnx.State]
    trackers: Sequence[_RunTracker]
    savers: Sequence[EpochSaver | None]
    place: Callable[[Any], Any]  # host-made values (a new learning rate) go where the compiled program expects
    fresh_optimizer_state: Callable[[TrainState], TrainState]
    stop: StopRequest | None = None

    def run_state(self, state: TrainState, index: int) -> TrainState:
        return state if self.members is None else unstack(state, index)

    def run(self, state: TrainState, start_epoch: int) -> TrainState:
        fused = self.members is not None
        for epoch in range(start_epoch, self.trainer.epochs):
            start = time.perf_counter()
            state, trainable = self._enter_phase(state, epoch)
            state, metrics = self.compiled(state, self.member, self.data, jnp.int32(epoch), trainable)
            metrics = jax.device_get(metrics)
            batch_losses = metrics.pop("batch/loss")
            diagnostics = metrics.pop("diagnostics", None)
            steps = jax.device_get(state.step)
            epoch_time = time.perf_counter() - start
            new_lrs = {}
            for index, tracker in enumerate(self.trackers):
                if not tracker.running:
                    continue
                values = {k: float(v[index] if fused else v) for k, v in metrics.items()}
                tracker.batch_losses.append(batch_losses[index] if fused else batch_losses)
                record: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "step": int(steps[index] if fused else steps),
                    "lr": values.pop("lr"),
                    **values,
                    "epoch_time_s": epoch_time,
                }
                if diagnostics is not None:
                    record["diagnostics"] = layer_records(diagnostics[index] if fused else diagnostics)
                new_lr = tracker.end_epoch(record, self.run_state(state, index))
                if new_lr is not None:
                    new_lrs[index] = new_lr
            if new_lrs:
                state = state._replace(opt_state=self.place(_set_learning_rates(state.opt_state, new_lrs, fused)))
            self._save(state)
            if self.stop is not None and self.stop.requested:
                for tracker in self.trackers:
                    if tracker.running:
                        tracker.status = "interrupted"
            if not any(tracker.running for tracker in self.trackers):
                break
        return state

    def _enter_phase(self, state: TrainState, epoch: int) -> tuple[TrainState, nnx.State | None]:
        """The trainable mask of ``epoch``'s phase; at a later phase's first epoch a fresh optimizer
        state (as Keras's new ``compile``), unless the phase keeps it, and the phase's learning rate."""
        if not self.phases:
            return state, None
        index, phase = self.trainer.phase_at(epoch)
        starts = epoch == sum(p.epochs for p in self.phases[:index])
        if starts and index > 0 and not phase.keep_optimizer_state:
            state = self.fresh_optimizer_state(state)
        if phase.learning_rate is not None and starts:
            lr = phase.learning_rate if self.members is None else jnp.full((self.members,), phase.learning_rate)
            state = state._replace(opt_state=self.place(with_hyperparams(state.opt_state, learning_rate=lr)))
        return state, self.masks[index]

    def _save(self, state: TrainState) -> None:
        """Hand each still-running run's resume point to its saver (copies: ``state`` is donated next)."""
        for index, (tracker, saver) in enumerate(zip(self.trackers, self.savers, strict=True)):
            if saver is not None and tracker.running:
                run_state = _copy(state) if self.members is None else unstack(state, index)
                saver(ResumePoint(run_state, tracker.best_weights, tracker.progress()))


def _results(
    runs, trackers, trainer, state, fused, data, data_shape, params_count, trace_time_s, compile_time_s
) -> list[TrainResult]:
    results = []
    for index, (settings, tracker) in enumerate(zip(runs, trackers, strict=True)):
        tracker.finish(unstack(state, index) if fused else state)
        final = tracker.final_state
        regularization = settings.regularization
        test = None
        if tracker.status != "diverged":
            test = trainer.evaluate(final, regularization, data.scaling, data.pixels_test, data.y_test)
        epoch_times = [r["epoch_time_s"] for r in tracker.history[1:]]
        best_epoch = tracker.monitor.best_epoch
        results.append(
            TrainResult(
                status=tracker.status,
                history=tracker.history,
                best_epoch=best_epoch,
                best=tracker.history[best_epoch - 1] if best_epoch else None,
                test=test,
                params=params_count,
                trace_time_s=trace_time_s,
                compile_time_s=compile_time_s,
                steady_epoch_time_s=float(np.median(epoch_times)) if epoch_times else None,
                model=trainer.model(final),
                state=final,
                data=data_shape,
                batch_losses=np.concatenate(tracker.batch_losses) if tracker.batch_losses else None,
                diverged_epoch=tracker.diverged_epoch,
                resumed_at=tuple(tracker.resumed_at),
            )
        )
    return results


def _set_learning_rates(opt_state: optax.OptState, new_lrs: dict[int, float], fused: bool) -> optax.OptState:
    """Set the learning rate of the given runs (plateau reductions) in the (stacked) optimizer state."""
    if not fused:
        return with_hyperparams(opt_state, learning_rate=new_lrs[0])
    lr = learning_rate_of(opt_state)
    for index, value in new_lrs.items():
        lr = lr.at[index].set(value)
    return with_hyperparams(opt_state, learning_rate=lr)
