"""trainer.diagnostics: per-layer activation statistics and gradient norms, computed in the compiled epoch."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from deeprun.runs.folder import METRIC_KEYS, RunFolder
from deeprun.training.diagnostics import DIAGNOSTICS
from deeprun.training.loop import fit, fit_many
from deeprun.training.trainer import build_model

pytestmark = pytest.mark.usefixtures("exact_float32")  # float64 NumPy references

DEEP = (
    "model=deep_mlp",
    "model.depth=20",
    "model.width=32",
    "optimizer=sgd",
    "optimizer.learning_rate=0.001",
    "schedule=constant",
    "trainer.diagnostics=true",
)


def _column(record, name: str) -> np.ndarray:
    return np.array([row[name] for row in record["diagnostics"]])


def test_diagnostics_equal_an_eager_computation(make_settings):
    """One step per epoch (batch = the 512 training examples): the gradient norm is ‖∂L/∂W_l‖ at the
    initial weights on the whole training set; the statistics are those of the trained weights' tanh
    layers on the first 100 validation examples, recomputed here in NumPy (float64)."""
    settings = make_settings(
        "model.hidden=[16,8]",
        "activation=tanh",
        "trainer.batch_size=512",
        "trainer.diagnostics=true",
        "trainer.diagnostics_batch=100",
    )
    dataset = settings.data.load()
    model = build_model(settings, dataset.n_features, dataset.n_classes)  # same seed: the initial weights
    initial = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    result = fit(settings, dataset)
    rows = result.history[0]["diagnostics"]
    assert [row["layer"] for row in rows] == [1, 2] and set(rows[0]) == {"layer", *DIAGNOSTICS}

    def loss(params):
        h = jnp.asarray(dataset.x_train)
        for i in range(2):
            h = jnp.tanh(h @ params["blocks"][i]["dense"]["kernel"] + params["blocks"][i]["dense"]["bias"])
        logits = h @ params["output"]["kernel"] + params["output"]["bias"]
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(dataset.y_train)), dataset.y_train])

    grads = jax.grad(loss)(initial)
    expected_norms = [np.linalg.norm(np.asarray(grads["blocks"][i]["dense"]["kernel"])) for i in range(2)]
    np.testing.assert_allclose([row["grad_norm"] for row in rows], expected_norms, rtol=1e-4)

    trained = jax.tree.map(lambda a: np.asarray(a, np.float64), nnx.to_pure_dict(result.state.params))
    h = dataset.x_val[:100].astype(np.float64)
    for i, row in enumerate(rows):
        pre = h @ trained["blocks"][i]["dense"]["kernel"] + trained["blocks"][i]["dense"]["bias"]
        h = np.tanh(pre)
        expected = {
            "pre_mean": pre.mean(),
            "pre_std": pre.std(axis=0).mean(),
            "act_mean": h.mean(),
            "act_std": h.std(axis=0).mean(),
        }
        for name, value in expected.items():
            assert row[name] == pytest.approx(value, rel=1e-4, abs=1e-6), (i, name)


def test_diagnostics_off_adds_nothing(make_settings, tmp_path):
    """Off (the default): no record key, no file; on: the same training numbers, the extra files, and
    metrics.jsonl still holds the metric keys only."""
    runs = {}
    for flag in ("false", "true"):
        settings = make_settings("trainer.epochs=2", "normalization=batchnorm", f"trainer.diagnostics={flag}")
        folder = RunFolder(tmp_path / flag)
        result = fit(settings, settings.data.load(), [folder.append_metrics])
        folder.finish(result, "run", 1.0, checkpoint=False, plots=True)
        runs[flag] = (folder.path, result)
    off_path, off = runs["false"]
    on_path, on = runs["true"]
    assert all("diagnostics" not in record for record in off.history)
    assert not (off_path / "diagnostics.jsonl").exists() and not (off_path / "layer_stats.png").exists()
    strip = [{k: v for k, v in r.items() if k not in ("epoch_time_s", "diagnostics")} for r in on.history]
    assert strip == [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in off.history]
    lines = [json.loads(line) for line in (on_path / "diagnostics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert [line["layers"] for line in lines] == [record["diagnostics"] for record in on.history]
    assert (on_path / "layer_stats.png").stat().st_size > 0
    for path in (on_path, off_path):
        assert all(tuple(json.loads(line)) == METRIC_KEYS for line in (path / "metrics.jsonl").read_text().splitlines())


def test_fused_runs_get_their_own_diagnostics(make_settings):
    """Two runs vmapped together: the second reports what it reports alone, the first something else."""
    runs = [make_settings("trainer.diagnostics=true", f"trainer.seed={seed}") for seed in (1, 2)]
    fused = fit_many(runs, runs[0].data.load())
    alone = fit(runs[1], runs[1].data.load())

    def table(result):
        return np.array([list(row.values()) for row in result.history[0]["diagnostics"]])

    np.testing.assert_allclose(table(fused[1]), table(alone), rtol=1e-5)
    assert not np.allclose(table(fused[0]), table(alone), rtol=1e-3)


def test_selu_keeps_the_activation_scale_across_depth(make_settings):
    """20 SELU layers with LeCun init on standardized inputs: every layer's activation std stays near 1
    (SELU's fixed point is mean 0, variance 1), and the gradient reaches the first layer."""
    result = fit(
        s := make_settings(*DEEP, "activation=selu", "initializer=lecun_normal", "data.scaling=standardize"),
        s.data.load(),
    )
    record = result.history[-1]
    std = _column(record, "act_std")
    assert len(std) == 20 and np.all((std > 0.6) & (std < 1.4)), std
    grads = _column(record, "grad_norm")
    assert 0.1 < grads[0] / grads[-1] < 100, grads


def test_sigmoid_signal_and_gradient_vanish_with_depth(make_settings):
    """20 sigmoid layers with Glorot init: σ' ≤ 1/4, so each layer shrinks the signal's spread and the
    back-propagated gradient by about 4× (Glorot keeps the weights' gain near 1): over 19 layers the
    ratios fall to ~4⁻¹⁹ ≈ 4e-12. Asserted: below 1e-3 (std, which bottoms out at float32 noise) and
    1e-6 (gradient)."""
    result = fit(s := make_settings(*DEEP, "activation=sigmoid", "initializer=glorot_uniform"), s.data.load())
    record = result.history[-1]
    std, grads = _column(record, "act_std"), _column(record, "grad_norm")
    assert std[-1] < 1e-3 * std[0], std
    assert grads[0] < 1e-6 * grads[-1], grads
    assert np.all(np.diff(np.log(grads)) > 0), "the gradient grows layer by layer toward the output"


@pytest.mark.slow
def test_100_layers_selu_versus_relu():
    """The chapter's 100×100 network on standardized synthetic inputs, one epoch: SELU keeps every
    layer's activation std within [0.5, 1.5]; ReLU with He init loses the spread across examples with
    depth (its units grow correlated: the last layer's std is below a tenth of the first's)."""
    from deeprun.settings import settings_from_config
    from helpers.configs import compose_dict

    base = (
        "data=synthetic",
        "model=deep_mlp",
        "optimizer=sgd",
        "optimizer.learning_rate=0.001",
        "schedule=constant",
        "trainer.epochs=1",
        "trainer.diagnostics=true",
        "trainer.checkpoint=false",
        "trainer.plots=false",
        "data.scaling=standardize",
    )
    stds = {}
    for name, overrides in {
        "selu": ("activation=selu", "initializer=lecun_normal"),
        "relu": ("activation=relu", "initializer=he_normal"),
    }.items():
        settings = settings_from_config(compose_dict([*base, *overrides]))
        stds[name] = _column(fit(settings, settings.data.load()).history[-1], "act_std")
    assert len(stds["selu"]) == 100
    assert np.all((stds["selu"] > 0.5) & (stds["selu"] < 1.5)), stds["selu"]
    assert stds["relu"][-1] < 0.1 * stds["relu"][0], stds["relu"]
