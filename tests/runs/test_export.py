"""deeprun-export: batch norm (and the pixel scaling) folded into the Dense layers, the export, its latency."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from deeprun.data.base import PixelScaling
from deeprun.registry import ConfigError, options_from_tokens
from deeprun.runs.export import (
    ExportOptions,
    batchnorm_affine,
    export_run,
    fold_into_next,
    fold_into_previous,
    fold_model,
    load_export,
    pixel_affine,
    predictor,
)
from deeprun.runs.loading import load_run
from deeprun.training.trainer import build_model

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}  # float32: the folded products are summed in another order

pytestmark = pytest.mark.usefixtures("exact_float32")  # float64 NumPy references


def random_batchnorm(features: int, seed: int) -> nnx.BatchNorm:
    """A Keras-default BN (ε = 1e-3) with statistics and parameters far from the identity."""
    rng = np.random.default_rng(seed)
    bn = nnx.BatchNorm(features, epsilon=1e-3, use_running_average=True, rngs=nnx.Rngs(0))
    bn.scale[...] = jnp.asarray(rng.uniform(0.5, 2.0, features), jnp.float32)
    bn.bias[...] = jnp.asarray(rng.normal(0, 1, features), jnp.float32)
    bn.mean[...] = jnp.asarray(rng.normal(0, 2, features), jnp.float32)
    bn.var[...] = jnp.asarray(rng.uniform(0.01, 4.0, features), jnp.float32)  # small σ included
    return bn


def test_fold_into_previous_is_the_books_formula():
    """Dense → BN == Dense with W' = γ⊗W/σ, b' = γ⊗(b − μ)/σ + β."""
    dense = nnx.Linear(6, 4, rngs=nnx.Rngs(1))
    dense.bias[...] = jnp.arange(4.0)
    bn = random_batchnorm(4, seed=2)
    x = np.random.default_rng(3).normal(size=(16, 6)).astype(np.float32)
    kernel, bias = fold_into_previous(
        dense.kernel[...],
        dense.bias[...],
        batchnorm_affine(bn.scale[...], bn.bias[...], bn.mean[...], bn.var[...], bn.epsilon),
    )
    sigma = np.sqrt(np.asarray(bn.var[...]).astype(np.float64) + 1e-3)
    gamma, beta, mu = (np.asarray(v[...]).astype(np.float64) for v in (bn.scale, bn.bias, bn.mean))
    np.testing.assert_allclose(kernel, gamma * np.asarray(dense.kernel[...]) / sigma)
    np.testing.assert_allclose(bias, gamma * (np.arange(4.0) - mu) / sigma + beta)
    np.testing.assert_allclose(x @ kernel + bias, bn(dense(x)), **TOLERANCE)


def test_fold_into_next_absorbs_a_batchnorm_before_the_dense():
    """BN → Dense == Dense with W' = diag(γ/σ)·W, b' = b + (β − γμ/σ)·W."""
    bn = random_batchnorm(6, seed=4)
    dense = nnx.Linear(6, 3, rngs=nnx.Rngs(5))
    dense.bias[...] = jnp.ones(3)
    x = np.random.default_rng(6).normal(size=(16, 6)).astype(np.float32)
    kernel, bias = fold_into_next(
        batchnorm_affine(bn.scale[...], bn.bias[...], bn.mean[...], bn.var[...], bn.epsilon),
        dense.kernel[...],
        dense.bias[...],
    )
    np.testing.assert_allclose(x @ kernel + bias, dense(bn(x)), **TOLERANCE)


def test_pixel_scaling_folds_like_an_affine_layer():
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(8, 5)).astype(np.uint8)
    standardize = PixelScaling(mean=rng.uniform(0.2, 0.5, (1, 5)), std=rng.uniform(0.1, 0.3, (1, 5)))
    for scaling in (PixelScaling(), standardize):
        affine = pixel_affine(scaling, 5)
        np.testing.assert_allclose(affine.scale * pixels + affine.shift, scaling.apply(pixels), rtol=1e-6, atol=1e-6)


def randomize_batchnorms(model, seed: int) -> None:
    """Give every BN layer of ``model`` non-trivial statistics, so folding is not an identity."""
    norms = [model.input_norm] + [block.norm for block in model.blocks]
    for i, norm in enumerate(n for n in norms if n is not None):
        donor = random_batchnorm(norm.scale[...].shape[0], seed + i)
        for name in ("scale", "bias", "mean", "var"):
            getattr(norm, name)[...] = getattr(donor, name)[...]


@pytest.mark.parametrize(
    "overrides",
    [
        ("normalization=batchnorm", "activation=elu"),  # input BN, BN after each activation
        ("normalization=batchnorm", "normalization.input=false", "activation=selu"),
        ("normalization=batchnorm_before", "activation=prelu"),  # Dense (no bias) → BN → PReLU
        ("normalization=batchnorm_before", "activation=relu", "model.hidden=[16,16,8]"),
    ],
)
def test_folded_model_matches_the_model_in_inference_mode(make_settings, overrides):
    settings = make_settings("model.hidden=[16,8]", *overrides)
    model = build_model(settings, 12, 5)
    randomize_batchnorms(model, seed=10)
    for block in model.blocks:  # learned PReLU slopes and biases away from their initial values
        if hasattr(block.activation, "alpha"):
            block.activation.alpha[...] = jnp.linspace(0.05, 0.5, block.activation.alpha[...].shape[0])
    x = np.random.default_rng(8).normal(size=(64, 12)).astype(np.float32)
    layers = fold_model(model)
    assert [layer.name for layer in layers] == [f"hidden_{i + 1}" for i in range(len(model.blocks))] + ["output"]
    np.testing.assert_allclose(predictor(layers, settings.activation)(x), model(x), **TOLERANCE)
    # with the pixel scaling folded in too, the folded model reads raw pixels
    scaling = PixelScaling(mean=np.full((1, 12), 0.3, np.float32), std=np.full((1, 12), 0.2, np.float32))
    pixels = np.random.default_rng(9).integers(0, 256, size=(64, 12)).astype(np.float32)
    np.testing.assert_allclose(
        predictor(fold_model(model, scaling), settings.activation)(pixels), model(scaling.apply(pixels)), **TOLERANCE
    )


def test_a_model_without_batchnorm_is_exported_unchanged(make_settings):
    model = build_model(make_settings("model.hidden=[16,8]"), 12, 5)
    layers = fold_model(model)
    dense = [block.dense for block in model.blocks] + [model.output]
    for layer, original in zip(layers, dense, strict=True):
        np.testing.assert_array_equal(layer.kernel, original.kernel[...])
        np.testing.assert_array_equal(layer.bias, original.bias[...])
    # the only fold left is the pixel scaling, x = p/255, into the first kernel
    first = fold_model(model, PixelScaling())[0]
    np.testing.assert_allclose(first.kernel, np.asarray(dense[0].kernel[...]) / 255, rtol=1e-6)


def train(*args, cwd):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "deeprun.commands.run",
            "data=synthetic",
            "optimizer=adam",
            "optimizer.learning_rate=0.01",
            "schedule=constant",
            "trainer.epochs=3",
            "trainer.plots=false",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(
    scope="module",
    params=[
        ("normalization=batchnorm", "normalization.momentum=0.5"),  # moving statistics far from (0, 1)
        ("normalization=batchnorm_before", "normalization.momentum=0.5", "activation=prelu"),
    ],
)
def bn_run(request, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("export")
    result = train("model.hidden=[32,16]", *request.param, "hydra.run.dir=run", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "run"


def test_export_of_a_trained_run_reproduces_its_logits(bn_run):
    report = export_run(bn_run, ExportOptions(latency=False))
    predict, manifest = load_export(bn_run / "export")
    loaded = load_run(bn_run)
    dataset = loaded.settings.data.load()
    np.testing.assert_allclose(
        predict(dataset.pixels_test.astype(np.float32)), loaded.model()(dataset.x_test), **TOLERANCE
    )
    # no batch norm left: Dense layers only, two arrays each (plus PReLU slopes)
    assert [layer["name"] for layer in manifest["layers"]] == ["hidden_1", "hidden_2", "output"]
    with np.load(bn_run / "export/model.npz") as arrays:
        assert {key.split("/")[1] for key in arrays.files} <= {"kernel", "bias", "alpha"}
        assert arrays["hidden_1/kernel"].shape == (64, 32) and arrays["output/bias"].shape == (10,)
    summary = json.loads((bn_run / "summary.json").read_text())
    assert report["checks"]["folded float32"]["test_accuracy"] == summary["test"]["accuracy"]
    assert report["checks"]["folded float32"]["argmax_agreement"] == 1.0
    for precision in ("bfloat16", "float16"):
        assert report["checks"][f"folded {precision}"]["argmax_agreement"] >= 0.95


def test_bfloat16_export_roundtrips_and_agrees_on_argmax(bn_run):
    export_run(bn_run, ExportOptions(precision="bfloat16", latency=False))
    predict, manifest = load_export(bn_run / "export")
    assert manifest["precision"] == "bfloat16"
    with np.load(bn_run / "export/model.npz") as arrays:
        assert arrays["output/kernel"].dtype == np.uint16  # bfloat16 bits
    dataset = load_run(bn_run).settings.data.load()
    reference = load_run(bn_run).model()(dataset.x_test)
    logits = predict(dataset.pixels_test.astype(np.float32))
    assert np.mean(np.argmax(logits, 1) == np.argmax(reference, 1)) >= 0.95
    np.testing.assert_allclose(logits, reference, atol=0.25)  # bfloat16 keeps 8 significant bits


def test_deeprun_export_command_times_each_precision(bn_run, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deeprun.commands.export",
            str(bn_run),
            "precision=float16",
            "batch_sizes=[1,8]",
            "repeats=3",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "median latency per call" in result.stdout and "folded float16" in result.stdout
    report = json.loads((bn_run / "export/latency.json").read_text())
    rows = {(row["model"], row["batch_size"]) for row in report["latency"]}
    assert rows == {
        (model, size)
        for model in ("unfolded float32", "folded float32", "folded bfloat16", "folded float16")
        for size in (1, 8)
    }
    assert all(row["median_ms"] > 0 for row in report["latency"])
    manifest = json.loads((bn_run / "export/manifest.json").read_text())
    assert manifest["precision"] == "float16" and manifest["program"] == "model.jaxexport"
    # The folded model as a jax.export program runs with JAX alone and gives the npz export's logits.
    script = (
        "import sys, json, jax, numpy as np\n"
        "program = jax.export.deserialize(bytearray(open(sys.argv[1], 'rb').read()))\n"
        "pixels = np.arange(3 * int(sys.argv[2]), dtype=np.float32).reshape(3, -1) % 256\n"
        "print(json.dumps(np.asarray(program.call(pixels)).tolist()))\n"
        "assert not any(name.startswith('deeprun') for name in sys.modules), 'deeprun was imported'\n"
    )
    alone = subprocess.run(
        [sys.executable, "-c", script, str(bn_run / "export/model.jaxexport"), str(manifest["layers"][0]["in"])],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert alone.returncode == 0, alone.stderr
    predict, _ = load_export(bn_run / "export")
    pixels = np.arange(3 * manifest["layers"][0]["in"], dtype=np.float32).reshape(3, -1) % 256
    np.testing.assert_allclose(np.array(json.loads(alone.stdout)), np.asarray(predict(pixels)), rtol=1e-5, atol=1e-5)


def test_deeprun_export_rejects_bad_input(tmp_path):
    for args, message in (
        (["precision=float8"], "precision must be one of float32, bfloat16, float16"),
        (["batch_sizes=[]"], "batch_sizes must not be empty"),
    ):
        with pytest.raises(ConfigError, match=message):
            options_from_tokens(ExportOptions, args)
    result = subprocess.run(
        [sys.executable, "-m", "deeprun.commands.export", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "is not a deeprun run folder" in result.stderr
