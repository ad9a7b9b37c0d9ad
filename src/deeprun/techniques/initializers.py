"""Kernel initializers (config group ``initializer``), as in Keras and Table 11-1.

Every option is a variance-scaling initializer (Eq. 11-1): weights are drawn with variance
``σ² = scale / fan`` where ``fan`` is ``fan_in``, ``fan_out`` or ``fan_avg = (fan_in + fan_out) / 2``;
a uniform draw uses the range ``r = √(3σ²)``. Keras's ``*_normal`` presets are *truncated* normals
(σ corrected for the truncation), which is what ``jax.nn.initializers.variance_scaling`` does too.

Flax's ``nnx.Linear`` defaults to lecun_normal; Keras's ``Dense`` defaults to glorot_uniform, so the
model sets both the hidden and the output initializer explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import jax

from deeprun.registry import Registry, require_positive

Mode = Literal["fan_in", "fan_out", "fan_avg"]
Distribution = Literal["truncated_normal", "untruncated_normal", "uniform"]

INITIALIZERS: Registry[Initializer] = Registry("initializer")

# Keras names the plain normal "untruncated_normal"; JAX calls it "normal".
_JAX_DISTRIBUTION = {"truncated_normal": "truncated_normal", "untruncated_normal": "normal", "uniform": "uniform"}


@dataclass(frozen=True)
class Initializer:
    """Base: a preset fixes ``(scale, mode, distribution)``; ``variance_scaling`` takes them as fields."""

    preset: ClassVar[tuple[float, Mode, Distribution]]

    @property
    def parameters(self) -> tuple[float, Mode, Distribution]:
        return self.preset

    def build(self) -> jax.nn.initializers.Initializer:
        scale, mode, distribution = self.parameters
        return jax.nn.initializers.variance_scaling(scale, mode, _JAX_DISTRIBUTION[distribution])  # type: ignore[arg-type]


def _preset(name: str, scale: float, mode: Mode, distribution: Distribution, doc: str) -> type[Initializer]:
    cls = type(name, (Initializer,), {"preset": (scale, mode, distribution), "__doc__": doc})
    return INITIALIZERS.register(name)(dataclass(frozen=True)(cls))


_preset("glorot_uniform", 1.0, "fan_avg", "uniform", "Glorot/Xavier, σ² = 1/fan_avg, uniform (Keras default).")
_preset("glorot_normal", 1.0, "fan_avg", "truncated_normal", "Glorot/Xavier, σ² = 1/fan_avg, truncated normal.")
_preset("he_normal", 2.0, "fan_in", "truncated_normal", "He/Kaiming, σ² = 2/fan_in, truncated normal (ReLU family).")
_preset("he_uniform", 2.0, "fan_in", "uniform", "He/Kaiming, σ² = 2/fan_in, uniform.")
_preset("lecun_normal", 1.0, "fan_in", "truncated_normal", "LeCun, σ² = 1/fan_in, truncated normal (SELU).")
_preset("lecun_uniform", 1.0, "fan_in", "uniform", "LeCun, σ² = 1/fan_in, uniform.")


@INITIALIZERS.register("variance_scaling")
@dataclass(frozen=True)
class VarianceScaling(Initializer):
    """General form; the book's example is ``scale=2, mode=fan_avg, distribution=uniform``."""

    scale: float = 1.0
    mode: Mode = "fan_in"
    distribution: Distribution = "truncated_normal"

    def __post_init__(self) -> None:
        require_positive("initializer.scale", self.scale)

    @property
    def parameters(self) -> tuple[float, Mode, Distribution]:
        return (self.scale, self.mode, self.distribution)
