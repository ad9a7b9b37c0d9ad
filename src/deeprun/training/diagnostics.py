"""Per-layer statistics, computed inside compiled programs: the training diagnostics (``trainer.diagnostics``)
and the self-normalization demo (``deeprun-signal``) share them."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

#: Per hidden layer, per epoch, with ``trainer.diagnostics`` (the columns of ``Trainer._diagnostics``).
DIAGNOSTICS = ("pre_mean", "pre_std", "act_mean", "act_std", "grad_norm")


def layer_statistics(x: jax.Array) -> jax.Array:
    """``[mean, std, rms]`` of a (batch, units) array, in float32 — the one definition the training
    diagnostics and ``deeprun-signal`` share:

        mean = (1/n) Σ_j mean_b(x[b, j]),    std = (1/n) Σ_j std_b(x[b, j]),    rms = √(mean_{b,j} x[b, j]²)

    i.e. the spread across examples, averaged over the units (a saturated unit, constant on every
    example, has std 0 whatever its value)."""
    x = x.astype(jnp.float32)
    return jnp.stack([jnp.mean(jnp.mean(x, axis=0)), jnp.mean(jnp.std(x, axis=0)), jnp.sqrt(jnp.mean(x * x))])


def kernel_norms(kernels: Sequence[jax.Array]) -> jax.Array:
    """The Frobenius norm ‖W‖_F = √(Σᵢⱼ W²ᵢⱼ) of each kernel (float32)."""
    return jnp.stack([jnp.sqrt(jnp.sum(jnp.square(kernel.astype(jnp.float32)))) for kernel in kernels])


def finite_mean(values: jax.Array) -> jax.Array:
    """The mean over axis 0 of the finite values (float16 steps skipped for non-finite gradients are left
    out; 0 where none is finite)."""
    finite = jnp.isfinite(values)
    return jnp.sum(jnp.where(finite, values, 0), axis=0) / jnp.maximum(jnp.sum(finite, axis=0), 1)


def layer_records(diagnostics: np.ndarray) -> list[dict[str, float]]:
    """One run's (layers, 5) diagnostics as JSON-able rows ``{layer, pre_mean, …, grad_norm}`` (layer 1:
    the first hidden layer)."""
    return [
        {"layer": index + 1, **{name: float(value) for name, value in zip(DIAGNOSTICS, row, strict=True)}}
        for index, row in enumerate(np.asarray(diagnostics))
    ]
