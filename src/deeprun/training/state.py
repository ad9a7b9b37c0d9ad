"""The pytrees a training run is made of: state, data on the device, the numbers a fused program reads as data,
the point a run resumes from, and what a finished run produced."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from deeprun.data.base import PixelScaling
from deeprun.models import Network
from deeprun.techniques.precision import LossScale
from deeprun.techniques.regularizers import Regularization
from deeprun.techniques.schedules import Schedule

Metrics = dict[str, float]
EpochCallback = Callable[[dict[str, Any]], None]


class TrainState(NamedTuple):
    """Everything that changes during training (a pytree, donated to each epoch)."""

    params: nnx.State
    batch_stats: nnx.State
    opt_state: optax.OptState
    step: jax.Array
    loss_scale: LossScale | None = None  # float16's dynamic loss scale; None otherwise


class DeviceData(NamedTuple):
    """The dataset as it lives on the device: uint8 pixels (scaled per batch inside the program)."""

    pixels_train: jax.Array
    y_train: jax.Array
    pixels_val: jax.Array
    y_val: jax.Array
    pixels_test: jax.Array
    y_test: jax.Array
    scaling: PixelScaling

    @classmethod
    def of(cls, dataset) -> DeviceData:
        return cls(
            dataset.pixels_train,
            dataset.y_train,
            dataset.pixels_val,
            dataset.y_val,
            dataset.pixels_test,
            dataset.y_test,
            dataset.scaling,
        )


class Member(NamedTuple):
    """The numbers of one run that the compiled program reads as data, not constants: the PRNG key
    (from ``trainer.seed``), the resolved schedule and the regularization. Stacked for fused sweeps;
    the optimizer's learning rate and momentum live in ``TrainState.opt_state``."""

    key: jax.Array
    schedule: Schedule
    regularization: Regularization


class ResumePoint(NamedTuple):
    """A run as it stands at the end of an epoch; training continued from it is the same, bit for bit,
    as training that never stopped: the PRNG keys derive from (seed, epoch, step), the schedule's
    position is the step counter, and the host-side counters are in ``progress``."""

    state: TrainState
    best_weights: tuple[nnx.State, nnx.State] | None  # early stopping's restore_best copy, if any
    progress: dict[str, Any]  # history, early-stopping and plateau counters (JSON-able)


EpochSaver = Callable[[ResumePoint], None]


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    status: str  # completed | stopped_early | diverged | interrupted
    history: list[dict[str, Any]]
    best_epoch: int | None
    best: dict[str, Any] | None
    test: Metrics | None
    params: dict[str, int]
    trace_time_s: float
    compile_time_s: float
    steady_epoch_time_s: float | None
    model: Network
    state: TrainState
    data: dict[str, Any]
    diverged_epoch: int | None = None
    batch_losses: np.ndarray | None = None  # per step of the epochs this process trained
    resumed_at: tuple[int, ...] = ()  # the epochs after which the run was resumed

    @property
    def final(self) -> dict[str, Any] | None:
        return self.history[-1] if self.history else None


def stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree: Any, index: int) -> Any:
    return jax.tree.map(lambda leaf: leaf[index], tree)
