"""trainer.precision: mixed-precision compute (float32 parameters) and float16's dynamic loss scaling."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeprun.registry import ConfigError
from deeprun.techniques.precision import LossScale, LossScaling, adjust_loss_scale, all_finite, where_finite
from deeprun.training.loop import fit
from deeprun.training.state import DeviceData
from deeprun.training.trainer import Trainer

# bfloat16 and float16 against float32 on the synthetic task: 5 epochs, batch norm (computed in float32).
COMPARED = ("trainer.epochs=5", "normalization=batchnorm")


def _lowered_text(settings) -> str:
    dataset = settings.data.load()
    trainer = Trainer(settings, len(dataset.y_train), dataset.n_features, dataset.n_classes)
    state, member = trainer.init(settings)
    return trainer.epoch_fn.lower(state, member, DeviceData.of(dataset), jnp.int32(0), None).as_text()


def _dot_types(text: str) -> set[str]:
    """The element types of every dot_general's operands and result in a StableHLO module."""
    types = set()
    for line in text.splitlines():
        if "dot_general" in line:
            types.update(re.findall(r"tensor<[0-9x]*x([a-z0-9]+)>", line.split(" : ")[-1]))
    return types


@pytest.mark.parametrize("precision,hlo_type", [("bfloat16", "bf16"), ("float16", "f16")])
def test_matrix_products_run_in_the_compute_dtype(make_settings, precision, hlo_type):
    """Forward and backward dots (x·W, δ·Wᵀ, xᵀ·δ) are all in the low dtype; the float32 program has no
    low-precision type anywhere."""
    low = _lowered_text(make_settings(f"trainer.precision={precision}", "normalization=batchnorm"))
    assert _dot_types(low) == {hlo_type}
    assert len([line for line in low.splitlines() if "dot_general" in line]) >= 8  # 3 per layer in training + eval
    default = _lowered_text(make_settings("normalization=batchnorm"))
    assert _dot_types(default) == {"f32"}
    assert "bf16" not in default and "xf16>" not in default


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_low_precision_trains_like_float32(make_settings, precision):
    """Well above chance (10 classes) and within rounding of float32: bfloat16 keeps 8 mantissa bits
    (relative error 2⁻⁸ ≈ 0.4% per product), float16 11; over 5 epochs that moves the validation loss by
    well under 2% and flips at most a few of the 128 validation predictions (allowed: 3, 2.3%)."""
    reference = fit(s := make_settings(*COMPARED), s.data.load())
    low = fit(s := make_settings(*COMPARED, f"trainer.precision={precision}"), s.data.load())
    assert low.status == "completed"
    final, expected = low.history[-1], reference.history[-1]
    assert final["val/accuracy"] > 0.5
    assert final["val/accuracy"] == pytest.approx(expected["val/accuracy"], abs=3 / 128)
    assert final["val/loss"] == pytest.approx(expected["val/loss"], rel=0.02)
    assert final["val/loss"] != expected["val/loss"]  # it did compute in another precision
    assert reference.state.loss_scale is None
    assert (low.state.loss_scale is not None) == (precision == "float16")  # bfloat16 needs no scaling
    # Parameters, batch statistics and the optimizer state stay float32.
    assert {leaf.dtype for leaf in jax.tree.leaves(low.state[:3]) if jnp.issubdtype(leaf.dtype, jnp.floating)} == {
        jnp.dtype(jnp.float32)
    }


def _reference_scale(scale: float, good: int, finite: bool, growth_steps: int) -> tuple[float, int]:
    """Keras's LossScaleOptimizer, written out: halve and reset on a bad step; double after N good ones."""
    if not finite:
        return scale / 2, 0
    if good + 1 == growth_steps:
        return scale * 2, 0
    return scale, good + 1


def test_loss_scale_follows_its_formula_on_crafted_gradients():
    inf_grads = {"w": jnp.array([1.0, jnp.inf]), "b": jnp.zeros(2)}
    nan_grads = {"w": jnp.ones(2), "b": jnp.array([jnp.nan, 0.0])}
    ok_grads = {"w": jnp.ones(2), "b": jnp.zeros(2)}
    assert not all_finite(inf_grads) and not all_finite(nan_grads) and all_finite(ok_grads)
    sequence = [ok_grads] * 3 + [inf_grads] + [ok_grads] * 2 + [nan_grads] + [ok_grads] * 7
    state = LossScale.initial(LossScaling(initial=2.0**15))
    expected = (2.0**15, 0)
    for grads in sequence:
        finite = bool(all_finite(grads))
        state = adjust_loss_scale(state, all_finite(grads), growth_steps=3)
        expected = _reference_scale(*expected, finite, growth_steps=3)
        assert (float(state.scale), int(state.good_steps)) == expected
    assert expected == (2.0**15 * 2 / 2 / 2 * 2 * 2, 1)  # the 7 good steps at the end double it twice
    kept = where_finite(all_finite(inf_grads), {"p": jnp.ones(2)}, {"p": jnp.zeros(2)})
    np.testing.assert_array_equal(kept["p"], 0.0)


def test_overflowing_steps_are_skipped_and_halve_the_scale(make_settings):
    """A scale of 2¹⁰⁰ overflows float16 (max 65504) in the backward pass of every step: all 16 steps
    of the epoch are skipped (parameters, batch statistics and optimizer state untouched) and each halves
    the scale. (A constant schedule: a scheduled learning rate is still written into the optimizer state.)"""
    settings = make_settings(
        "trainer.precision=float16",
        "trainer.loss_scale.initial=1.2676506002282294e+30",
        "normalization=batchnorm",
        "optimizer=adam",
        "schedule=constant",
    )
    dataset = settings.data.load()
    trainer = Trainer(settings, len(dataset.y_train), dataset.n_features, dataset.n_classes)
    initial, _ = trainer.init(settings)
    result = fit(settings, dataset)
    assert result.history[0]["step"] == 16
    assert float(result.state.loss_scale.scale) == 2.0 ** (100 - 16)
    assert int(result.state.loss_scale.good_steps) == 0
    for got, want in zip(jax.tree.leaves(result.state[:3]), jax.tree.leaves(initial[:3]), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_good_steps_double_the_scale(make_settings):
    """16 steps with finite gradients and growth_steps=5: doubled after steps 5, 10 and 15; every update
    applied (the loss follows float32's)."""
    scaled = ("trainer.precision=float16", "trainer.loss_scale.initial=1024", "trainer.loss_scale.growth_steps=5")
    result = fit(settings := make_settings(*scaled), settings.data.load())
    assert float(result.state.loss_scale.scale) == 1024 * 2**3
    assert int(result.state.loss_scale.good_steps) == 1
    reference = fit(settings := make_settings(), settings.data.load())
    assert result.history[0]["train/loss"] == pytest.approx(reference.history[0]["train/loss"], rel=0.01)


@pytest.mark.parametrize(
    "override,message",
    [
        ("trainer.precision=float64", "trainer.precision must be one of float32, bfloat16, float16 (got 'float64')"),
        ("trainer.loss_scale.initial=1000", "trainer.loss_scale.initial must be a power of two (got 1000.0)"),
        ("trainer.loss_scale.initial=0", "trainer.loss_scale.initial must be > 0 (got 0.0)"),
        ("trainer.loss_scale.growth_steps=0", "trainer.loss_scale.growth_steps must be > 0 (got 0)"),
    ],
)
def test_bad_precision_settings(make_settings, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_settings(override)
