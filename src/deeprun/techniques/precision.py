"""Mixed-precision training (``trainer.precision``) and float16's dynamic loss scaling.

The standard recipe (Keras's ``mixed_float16``/``mixed_bfloat16`` policies, Flax's ``dtype``/``param_dtype``):
parameters, optimizer state and batch-norm statistics stay float32; the Dense layers cast their inputs and
weights to the compute dtype, so the matrix products (and their gradients) run in it; batch norm computes in
float32; the logits are cast back to float32 before the loss. The gradients arrive in float32 (the gradient
of a cast is the cast back), so the optimizer update is unchanged.

float16 has 5 exponent bits: gradients below ~6e-8 flush to zero. Dynamic loss scaling (Keras's
``LossScaleOptimizer``) multiplies the loss by a scale S before differentiating and divides the gradients by
S afterwards; S is a power of two, so both are exact in float32. Per step:

- some gradient is inf/NaN (S too large: the scaled backward pass overflowed) → the update is skipped
  and S ← S/2, the count of good steps restarts;
- otherwise the update is applied and the count grows; after ``growth_steps`` good steps in a row,
  S ← 2·S and the count restarts.

bfloat16 has float32's exponent range and needs no scaling.

The validation and test passes of a run compute in its training dtype too; a finished run loaded from
its folder (``deeprun-eval``, ``deeprun-export``) is a float32 model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from deeprun.registry import require, require_positive

Precision = Literal["float32", "bfloat16", "float16"]

#: Keras's LossScaleOptimizer multiplies and divides the scale by 2.
SCALE_FACTOR = 2.0


def compute_dtype(precision: Precision) -> jnp.dtype | None:
    """The dtype the layers compute in; None for float32 (the parameters' own dtype: no casts at all)."""
    return None if precision == "float32" else jnp.dtype(precision)


@dataclass(frozen=True)
class LossScaling:
    """``trainer.loss_scale``: float16's dynamic loss scale, Keras's ``LossScaleOptimizer`` defaults
    (initial 2¹⁵, doubled after 2000 steps with finite gradients)."""

    initial: float = 2.0**15
    growth_steps: int = 2000

    def __post_init__(self) -> None:
        require_positive("trainer.loss_scale.initial", self.initial)
        mantissa, _ = math.frexp(self.initial)  # a power of two: scaling stays exact
        require(mantissa == 0.5, "trainer.loss_scale.initial", "must be a power of two", self.initial)
        require_positive("trainer.loss_scale.growth_steps", self.growth_steps)


class LossScale(NamedTuple):
    """The loss scale's state, part of the training state (so a resumed run continues with it)."""

    scale: jax.Array  # float32, a power of two
    good_steps: jax.Array  # int32: steps with finite gradients since the scale last changed

    @classmethod
    def initial(cls, scaling: LossScaling) -> LossScale:
        return cls(jnp.float32(scaling.initial), jnp.zeros((), jnp.int32))


def all_finite(tree: Any) -> jax.Array:
    """True when every element of every leaf is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def unscale(grads: Any, loss_scale: LossScale) -> Any:
    """∂L/∂θ = (∂(S·L)/∂θ) / S."""
    return jax.tree.map(lambda g: g / loss_scale.scale, grads)


def adjust_loss_scale(loss_scale: LossScale, finite: jax.Array, growth_steps: int) -> LossScale:
    """The next step's scale: S/2 after non-finite gradients, 2·S after ``growth_steps`` good steps in a row."""
    good = loss_scale.good_steps + 1
    grow = good >= growth_steps
    scale = jnp.where(
        finite, jnp.where(grow, loss_scale.scale * SCALE_FACTOR, loss_scale.scale), loss_scale.scale / SCALE_FACTOR
    )
    good_steps = jnp.where(finite & ~grow, good, 0)
    return LossScale(scale, good_steps.astype(jnp.int32))


def where_finite(finite: jax.Array, updated: Any, kept: Any) -> Any:
    """``updated`` where the gradients were finite, else ``kept`` (the skipped step), leaf by leaf."""
    return jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, kept)
