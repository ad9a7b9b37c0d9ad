"""Regularizers: Keras's penalty convention, dropout scaling, alpha dropout, max-norm, conflicts."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from deeprun.registry import ConfigError
from deeprun.settings import CONFIG_DIR
from deeprun.techniques.regularizers import REGULARIZERS, alpha_dropout, build_regularization, dropout, max_norm
from deeprun.training.trainer import Trainer, build_model


def test_l2_penalty_has_no_half():
    kernels = [jnp.array([[1.0, -2.0]]), jnp.array([[3.0]])]
    assert float(build_regularization({"l2": {"factor": 0.01}}).penalty(kernels)) == pytest.approx(0.01 * 14)
    assert float(build_regularization({"l1": {"factor": 0.1}}).penalty(kernels)) == pytest.approx(0.1 * 6)
    both = build_regularization({"l1_l2": {"l1": 0.1, "l2": 0.01}})
    assert float(both.penalty(kernels)) == pytest.approx(0.6 + 0.14)
    assert float(build_regularization({}).penalty(kernels)) == 0.0


def test_penalty_covers_every_dense_kernel_and_is_in_val_loss(make_settings):
    """The validation loss Keras reports includes the penalty: check against a by-hand computation."""
    settings = make_settings("regularizer=l2", "regularizer.l2.factor=0.05")
    dataset = settings.data.load()
    model = build_model(settings, dataset.n_features, dataset.n_classes)
    expected_penalty = 0.05 * sum(
        float(jnp.sum(k**2)) for k in [b.dense.kernel[...] for b in model.blocks] + [model.output.kernel[...]]
    )
    logits = model(jnp.asarray(dataset.x_val), train=False)
    ce = float(jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(len(dataset.y_val)), dataset.y_val]))
    trainer = Trainer(settings, len(dataset.y_train), dataset.n_features, dataset.n_classes)
    state, _ = trainer.init(settings)
    val = trainer.evaluate(state, settings.regularization, dataset.scaling, dataset.pixels_val, dataset.y_val)
    assert val["loss"] == pytest.approx(ce + expected_penalty, rel=1e-5)


def test_dropout_scales_kept_units_and_keeps_the_mean():
    x = jnp.ones((200_000,))
    y = np.asarray(dropout(x, 0.2, jax.random.key(0)))
    assert set(np.unique(y).round(6)) == {0.0, 1.25}
    assert (y == 0).mean() == pytest.approx(0.2, abs=0.005)
    assert y.mean() == pytest.approx(1.0, abs=0.01)


def test_alpha_dropout_formula_and_preserves_mean_and_variance():
    rate = 0.1
    x = jax.random.normal(jax.random.key(0), (1_000_000,))
    y = np.asarray(alpha_dropout(x, rate, jax.random.key(1)))
    assert y.mean() == pytest.approx(0.0, abs=0.01)
    assert y.std() == pytest.approx(1.0, abs=0.01)
    # The spec's formula, written out: dropped units map to a·α' + b.
    alpha_p = -1.7580993408473766
    keep = 1 - rate
    a = (keep * (1 + rate * alpha_p**2)) ** -0.5
    b = -a * alpha_p * rate
    dropped = np.isclose(y, a * alpha_p + b, atol=1e-6)
    assert dropped.mean() == pytest.approx(rate, abs=0.002)
    np.testing.assert_allclose(y[~dropped], a * np.asarray(x)[~dropped] + b, rtol=1e-5, atol=1e-6)


def test_max_norm_keras_formula():
    kernel = jnp.array([[3.0, 0.3], [4.0, 0.4]])  # column norms 5 and 0.5 (axis 0)
    clipped = np.asarray(max_norm(kernel, 1.0, axis=0))
    np.testing.assert_allclose(clipped[:, 0], [3 / (5 + 1e-7), 4 / (5 + 1e-7)], rtol=1e-6)
    np.testing.assert_allclose(clipped[:, 1], np.array([0.3, 0.4]) * 0.5 / (0.5 + 1e-7), rtol=1e-6)


def test_max_norm_is_applied_after_every_update(make_settings):
    from deeprun.training.loop import fit

    settings = make_settings(
        "regularizer=max_norm", "regularizer.max_norm.max_value=0.5", "optimizer=sgd", "optimizer.learning_rate=0.5"
    )
    result = fit(settings, settings.data.load())
    for block in result.model.blocks:
        norms = jnp.linalg.norm(block.dense.kernel[...], axis=0)
        assert float(norms.max()) <= 0.5 + 1e-5


def test_dropout_placement(make_settings):
    """`all` drops before every Dense (inputs included); `output` only before the output layer."""
    x = jax.random.uniform(jax.random.key(0), (4, 64))
    model = build_model(make_settings("activation=relu"), 64, 10)
    inference = model.hidden(x)
    for placement, hidden_dropped in (("all", True), ("output", False)):
        layer = REGULARIZERS.build({"name": "dropout", "rate": 0.5, "placement": placement})
        hidden = model.hidden(x, train=True, key=jax.random.key(1), dropout=layer)
        assert (not np.allclose(hidden, inference)) == hidden_dropped
        outputs = [model(x, train=True, key=jax.random.key(k), dropout=layer) for k in (1, 2)]
        assert not np.allclose(*outputs)  # the output layer's input is dropped either way
    np.testing.assert_array_equal(model(x, dropout=layer), model(x))  # inference: no dropout


@pytest.mark.parametrize("pair", [["l1", "l1_l2"], ["l2", "l1_l2"], ["dropout", "alpha_dropout"]])
def test_conflicting_pairs_are_errors(pair):
    with pytest.raises(ConfigError, match=f"regularizer: {sorted(pair)[0]} and {sorted(pair)[1]} conflict"):
        build_regularization({name: {} for name in pair})


def test_several_regularizers_combine():
    reg = build_regularization({"l2": {"factor": 0.001}, "dropout": {"rate": 0.3}, "max_norm": {}})
    assert reg.l2 == 0.001 and reg.dropout.rate == 0.3 and reg.max_norm.max_value == 1.0


def test_bad_values():
    with pytest.raises(ConfigError, match=r"regularizer.dropout.rate must be in \[0, 1\) \(got 1.0\)"):
        build_regularization({"dropout": {"rate": 1.0}})
    with pytest.raises(ConfigError, match="regularizer: unknown option 'l3'; valid options: alpha_dropout"):
        build_regularization({"l3": {}})
    with pytest.raises(ConfigError, match="regularizer.l2: unknown field 'rate'"):
        build_regularization({"l2": {"rate": 0.1}})


def test_yaml_options_match_registry():
    files = sorted(Path(CONFIG_DIR, "regularizer").glob("*.yaml"))
    assert sorted(f.stem for f in files if f.stem != "none") == REGULARIZERS.names()
    for f in files:
        build_regularization(OmegaConf.to_container(OmegaConf.load(f)))
