"""Regularizers (config group ``regularizer``; several may be selected at once), with Keras semantics.

The group's config is a mapping ``{option name: fields}``: ``regularizer=[l2,dropout]`` selects both,
``regularizer.l2.factor=0.05`` tunes one. :func:`build_regularization` validates the options, rejects
conflicting pairs and folds them into one :class:`Regularization` the model and trainer consume.

- ℓ1/ℓ2 (Keras ``regularizers.l1/l2``): penalty f·Σ|w| and f·Σw² (**no ½**) on every Dense kernel,
  added to the training loss and to the reported train *and* validation loss.
- Dropout: inverted dropout, kept units scaled by 1/(1 − rate), only while training.
- Alpha dropout (SELU nets): with α' = −scale·α, keep q = 1 − rate,
  a = (q·(1 + rate·α'²))^(−½), b = −a·α'·rate, y = a·(x·m + α'·(1 − m)) + b.
- Max-norm (Keras ``constraints.max_norm``): after every update each hidden kernel's column
  (axis 0: the incoming weights of one unit) is rescaled by clip(‖w‖, 0, r)/(1e-7 + ‖w‖).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp

from deeprun.registry import (
    ConfigError,
    Registry,
    from_mapping,
    numeric_pytree,
    require_in_unit_interval,
    require_non_negative,
    require_positive,
)
from deeprun.techniques.activations import SELU_ALPHA, SELU_SCALE

REGULARIZERS: Registry[Any] = Registry("regularizer")

Placement = Literal["all", "output"]


@REGULARIZERS.register("l1")
@dataclass(frozen=True)
class L1:
    factor: float = 0.01

    def __post_init__(self) -> None:
        require_non_negative("regularizer.l1.factor", self.factor)


@REGULARIZERS.register("l2")
@dataclass(frozen=True)
class L2:
    factor: float = 0.01

    def __post_init__(self) -> None:
        require_non_negative("regularizer.l2.factor", self.factor)


@REGULARIZERS.register("l1_l2")
@dataclass(frozen=True)
class L1L2:
    l1: float = 0.01
    l2: float = 0.01

    def __post_init__(self) -> None:
        require_non_negative("regularizer.l1_l2.l1", self.l1)
        require_non_negative("regularizer.l1_l2.l2", self.l2)


@REGULARIZERS.register("dropout")
@numeric_pytree(data=["rate"], meta=["placement"])
@dataclass(frozen=True)
class Dropout:
    """``placement: all`` drops the inputs and every hidden layer's outputs (before each Dense)."""

    rate: float = 0.2
    placement: Placement = "all"

    def __post_init__(self) -> None:
        require_in_unit_interval("regularizer.dropout.rate", self.rate)

    def __call__(self, x: jax.Array, key: jax.Array) -> jax.Array:
        return dropout(x, self.rate, key)


@REGULARIZERS.register("alpha_dropout")
@numeric_pytree(data=["rate"], meta=["placement"])
@dataclass(frozen=True)
class AlphaDropout:
    """Defaults to the exercise's use: one AlphaDropout before the output layer."""

    rate: float = 0.1
    placement: Placement = "output"

    def __post_init__(self) -> None:
        require_in_unit_interval("regularizer.alpha_dropout.rate", self.rate)

    def __call__(self, x: jax.Array, key: jax.Array) -> jax.Array:
        return alpha_dropout(x, self.rate, key)


@REGULARIZERS.register("max_norm")
@numeric_pytree(data=["max_value"], meta=["axis"])
@dataclass(frozen=True)
class MaxNorm:
    max_value: float = 1.0
    axis: int = 0

    def __post_init__(self) -> None:
        require_positive("regularizer.max_norm.max_value", self.max_value)

    def __call__(self, kernel: jax.Array) -> jax.Array:
        return max_norm(kernel, self.max_value, self.axis)


def dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """Inverted dropout: keep each unit with probability 1 − rate and scale it by 1/(1 − rate)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def alpha_dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """Keras ``AlphaDropout``: dropped units are set to SELU's saturation value α', then an affine
    map a·x + b restores zero mean and unit variance."""
    saturation = -SELU_ALPHA * SELU_SCALE
    keep_prob = 1.0 - rate
    a = (keep_prob * (1.0 + rate * saturation**2)) ** -0.5
    b = -a * saturation * rate
    keep = jax.random.bernoulli(key, keep_prob, x.shape)
    return a * jnp.where(keep, x, saturation) + b


def max_norm(kernel: jax.Array, max_value: float, axis: int = 0) -> jax.Array:
    """Rescale ``kernel`` so the L2 norm along ``axis`` is at most ``max_value`` (Keras formula)."""
    norms = jnp.sqrt(jnp.sum(jnp.square(kernel), axis=axis, keepdims=True))
    return kernel * (jnp.clip(norms, 0, max_value) / (1e-7 + norms))


@numeric_pytree(data=["l1", "l2", "dropout", "max_norm"])
@dataclass(frozen=True)
class Regularization:
    """All selected regularizers, merged: penalty factors (None: not selected), the stochastic layer
    and the constraint. A pytree, so the numbers of several runs can be stacked."""

    l1: float | None = None
    l2: float | None = None
    dropout: Dropout | AlphaDropout | None = None
    max_norm: MaxNorm | None = None

    def penalty(self, kernels: list[jax.Array]) -> jax.Array:
        """l1·Σ|w| + l2·Σw² over the given kernels (0 when neither is selected)."""
        total = jnp.zeros((), jnp.float32)
        for kernel in kernels:
            if self.l1 is not None:
                total += self.l1 * jnp.sum(jnp.abs(kernel))
            if self.l2 is not None:
                total += self.l2 * jnp.sum(jnp.square(kernel))
        return total


# Pairs that cannot be combined: they set the same thing twice, or fight each other.
_CONFLICTS = [
    ({"l1", "l1_l2"}, "l1_l2 already sets the l1 penalty"),
    ({"l2", "l1_l2"}, "l1_l2 already sets the l2 penalty"),
    ({"dropout", "alpha_dropout"}, "use dropout for ReLU-family nets or alpha_dropout for SELU nets, not both"),
]


def build_regularization(config: Mapping[str, Mapping[str, Any] | None] | None) -> Regularization:
    """Validate ``{name: fields}`` (``none`` or an empty mapping: no regularization) and merge it."""
    selected = {name: dict(values or {}) for name, values in (config or {}).items() if name != "none"}
    options = {}
    for name, values in selected.items():
        options[name] = from_mapping(REGULARIZERS.get(name), values, f"regularizer.{name}")
    for pair, reason in _CONFLICTS:
        if pair <= options.keys():
            first, second = sorted(pair)
            raise ConfigError(f"regularizer: {first} and {second} conflict: {reason}")
    l1 = options["l1"].factor if "l1" in options else options["l1_l2"].l1 if "l1_l2" in options else None
    l2 = options["l2"].factor if "l2" in options else options["l1_l2"].l2 if "l1_l2" in options else None
    stochastic = options.get("dropout") or options.get("alpha_dropout")
    return Regularization(l1=l1, l2=l2, dropout=stochastic, max_norm=options.get("max_norm"))
