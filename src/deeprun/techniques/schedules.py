"""Learning-rate schedules of chapter 11: constant, power, exponential, piecewise, performance, 1cycle.

Each option of the ``schedule`` config group is a frozen dataclass registered in :data:`SCHEDULES`. Its
rate fields default to ``None``, meaning "derive from the optimizer's learning rate", so every optimizer ×
schedule pair trains sensibly without overrides. :meth:`resolve` turns an option into a :class:`Schedule`:
pure functions of the training counters, usable inside ``jax.jit`` and ``lax.scan``.

Counters: ``step`` is the number of completed optimizer steps (the lr used by the next update), ``epoch``
the 0-based index of the current epoch, constant within it (Keras's ``LearningRateScheduler`` sets the
lr at epoch begin). An option's ``unit`` says which of the two its formula reads.

``performance`` (ReduceLROnPlateau) cannot be a function of the counters: it reacts to validation
metrics, so its lr lives in the optimizer state and :class:`PlateauRule` changes it on the host at the
end of each epoch.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from deeprun.monitor import Monitor, improved, initial_best, monitor_mode
from deeprun.registry import (
    Registry,
    require,
    require_in_unit_interval,
    require_non_negative,
    require_positive,
)

SCHEDULES: Registry[Any] = Registry("schedule")

Unit = Literal["step", "epoch"]


# --------------------------------------------------------------------------------------------------
# Pure rate functions of the counter t
# --------------------------------------------------------------------------------------------------


def constant_rate(t: jax.Array, value: float) -> jax.Array:
    """η(t) = value."""
    return jnp.full(jnp.shape(t), value, jnp.float32)


def power_decay(t: jax.Array, initial_lr: float, decay_steps: float, power: float) -> jax.Array:
    """η(t) = η0 / (1 + t/s)^c."""
    return initial_lr / (1 + t / decay_steps) ** power


def exponential_decay(
    t: jax.Array, initial_lr: float, decay_rate: float, decay_steps: float, staircase: bool
) -> jax.Array:
    """η(t) = η0 · r^(t/s), or η0 · r^⌊t/s⌋ with ``staircase``."""
    exponent = t / decay_steps
    exponent = jnp.where(staircase, jnp.floor(exponent), exponent)
    return initial_lr * decay_rate**exponent


def piecewise_constant(
    t: jax.Array,
    boundaries: tuple[float, ...],
    values: tuple[float, ...],
    switch_at_boundary: bool,
) -> jax.Array:
    """η(t) = values[i] on the i-th interval between ``boundaries``.

    switch_at_boundary=True  — values[i] while t <  boundaries[i] (the book's per-epoch callback);
    switch_at_boundary=False — values[i] while t <= boundaries[i] (tf ``PiecewiseConstantDecay``).
    """
    edges = jnp.asarray(boundaries, jnp.float32)
    passed = jnp.where(switch_at_boundary, t >= edges, t > edges)
    return jnp.asarray(values, jnp.float32)[jnp.sum(passed)]


def linear_interpolation(t: jax.Array, t0: int, t1: int, v0: float, v1: float) -> jax.Array:
    """v0 + (v1 − v0)·(t − t0)/(t1 − t0), written as v0·(t1 − t)/(t1 − t0) + v1·(t − t0)/(t1 − t0).

    The weighted form hits v1 exactly at t1 in float32 (the other form loses ~1e-9 to cancellation,
    a relative 1e-4 when v1 is 1cycle's tiny last_lr). An empty segment (t1 = t0) is never selected.
    """
    length = jnp.maximum(t1 - t0, 1)
    return v0 * ((t1 - t) / length) + v1 * ((t - t0) / length)


def one_cycle(t: jax.Array, half: int, iterations: int, start: float, peak: float, end: float) -> jax.Array:
    """The book's OneCycleScheduler shape, linear between the points

    (0, start) → (half, peak) → (2·half, start) → (iterations, end),  then `end` for t ≥ iterations.
    """
    t = jnp.minimum(t, iterations)
    return jnp.where(
        t < half,
        linear_interpolation(t, 0, half, start, peak),
        jnp.where(
            t < 2 * half,
            linear_interpolation(t, half, 2 * half, peak, start),
            linear_interpolation(t, 2 * half, iterations, start, end),
        ),
    )


# --------------------------------------------------------------------------------------------------
# ReduceLROnPlateau, host side
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PlateauState:
    """Keras ReduceLROnPlateau's counters: best monitored value, epochs without improvement, cooldown."""

    best: float
    wait: int = 0
    cooldown_counter: int = 0

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PlateauState:
        return cls(
            best=float(values["best"]),
            wait=int(values["wait"]),
            cooldown_counter=int(values["cooldown_counter"]),
        )


@dataclasses.dataclass(frozen=True)
class PlateauRule:
    """Keras ``ReduceLROnPlateau.on_epoch_end``, as a pure function of (state, lr, monitored value)."""

    monitor: str
    mode: Literal["min", "max"]
    factor: float
    patience: int
    min_delta: float
    cooldown: int
    min_lr: float

    def initial_state(self) -> PlateauState:
        return PlateauState(best=initial_best(self.mode))

    def update(self, state: PlateauState, lr: float, value: float) -> tuple[PlateauState, float]:
        """One epoch end: returns the new state and the lr for the next epoch.

        The cooldown counter is decremented first, so `cooldown` epochs after a reduction are not
        counted towards the patience.
        """
        best, wait, cooldown_counter = state.best, state.wait, state.cooldown_counter
        if cooldown_counter > 0:
            cooldown_counter -= 1
            wait = 0
        if improved(value, best, self.mode, self.min_delta):
            best, wait = value, 0
        elif cooldown_counter == 0:
            wait += 1
            if wait >= self.patience and lr > self.min_lr:
                lr = max(lr * self.factor, self.min_lr)
                cooldown_counter, wait = self.cooldown, 0
        return PlateauState(best=best, wait=wait, cooldown_counter=cooldown_counter), lr


# --------------------------------------------------------------------------------------------------
# Resolved schedule
# --------------------------------------------------------------------------------------------------


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["rate_args", "momentum_args"],
    meta_fields=["rate_fn", "unit", "momentum_fn", "plateau"],
)
@dataclasses.dataclass(frozen=True)
class Schedule:
    """A resolved schedule: pure, jit-friendly functions of (step, epoch).

    The rate is ``rate_fn(t, **rate_args)`` with t the counter named by ``unit`` (likewise the
    momentum). The numeric arguments are pytree leaves and the functions static, so the schedules of
    several runs that differ only in numbers stack into one schedule with batched leaves (``jax.vmap``
    then trains them together). ``rate_fn`` is None when the lr is not a function of the counters
    (``performance``: then ``plateau`` says how the host changes it).
    """

    rate_fn: Callable[..., jax.Array] | None
    rate_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    unit: Unit = "step"
    momentum_fn: Callable[..., jax.Array] | None = None
    momentum_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    plateau: PlateauRule | None = None

    @property
    def sets_learning_rate(self) -> bool:
        return self.rate_fn is not None

    def _counter(self, step: jax.Array | int, epoch: jax.Array | int) -> jax.Array:
        return jnp.asarray(step if self.unit == "step" else epoch, jnp.float32)

    def learning_rate(self, step: jax.Array | int, epoch: jax.Array | int) -> jax.Array:
        """The lr of the next update (float32 scalar)."""
        if self.rate_fn is None:
            raise ValueError(
                "this schedule does not set the learning rate from the counters "
                "(ReduceLROnPlateau changes it in the optimizer state between epochs)"
            )
        return self.rate_fn(self._counter(step, epoch), **self.rate_args).astype(jnp.float32)

    def momentum(self, step: jax.Array | int, epoch: jax.Array | int) -> jax.Array | None:
        """The momentum-like hyperparameter of the next update, or None when not cycled."""
        if self.momentum_fn is None:
            return None
        return self.momentum_fn(self._counter(step, epoch), **self.momentum_args).astype(jnp.float32)


def learning_rate_curve(schedule: Schedule, steps_per_epoch: int, epochs: int) -> np.ndarray:
    """The lr used at each of the ``steps_per_epoch·epochs`` steps (for plots and tests)."""
    steps = jnp.arange(steps_per_epoch * epochs)
    return np.asarray(jax.vmap(schedule.learning_rate)(steps, steps // steps_per_epoch))


# --------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------


def _require_positive_if_set(name: str, value: float | None) -> None:
    if value is not None:
        require_positive(f"schedule.{name}", value)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


@SCHEDULES.register("constant")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Constant:
    """η(t) = learning_rate. Left null, the rate is the optimizer's own and stays in its state, where
    only a training phase (``trainer.phases[i].learning_rate``) changes it."""

    learning_rate: float | None = None

    def __post_init__(self) -> None:
        _require_positive_if_set("learning_rate", self.learning_rate)

    def resolve(self, base_lr: float, steps_per_epoch: int, epochs: int) -> Schedule:
        if self.learning_rate is None:
            return Schedule(rate_fn=None)
        return Schedule(constant_rate, {"value": self.learning_rate})


@SCHEDULES.register("power")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Power:
    """Power scheduling η(t) = η0/(1 + t/s)^c. Keras legacy SGD(decay=d) is s = 1/d, c = 1."""

    initial_lr: float | None = None
    decay_steps: float = 10_000
    power: float = 1.0
    unit: Unit = "step"

    def __post_init__(self) -> None:
        _require_positive_if_set("initial_lr", self.initial_lr)
        require_positive("schedule.decay_steps", self.decay_steps)
        require_non_negative("schedule.power", self.power)

    def resolve(self, base_lr: float, steps_per_epoch: int, epochs: int) -> Schedule:
        args = {"initial_lr": _or(self.initial_lr, base_lr), "decay_steps": self.decay_steps, "power": self.power}
        return Schedule(power_decay, args, unit=self.unit)


@SCHEDULES.register("exponential")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Exponential:
    """Exponential scheduling η(t) = η0·r^(t/s) (``staircase``: r^⌊t/s⌋).

    The book's per-epoch callback is unit=epoch, decay_steps=20.
    """

    initial_lr: float | None = None
    decay_rate: float = 0.1
    decay_steps: float = 20_000
    staircase: bool = False
    unit: Unit = "step"

    def __post_init__(self) -> None:
        _require_positive_if_set("initial_lr", self.initial_lr)
        require_positive("schedule.decay_rate", self.decay_rate)
        require_positive("schedule.decay_steps", self.decay_steps)

    def resolve(self, base_lr: float, steps_per_epoch: int, epochs: int) -> Schedule:
        args = {
            "initial_lr": _or(self.initial_lr, base_lr),
            "decay_rate": self.decay_rate,
            "decay_steps": self.decay_steps,
            "staircase": self.staircase,
        }
        return Schedule(exponential_decay, args, unit=self.unit)


@SCHEDULES.register("piecewise")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Piecewise:
    """Piecewise constant rates: ``values`` (absolute), or base_lr·``factors`` when values is null.

    unit=epoch: values[i] while epoch < boundaries[i] (the book's LearningRateScheduler);
    unit=step:  values[i] while step <= boundaries[i] (tf PiecewiseConstantDecay).
    """

    boundaries: tuple[float, ...] = (5.0, 15.0)
    values: tuple[float, ...] | None = None
    factors: tuple[float, ...] = (1.0, 0.5, 0.1)
    unit: Unit = "epoch"

    def __post_init__(self) -> None:
        increasing = all(a < b for a, b in zip(self.boundaries, self.boundaries[1:]))
        require(increasing, "schedule.boundaries", "must be strictly increasing", self.boundaries)
        name = "factors" if self.values is None else "values"
        rates = getattr(self, name)
        require(
            len(rates) == len(self.boundaries) + 1,
            f"schedule.{name}",
            f"must have len(boundaries) + 1 = {len(self.boundaries) + 1} entries",
            rates,
        )
        for i, rate in enumerate(rates):
            require_positive(f"schedule.{name}[{i}]", rate)

    def resolve(self, base_lr: float, steps_per_epoch: int, epochs: int) -> Schedule:
        values = self.values or tuple(base_lr * factor for factor in self.factors)
        args = {
            "boundaries": np.asarray(self.boundaries, np.float32),
            "values": np.asarray(values, np.float32),
            "switch_at_boundary": self.unit == "epoch",
        }
        return Schedule(piecewise_constant, args, unit=self.unit)


@SCHEDULES.register("performance")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Performance:
    """Performance scheduling (Keras ReduceLROnPlateau): lr ← max(lr·factor, min_lr) when the
    monitored metric has not improved by more than ``min_delta`` for ``patience`` epochs.

    ``mode: auto`` and the improvement test are :mod:`deeprun.monitor`'s.
    """

    monitor: Monitor = "val/loss"
    mode: Literal["min", "max", "auto"] = "auto"
    factor: float = 0.5
    patience: int = 5
    min_delta: float = 1e-4
    cooldown: int = 0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        require(0 < self.factor < 1, "schedule.factor", "must be in (0, 1)", self.factor)
        require_non_negative("schedule.patience", self.patience)
        require_non_negative("schedule.min_delta", self.min_delta)
        require_non_negative("schedule.cooldown", self.cooldown)
        require_non_negative("schedule.min_lr", self.min_lr)

    def resolve(self, base_lr: float, steps_per_epoch: int, epochs: int) -> Schedule:
        rule = PlateauRule(
            monitor=self.monitor,
            mode=monitor_mode(self.monitor, self.mode),
            factor=self.factor,
            patience=self.patience,
            min_delta=self.min_delta,
            cooldown=self.cooldown,
            min_lr=self.min_lr,
        )
        return Schedule(rate_fn=None, plateau=rule)


@dataclasses.dataclass(frozen=True)
class OneCyclePlan:
    """1cycle's derived constants (iterations, phase lengths and rates)."""

    iterations: int
    last_iterations: int
    half: int
    start_lr: float
    max_lr: float
    last_lr: float


@SCHEDULES.register("1cycle")
@dataclasses.dataclass(frozen=True, kw_only=True)
class OneCycle:
    """The book's OneCycleScheduler, set at batch begin with t = completed steps:

    lr: start_lr → max_lr over [0, half), → start_lr over [half, 2·half), → last_lr over
    [2·half, iterations), last_lr after. Defaults: iterations = epochs·steps_per_epoch,
    max_lr = the optimizer's lr, start_lr = max_lr/10, last_iterations = iterations//10 + 1,
    half = (iterations − last_iterations)//2, last_lr = start_lr/1000.
    With ``cycle_momentum`` (book text, not its code): momentum max → min over the first half,
    → max over the second, max after.
    """

    iterations: int | None = None
    max_lr: float | None = None
    start_lr: float | None = None
    last_iterations: int | None = None
    last_lr: float | None = None
    cycle_momentum: bool = False
    max_momentum: float = 0.95
    min_momentum: float = 0.85

    def __post_init__(self) -> None:
        for name in ("iterations", "max_lr", "start_lr", "last_iterations", "last_lr"):
            _require_positive_if_set(name, getattr(self, name))
        require_in_unit_interval("schedule.max_momentum", self.max_momentum)
        require_in_unit_interval("schedule.min_momentum", self.min_momentum)
        require(
            self.min_momentum <= self.max_momentum,
            "schedule.min_momentum",
            f"must be <= max_momentum ({self.max_momentum})",
            self.min_momentum,
        )

    def plan(self, base_lr: float, steps_per_epoch: int, epochs: int) -> OneCyclePlan:
        iterations = self.iterations or epochs * steps_per_epoch
        require_positive("schedule.iterations", iterations)
        last_iterations = self.last_iterations or iterations // 10 + 1
        require(
            last_iterations <= iterations,
            "schedule.last_iterations",
            f"must be <= iterations ({iterations})",
            last_iterations,
        )
        max_lr = _or(self.max_lr, base_lr)
        start_lr = _or(self.start_lr, max_lr / 10)
        last_lr = _or(self.last_lr, start_lr / 1000)
        require(
            start_lr <= max_lr,
            "schedule.start_lr",
            f"must be <= max_lr ({max_lr:g}): 1cycle rises to its peak",
            start_lr,
        )
        require(last_lr <= max_lr, "schedule.last_lr", f"must be <= max_lr ({max_lr:g})", last_lr)
        return OneCyclePlan(
            iterations=iterations,
            last_iterations=last_iterations,
            half=(iterations - last_iterations) // 2,
            start_lr=start_lr,
            max_lr=max_lr,
            last_lr=last_lr,
        )

    def resolve(self, base_lr: float, steps_per_epoch: int, epochs: int) -> Schedule:
        plan = self.plan(base_lr, steps_per_epoch, epochs)
        phases = {"half": plan.half, "iterations": plan.iterations}
        rate_args = {**phases, "start": plan.start_lr, "peak": plan.max_lr, "end": plan.last_lr}
        if not self.cycle_momentum:
            return Schedule(one_cycle, rate_args, unit="step")
        momentum_args = {**phases, "start": self.max_momentum, "peak": self.min_momentum, "end": self.max_momentum}
        return Schedule(one_cycle, rate_args, unit="step", momentum_fn=one_cycle, momentum_args=momentum_args)
