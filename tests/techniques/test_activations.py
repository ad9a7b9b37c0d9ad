"""Activations against the book's formulas and Keras's defaults."""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from omegaconf import OmegaConf

from deeprun.registry import ConfigError
from deeprun.settings import CONFIG_DIR
from deeprun.techniques.activations import ACTIVATIONS, SELU_ALPHA, SELU_SCALE

Z = np.linspace(-5, 5, 101, dtype=np.float32)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


REFERENCES = {  # written from the chapter's formulas with Keras defaults, in float64 numpy
    "sigmoid": sigmoid,
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(0, z),
    "leaky_relu": lambda z: np.maximum(0.3 * z, z),
    "rrelu": lambda z: np.where(z >= 0, z, (1 / 8 + 1 / 3) / 2 * z),  # inference: mean slope
    "prelu": lambda z: np.maximum(0, z),  # alpha initialised to 0
    "elu": lambda z: np.where(z < 0, np.exp(z) - 1, z),
    "selu": lambda z: 1.0507009873554805 * np.where(z < 0, 1.6732632423543772 * (np.exp(z) - 1), z),
    "gelu": lambda z: z * 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2))),
    "swish": lambda z: z * sigmoid(z),
    "mish": lambda z: z * np.tanh(np.log1p(np.exp(z))),
}


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_layer_matches_formula_at_inference(name):
    layer = ACTIVATIONS.default(name).build(Z.size, nnx.Rngs(0))
    out = np.asarray(layer(jnp.asarray(Z), train=False))
    np.testing.assert_allclose(out, REFERENCES[name](Z.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_selu_constants():
    assert pytest.approx(1.7580993408473766, abs=1e-15) == SELU_ALPHA * SELU_SCALE
    # The closed form of the paper (eq. 14) the notebooks use.
    from math import e, erfc, exp, pi, sqrt

    alpha0 = -sqrt(2 / pi) / (erfc(1 / sqrt(2)) * exp(1 / 2) - 1)
    scale0 = (
        (1 - erfc(1 / sqrt(2)) * sqrt(e))
        * sqrt(2 * pi)
        * (
            2 * erfc(sqrt(2)) * e**2
            + pi * erfc(1 / sqrt(2)) ** 2 * e
            - 2 * (2 + pi) * erfc(1 / sqrt(2)) * sqrt(e)
            + pi
            + 2
        )
        ** (-1 / 2)
    )
    assert pytest.approx(alpha0, rel=1e-12) == SELU_ALPHA
    assert pytest.approx(scale0, rel=1e-12) == SELU_SCALE


def test_leaky_relu_keras_default_and_custom_alpha():
    assert ACTIVATIONS.default("leaky_relu").alpha == 0.3
    act = ACTIVATIONS.build({"name": "leaky_relu", "alpha": 0.2})
    assert float(act.fn(jnp.float32(-2.0))) == pytest.approx(-0.4)


def test_gelu_minimum_and_swish_beta():
    z = jnp.linspace(-3, 0, 30001)
    gelu = ACTIVATIONS.default("gelu").fn(z)
    assert float(gelu.min()) == pytest.approx(-0.17, abs=0.01)
    assert float(z[jnp.argmin(gelu)]) == pytest.approx(-0.75, abs=0.02)
    swish = ACTIVATIONS.build({"name": "swish", "beta": 1.702})
    np.testing.assert_allclose(swish.fn(z), ACTIVATIONS.build({"name": "gelu", "approximate": False}).fn(z), atol=0.03)


def test_rrelu_random_slopes_in_training_mean_slope_at_inference():
    spec = ACTIVATIONS.build({"name": "rrelu", "lower": 0.1, "upper": 0.3})
    layer = spec.build(1000, nnx.Rngs(0))
    x = -jnp.ones((4, 1000))
    slopes = -np.asarray(layer(x, train=True, key=jax.random.key(0)))
    assert slopes.min() >= 0.1 and slopes.max() <= 0.3
    assert slopes.std() > 0.05  # per element, not one shared slope
    assert slopes.mean() == pytest.approx(0.2, abs=0.005)
    np.testing.assert_allclose(layer(x, train=False), -0.2 * np.ones((4, 1000)), rtol=1e-6)
    np.testing.assert_allclose(layer(-x, train=True, key=jax.random.key(1)), np.ones((4, 1000)))


def test_prelu_slope_is_learned_per_unit():
    layer = ACTIVATIONS.default("prelu").build(3, nnx.Rngs(0))
    params = nnx.state(layer, nnx.Param)
    assert jax.tree.leaves(params)[0].shape == (3,)

    def loss(layer):
        return jnp.sum(layer(jnp.array([[-1.0, -2.0, 3.0]])))

    grads = nnx.grad(loss)(layer)
    np.testing.assert_allclose(jax.tree.leaves(grads)[0], [-1.0, -2.0, 0.0])


def test_bad_values_are_rejected():
    with pytest.raises(ConfigError, match="activation.upper must be >= activation.lower"):
        ACTIVATIONS.build({"name": "rrelu", "lower": 0.5, "upper": 0.1})
    with pytest.raises(ConfigError, match="activation.elu: unknown field 'slope'; valid fields: alpha"):
        ACTIVATIONS.build({"name": "elu", "slope": 1})
    with pytest.raises(ConfigError, match="activation.alpha must be > 0"):
        ACTIVATIONS.build({"name": "elu", "alpha": -1})


def test_yaml_options_match_registry():
    files = sorted(Path(CONFIG_DIR, "activation").glob("*.yaml"))
    assert sorted(f.stem for f in files) == ACTIVATIONS.names()
    for f in files:
        ACTIVATIONS.build(OmegaConf.to_container(OmegaConf.load(f)))
