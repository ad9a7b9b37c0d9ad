"""Model structure and batch norm: Keras's parameter counts, layer order, BN formulas."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from omegaconf import OmegaConf

from deeprun.models import MODELS, count_parameters
from deeprun.registry import ConfigError
from deeprun.settings import CONFIG_DIR
from deeprun.techniques.normalization import NORMALIZATIONS
from deeprun.training.trainer import build_model


def fmnist_model(make_settings, *overrides):
    settings = make_settings("model.hidden=[300,100]", "activation=relu", *overrides)
    return build_model(settings, 784, 10)


def test_book_bn_after_model_parameter_counts(make_settings):
    model = fmnist_model(make_settings, "normalization=batchnorm")
    assert count_parameters(model) == {"total": 271_346, "trainable": 268_978, "non_trainable": 2_368}


def test_bn_before_model_has_no_hidden_biases(make_settings):
    model = fmnist_model(make_settings, "normalization=batchnorm_before")
    # Dense kernels without bias + 4 BN vectors per hidden unit (no input BN) + output layer.
    expected_trainable = 784 * 300 + 300 * 100 + 2 * (300 + 100) + 100 * 10 + 10
    assert count_parameters(model) == {
        "total": expected_trainable + 2 * 400,
        "trainable": expected_trainable,
        "non_trainable": 800,
    }
    assert all(block.dense.bias is None for block in model.blocks)


def test_plain_mlp_and_deep_preset_counts(make_settings):
    assert count_parameters(fmnist_model(make_settings))["total"] == 784 * 300 + 300 + 300 * 100 + 100 + 1010
    deep = build_model(make_settings("model=deep_mlp"), 784, 10)
    assert len(deep.blocks) == 100
    assert count_parameters(deep)["total"] == 784 * 100 + 100 + 99 * (100 * 100 + 100) + 1010
    # The 2nd edition's SELU net: Dense(300), then 99 x Dense(100).
    second = build_model(make_settings("model=deep_mlp", "model.first_width=300"), 784, 10)
    assert [block.dense.kernel.shape for block in second.blocks[:2]] == [(784, 300), (300, 100)]
    expected = 784 * 300 + 300 + 300 * 100 + 100 + 98 * (100 * 100 + 100) + 1010
    assert count_parameters(second)["total"] == expected


def test_batchnorm_uses_keras_defaults():
    spec = NORMALIZATIONS.default("batchnorm")
    assert (spec.momentum, spec.epsilon, spec.input) == (0.99, 1e-3, True)
    layer = spec.layer(4, nnx.Rngs(0))
    assert (layer.momentum, layer.epsilon) == (0.99, 1e-3)


def test_batchnorm_training_and_inference_formulas():
    layer = NORMALIZATIONS.default("batchnorm").layer(3, nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (64, 3)) * 3 + 2
    y = layer(x, use_running_average=False)
    mean, var = np.asarray(x).mean(0), np.asarray(x).var(0)
    np.testing.assert_allclose(y, (np.asarray(x) - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-5)
    # Moving averages: v ← 0.99 v + 0.01 v_batch, from mean 0 / var 1.
    np.testing.assert_allclose(layer.mean[...], 0.01 * mean, rtol=1e-5)
    np.testing.assert_allclose(layer.var[...], 0.99 + 0.01 * var, rtol=1e-5)
    # Inference normalizes with the moving statistics.
    y_inf = layer(x, use_running_average=True)
    np.testing.assert_allclose(
        y_inf, (np.asarray(x) - 0.01 * mean) / np.sqrt(0.99 + 0.01 * var + 1e-3), rtol=1e-4, atol=1e-5
    )


def test_layer_order_bn_after_activation(make_settings):
    """BN after a ReLU sees only non-negative inputs; BN before sees the raw pre-activations."""
    x = jax.random.normal(jax.random.key(1), (256, 784))
    after = fmnist_model(make_settings, "normalization=batchnorm", "normalization.input=false")
    after(x, train=True, key=jax.random.key(0))
    assert float(after.blocks[0].norm.mean[...].min()) >= 0  # moving mean of relu outputs
    before = fmnist_model(make_settings, "normalization=batchnorm_before")
    before(x, train=True, key=jax.random.key(0))
    assert float(before.blocks[0].norm.mean[...].min()) < 0


def test_sigmoid_head_needs_two_classes(make_settings):
    settings = make_settings("model.head=sigmoid")
    with pytest.raises(ConfigError, match="model.head sigmoid needs a 2-class dataset"):
        build_model(settings, 64, 10)
    assert build_model(settings, 64, 2).output.kernel.shape == (32, 1)


def test_output_initializer_is_a_separate_field(make_settings):
    with pytest.raises(ConfigError, match="model.output_initializer: unknown option 'zeros'"):
        make_settings("model.output_initializer=zeros")
    model = build_model(make_settings("model.output_initializer=he_normal", "model.hidden=[400]"), 64, 200)
    assert float(jnp.var(model.output.kernel[...])) == pytest.approx(2 / 400, rel=0.05)


def test_bad_model_values(make_settings):
    with pytest.raises(ConfigError, match=r"model.hidden\[1\] must be > 0 \(got 0\)"):
        make_settings("model.hidden=[10,0]")
    with pytest.raises(ConfigError, match="model.depth must be > 0"):
        make_settings("model=deep_mlp", "model.depth=0")


def test_training_mode_needs_a_key(make_settings):
    model = build_model(make_settings(), 64, 10)
    with pytest.raises(ValueError, match="PRNG key"):
        model(jnp.ones((2, 64)), train=True)


@pytest.mark.parametrize("group,registry", [("model", MODELS), ("normalization", NORMALIZATIONS)])
def test_yaml_options_match_registry(group, registry):
    files = sorted(Path(CONFIG_DIR, group).glob("*.yaml"))
    assert sorted(f.stem for f in files) == registry.names()
    for f in files:
        registry.build(OmegaConf.to_container(OmegaConf.load(f)))
