"""Initializers: variance σ² = scale/fan (Eq. 11-1) for every option, and Keras's distributions."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from deeprun.registry import ConfigError
from deeprun.settings import CONFIG_DIR
from deeprun.techniques.initializers import INITIALIZERS

FAN_IN, FAN_OUT = 400, 200
EXPECTED = {  # (scale, fan) from Table 11-1, written out independently of the module
    "glorot_uniform": 1 / ((FAN_IN + FAN_OUT) / 2),
    "glorot_normal": 1 / ((FAN_IN + FAN_OUT) / 2),
    "he_normal": 2 / FAN_IN,
    "he_uniform": 2 / FAN_IN,
    "lecun_normal": 1 / FAN_IN,
    "lecun_uniform": 1 / FAN_IN,
    "variance_scaling": 1 / FAN_IN,  # Keras VarianceScaling defaults: scale 1, fan_in
}


@pytest.mark.parametrize("name", INITIALIZERS.names())
def test_sample_variance_matches_formula(name):
    kernel = INITIALIZERS.default(name).build()(jax.random.key(0), (FAN_IN, FAN_OUT), jnp.float32)
    assert kernel.shape == (FAN_IN, FAN_OUT)
    assert float(jnp.var(kernel)) == pytest.approx(EXPECTED[name], rel=0.03)
    assert abs(float(jnp.mean(kernel))) < 0.01 * math.sqrt(EXPECTED[name]) * 10


@pytest.mark.parametrize("name", ["glorot_uniform", "he_uniform", "lecun_uniform"])
def test_uniform_range_is_sqrt_three_sigma_squared(name):
    kernel = np.asarray(INITIALIZERS.default(name).build()(jax.random.key(1), (FAN_IN, FAN_OUT)))
    limit = math.sqrt(3 * EXPECTED[name])
    assert kernel.max() <= limit and kernel.min() >= -limit
    assert kernel.max() > 0.99 * limit


@pytest.mark.parametrize("name", ["he_normal", "lecun_normal", "glorot_normal"])
def test_normals_are_truncated_at_two_sigma(name):
    kernel = np.asarray(INITIALIZERS.default(name).build()(jax.random.key(2), (FAN_IN, FAN_OUT)))
    stddev = math.sqrt(EXPECTED[name])
    # Keras's truncated normal redraws beyond 2 stddev of the untruncated distribution (σ/0.8796).
    assert np.abs(kernel).max() <= 2 * stddev / 0.87962566103423978 + 1e-6


def test_book_example_he_fan_avg_uniform():
    init = INITIALIZERS.build({"name": "variance_scaling", "scale": 2.0, "mode": "fan_avg", "distribution": "uniform"})
    kernel = init.build()(jax.random.key(3), (FAN_IN, FAN_OUT))
    assert float(jnp.var(kernel)) == pytest.approx(2 / ((FAN_IN + FAN_OUT) / 2), rel=0.03)
    assert init.parameters == (2.0, "fan_avg", "uniform")


def test_untruncated_normal_has_tails_beyond_two_sigma():
    init = INITIALIZERS.build({"name": "variance_scaling", "distribution": "untruncated_normal"})
    kernel = np.asarray(init.build()(jax.random.key(4), (FAN_IN, FAN_OUT)))
    assert np.abs(kernel).max() > 3 * math.sqrt(1 / FAN_IN)


def test_bad_values_are_rejected():
    with pytest.raises(ConfigError, match="initializer.scale must be > 0"):
        INITIALIZERS.build({"name": "variance_scaling", "scale": 0})
    with pytest.raises(ConfigError, match="initializer.variance_scaling.mode must be one of"):
        INITIALIZERS.build({"name": "variance_scaling", "mode": "fan_sideways"})
    with pytest.raises(ConfigError, match="unknown option 'xavier'; valid options: glorot_normal"):
        INITIALIZERS.build({"name": "xavier"})


def test_yaml_options_match_registry():
    from pathlib import Path

    files = sorted(Path(CONFIG_DIR, "initializer").glob("*.yaml"))
    assert sorted(f.stem for f in files) == INITIALIZERS.names()
    for f in files:
        INITIALIZERS.build(OmegaConf.to_container(OmegaConf.load(f)))
