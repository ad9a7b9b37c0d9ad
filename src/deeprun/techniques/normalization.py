"""Batch normalization placements (config group ``normalization``), with Keras's defaults.

Eq. 11-4: x̂ = (x − μ_B)/√(σ²_B + ε), z = γ⊗x̂ + β; moving averages v̂ ← momentum·v̂ + (1 − momentum)·v.
Keras uses momentum 0.99 and **ε = 1e-3** (Flax's default ε is 1e-5). γ and β are trainable; the moving
mean and variance are not (Flax ``BatchStat``), which is how the parameter table of the book's BN model
comes out at 271,346 total, 268,978 trainable and 2,368 non-trainable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from flax import nnx

from deeprun.registry import Registry, require_in_unit_interval, require_positive

NORMALIZATIONS: Registry[Normalization] = Registry("normalization")

Placement = Literal["none", "after", "before"]


@dataclass(frozen=True)
class Normalization:
    """Base: where BN goes relative to each hidden layer's activation, and how to make the layer."""

    placement: ClassVar[Placement]

    @property
    def normalizes_input(self) -> bool:
        return False

    def layer(self, features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
        raise TypeError(f"{type(self).__name__} makes no layers")


@NORMALIZATIONS.register("none")
@dataclass(frozen=True)
class NoNormalization(Normalization):
    """No batch norm (the default for shallow nets, and for self-normalizing SELU nets)."""

    placement: ClassVar[Placement] = "none"


@dataclass(frozen=True)
class BatchNorm(Normalization):
    """Keras ``BatchNormalization`` defaults: momentum 0.99, ε = 1e-3."""

    momentum: float = 0.99
    epsilon: float = 1e-3

    def __post_init__(self) -> None:
        require_in_unit_interval("normalization.momentum", self.momentum)
        require_positive("normalization.epsilon", self.epsilon)

    def layer(self, features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
        return nnx.BatchNorm(features, momentum=self.momentum, epsilon=self.epsilon, rngs=rngs)


@NORMALIZATIONS.register("batchnorm")
@dataclass(frozen=True)
class BatchNormAfter(BatchNorm):
    """Dense → activation → BN, optionally with a BN layer on the inputs (the book's first BN model)."""

    placement: ClassVar[Placement] = "after"
    input: bool = True

    @property
    def normalizes_input(self) -> bool:
        return self.input


@NORMALIZATIONS.register("batchnorm_before")
@dataclass(frozen=True)
class BatchNormBefore(BatchNorm):
    """Dense without bias → BN → activation (BN's β makes the bias redundant)."""

    placement: ClassVar[Placement] = "before"
