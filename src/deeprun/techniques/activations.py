"""Activation functions (config group ``activation``) with Keras's defaults and the book's formulas.

Each option's ``fn`` is the pure function used at inference (and in plots); ``build`` returns the
layer used in the model. All layers share one call signature, ``layer(x, train=..., key=...)``, so the
randomized (rrelu) and learned (prelu) activations slot in like the stateless ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from deeprun.registry import Registry, require, require_non_negative, require_positive

ACTIVATIONS: Registry[ActivationSpec] = Registry("activation")

# SELU's fixed point constants (Klambauer et al. 2017, eq. 14), as the notebooks compute them.
SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


class Activation(nnx.Module):
    """A stateless activation layer ``z ↦ fn(z)``."""

    def __init__(self, fn: Callable[[jax.Array], jax.Array]):
        self.fn = fn

    def __call__(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None) -> jax.Array:
        return self.fn(x)


@dataclass(frozen=True)
class ActivationSpec:
    """Base: subclasses define ``fn``; ``build`` makes the layer for ``features`` units."""

    def fn(self, x: jax.Array) -> jax.Array:
        raise NotImplementedError

    def build(self, features: int, rngs: nnx.Rngs) -> nnx.Module:
        return Activation(self.fn)


def _stateless(name: str, fn: Callable[[jax.Array], jax.Array], doc: str) -> None:
    cls = type(name.title(), (ActivationSpec,), {"fn": lambda self, x: fn(x), "__doc__": doc})
    ACTIVATIONS.register(name)(dataclass(frozen=True)(cls))


_stateless("sigmoid", jax.nn.sigmoid, "σ(z) = 1/(1+e^(−z)); saturates at both ends (Fig. 11-1).")
_stateless("tanh", jnp.tanh, "tanh(z).")
_stateless("relu", jax.nn.relu, "max(0, z).")
_stateless("mish", lambda x: x * jnp.tanh(jax.nn.softplus(x)), "Mish(z) = z·tanh(softplus(z)).")


def selu(x: jax.Array) -> jax.Array:
    """SELU(z) = scale·ELU_α(z) with the self-normalizing constants."""
    return SELU_SCALE * elu(x, SELU_ALPHA)


_stateless("selu", selu, "SELU(z) = 1.0507·ELU_1.6733(z); self-normalizing with LeCun init.")


def leaky_relu(x: jax.Array, alpha: float | jax.Array) -> jax.Array:
    """LeakyReLU_α(z) = max(αz, z) for 0 ≤ α ≤ 1 (written with ``where`` so it holds for any α)."""
    return jnp.where(x >= 0, x, alpha * x)


def elu(x: jax.Array, alpha: float) -> jax.Array:
    """ELU_α(z) = α(eᶻ − 1) for z < 0, z otherwise."""
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0.0)))


@ACTIVATIONS.register("leaky_relu")
@dataclass(frozen=True)
class LeakyReLU(ActivationSpec):
    """Leaky ReLU; Keras's default slope is 0.3 (jax.nn's is 0.01)."""

    alpha: float = 0.3

    def __post_init__(self) -> None:
        require_non_negative("activation.alpha", self.alpha)

    def fn(self, x: jax.Array) -> jax.Array:
        return leaky_relu(x, self.alpha)


@ACTIVATIONS.register("elu")
@dataclass(frozen=True)
class ELU(ActivationSpec):
    alpha: float = 1.0

    def __post_init__(self) -> None:
        require_positive("activation.alpha", self.alpha)

    def fn(self, x: jax.Array) -> jax.Array:
        return elu(x, self.alpha)


@ACTIVATIONS.register("gelu")
@dataclass(frozen=True)
class GELU(ActivationSpec):
    """GELU(z) = zΦ(z) (exact erf form; ``approximate`` uses the tanh approximation)."""

    approximate: bool = False

    def fn(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(x, approximate=self.approximate)


@ACTIVATIONS.register("swish")
@dataclass(frozen=True)
class Swish(ActivationSpec):
    """Swish_β(z) = z·σ(βz); β = 1 is SiLU, β = 1.702 approximates GELU."""

    beta: float = 1.0

    def fn(self, x: jax.Array) -> jax.Array:
        return x * jax.nn.sigmoid(self.beta * x)


class RandomizedLeakyReLU(nnx.Module):
    """Leaky ReLU whose slope is drawn per element from U[lower, upper] while training."""

    def __init__(self, lower: float, upper: float):
        self.lower, self.upper = lower, upper

    def __call__(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None) -> jax.Array:
        slope: jax.Array | float
        if train:
            if key is None:
                raise ValueError("rrelu needs a PRNG key in training mode")
            slope = jax.random.uniform(key, x.shape, x.dtype, self.lower, self.upper)
        else:
            slope = (self.lower + self.upper) / 2
        return leaky_relu(x, slope)


@ACTIVATIONS.register("rrelu")
@dataclass(frozen=True)
class RReLU(ActivationSpec):
    """Randomized leaky ReLU: random slope in training, the mean slope (lower+upper)/2 at inference."""

    lower: float = 1 / 8
    upper: float = 1 / 3

    def __post_init__(self) -> None:
        require_non_negative("activation.lower", self.lower)
        require(self.upper >= self.lower, "activation.upper", "must be >= activation.lower", self.upper)

    def fn(self, x: jax.Array) -> jax.Array:
        return leaky_relu(x, (self.lower + self.upper) / 2)

    def build(self, features: int, rngs: nnx.Rngs) -> nnx.Module:
        return RandomizedLeakyReLU(self.lower, self.upper)


class ParametricReLU(nnx.Module):
    """PReLU: one learned slope per unit (Keras ``PReLU``, alpha initialised to zeros)."""

    def __init__(self, features: int, alpha_init: float):
        self.alpha = nnx.Param(jnp.full((features,), alpha_init, jnp.float32))

    def __call__(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None) -> jax.Array:
        return leaky_relu(x, self.alpha[...])


@ACTIVATIONS.register("prelu")
@dataclass(frozen=True)
class PReLU(ActivationSpec):
    alpha_init: float = 0.0

    def fn(self, x: jax.Array) -> jax.Array:
        return leaky_relu(x, self.alpha_init)

    def build(self, features: int, rngs: nnx.Rngs) -> nnx.Module:
        return ParametricReLU(features, self.alpha_init)
