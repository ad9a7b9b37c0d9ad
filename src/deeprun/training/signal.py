"""``deeprun-signal [initializer=lecun_normal] [activation=selu] [layers=1000] [width=100] [every=100]
[batch=500] [seed=42]``: the book's self-normalization demo for any initializer × activation.

A batch of standardized random inputs x₀ ~ N(0, 1) of shape (batch, width) goes through ``layers``
bias-free Dense layers at initialization, x_l = f(x_{l−1} W_l) with a fresh W_l (width × width) drawn
from the initializer at each layer, and the statistics of each layer's output are recorded. ``mean`` and
``std`` are the book's: per unit over the batch, then averaged over the units,

    mean_l = (1/n) Σ_j mean_b(x_l[b, j]),    std_l = (1/n) Σ_j std_b(x_l[b, j]),

and ``rms_l = √(mean over batch and units of x_l²)`` is the second moment that He/Glorot/LeCun
initialization is designed to preserve. SELU with LeCun init keeps mean ≈ 0 and std ≈ 1 over 1000
layers (its fixed point is attracting); sigmoid with a normal init drifts to mean 0.5 and std → 0; ReLU
with He init keeps E[x²] in expectation, but at finite width its scale random-walks and its units grow
correlated across the batch, so ``std`` shrinks well before ``rms`` does.

The layers run in one compiled ``lax.scan``. Writes ``signal.csv`` (every layer), ``signal.json`` (the
options and the table of every ``every``-th layer) and ``signal.png`` to
``outputs/signal/<initializer>-<activation>/<time>/``, and prints the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from deeprun.registry import require_non_negative, require_positive
from deeprun.techniques.activations import ActivationSpec
from deeprun.techniques.initializers import Initializer
from deeprun.training.diagnostics import layer_statistics

STATISTICS = ("mean", "std", "rms")


@dataclass(frozen=True)
class SignalOptions:
    """The demo's sizes; the defaults are the book's (1000 layers of 100 units, a batch of 500)."""

    layers: int = 1000
    width: int = 100
    batch: int = 500
    every: int = 100
    seed: int = 42

    def __post_init__(self) -> None:
        for name in ("layers", "width", "batch", "every"):
            require_positive(name, getattr(self, name))
        require_non_negative("seed", self.seed)


@dataclass(frozen=True)
class SignalStats:
    """Statistics per depth: index 0 is the input, index l the output of layer l."""

    mean: np.ndarray
    std: np.ndarray
    rms: np.ndarray

    @property
    def depths(self) -> np.ndarray:
        return np.arange(len(self.mean))

    def recorded(self, every: int) -> np.ndarray:
        """The depths of the table: 0, every, 2·every, …, and always the last layer."""
        last = len(self.mean) - 1
        return np.unique(np.append(np.arange(0, last + 1, every), last))

    def rows(self, every: int) -> list[dict[str, float]]:
        return [
            {"depth": int(d), **{name: float(getattr(self, name)[d]) for name in STATISTICS}}
            for d in self.recorded(every)
        ]


def propagate(initializer: Initializer, activation: ActivationSpec, options: SignalOptions) -> SignalStats:
    """Push standardized inputs through ``options.layers`` freshly initialized layers."""
    stats = _propagate(
        initializer, activation, options.layers, options.width, options.batch, jax.random.key(options.seed)
    )
    return SignalStats(*np.asarray(stats, dtype=np.float64).T)


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _propagate(
    initializer: Initializer, activation: ActivationSpec, layers: int, width: int, batch: int, key: jax.Array
) -> jax.Array:
    """One compiled ``lax.scan`` over the layers; the specs are static (frozen dataclasses hash by value),
    so another seed reuses the program. Returns the (layers + 1, 3) statistics."""
    init = initializer.build()
    input_key, weights_key = jax.random.split(key)
    x = jax.random.normal(input_key, (batch, width))

    def layer(x, key):
        x = activation.fn(x @ init(key, (width, width)))
        return x, layer_statistics(x)

    _, stats = jax.lax.scan(layer, x, jax.random.split(weights_key, layers))
    return jnp.concatenate([layer_statistics(x)[None], stats])
