"""``deeprun-export RUN_DIR [precision=float32] [batch_sizes=[1,32,256,1024]] [repeats=50]``: the book's
low-latency guideline — fold batch norm into the Dense layers, export, and time inference per precision.

At inference, batch norm is a fixed per-feature affine map (Eq. 11-4 with the moving statistics):

    BN(x) = γ⊗(x − μ)/σ + β = s⊗x + t,   s = γ/σ,  t = β − γ⊗μ/σ,  σ = √(v + ε)   (Keras ε = 1e-3)

so it merges into an adjacent Dense layer (x ↦ xW + b, W of shape in × out):

- BN right after the Dense (``normalization=batchnorm_before``: Dense → BN → activation), the book's
  formula: W' = W·diag(s), i.e. W'[:, j] = γ_j W[:, j]/σ_j, and b' = s⊗b + t = γ⊗(b − μ)/σ + β.
- BN before the Dense (``normalization=batchnorm``: the input BN layer, and BN after each activation,
  which the next Dense reads): (s⊗x + t)W + b = x·diag(s)W + (tW + b), so W' = diag(s)·W (row i scaled
  by s_i) and b' = b + tW.

The pixel scaling the run was trained with (x = p/255, or (p/255 − m)/std when standardizing) is the
same kind of affine map, so it is folded into the first Dense as well: the exported model reads raw
pixel values (0–255, flattened). What remains is Dense → activation → … → Dense, logits out; dropout is
an identity at inference. PReLU's learned slopes are exported with their layer.

``RUN_DIR/export/`` gets ``model.npz`` (kernels, biases, PReLU slopes in ``precision``; bfloat16 stored as
its uint16 bit pattern), ``manifest.json`` (layers, shapes, activation, head, precision) and
``latency.json``: the median time of one jitted call per batch size for the unfolded float32 model and
the folded model in float32, bfloat16 and float16, with each variant's test accuracy and its argmax
agreement with the unfolded model. :func:`load_export` runs the export from these files alone.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from deeprun.files import atomic_open
from deeprun.registry import ConfigError, plain_mapping, require, require_positive

FORMAT = "deeprun-export/1"
Precision = Literal["float32", "bfloat16", "float16"]
PRECISIONS: tuple[Precision, ...] = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ExportOptions:
    precision: Precision = "float32"
    batch_sizes: tuple[int, ...] = (1, 32, 256, 1024)
    repeats: int = 50
    latency: bool = True

    def __post_init__(self) -> None:
        require(len(self.batch_sizes) > 0, "batch_sizes", "must not be empty", self.batch_sizes)
        for i, size in enumerate(self.batch_sizes):
            require_positive(f"batch_sizes[{i}]", size)
        require_positive("repeats", self.repeats)


# ----- folding (float64 numpy, cast at the end) ------------------------------------------------------


@dataclass(frozen=True)
class Affine:
    """A per-feature map x ↦ scale⊗x + shift (batch norm at inference, pixel scaling)."""

    scale: np.ndarray
    shift: np.ndarray

    def then(self, other: Affine) -> Affine:
        """``other ∘ self``: x ↦ other.scale⊗(scale⊗x + shift) + other.shift."""
        return Affine(other.scale * self.scale, other.scale * self.shift + other.shift)


def batchnorm_affine(gamma, beta, mean, var, epsilon: float) -> Affine:
    """Inference BN as s⊗x + t with s = γ/σ, t = β − γ⊗μ/σ, σ = √(v + ε)."""
    gamma, beta, mean, var = (np.asarray(a).astype(np.float64) for a in (gamma, beta, mean, var))
    sigma = np.sqrt(var + epsilon)
    return Affine(gamma / sigma, beta - gamma * mean / sigma)


def pixel_affine(scaling, n_features: int) -> Affine:
    """The run's input scaling: x = p/d → s = 1/d, t = 0; standardized (p/d − m)/std → s = 1/(d·std),
    t = −m/std."""
    scale, shift = np.full(n_features, 1.0 / scaling.divisor), np.zeros(n_features)
    if scaling.mean is None:
        return Affine(scale, shift)
    mean, std = (np.asarray(a).astype(np.float64).reshape(-1) for a in (scaling.mean, scaling.std))
    return Affine(scale / std, shift - mean / std)


def fold_into_previous(kernel, bias, bn: Affine) -> tuple[np.ndarray, np.ndarray]:
    """Dense then BN: W' = W·diag(s) (= γ⊗W/σ per output unit), b' = s⊗b + t (= γ⊗(b − μ)/σ + β)."""
    kernel, bias = np.asarray(kernel).astype(np.float64), np.asarray(bias).astype(np.float64)
    return kernel * bn.scale[None, :], bn.scale * bias + bn.shift


def fold_into_next(affine: Affine, kernel, bias) -> tuple[np.ndarray, np.ndarray]:
    """Affine then Dense: W' = diag(s)·W, b' = b + tW."""
    kernel, bias = np.asarray(kernel).astype(np.float64), np.asarray(bias).astype(np.float64)
    return affine.scale[:, None] * kernel, bias + affine.shift @ kernel


@dataclass
class FoldedLayer:
    """One Dense layer of the folded model; ``alpha``: the learned PReLU slopes after it, if any."""

    name: str
    kernel: np.ndarray
    bias: np.ndarray
    alpha: np.ndarray | None = None


def _bn(norm) -> Affine:
    return batchnorm_affine(norm.scale[...], norm.bias[...], norm.mean[...], norm.var[...], norm.epsilon)


def _dense(dense) -> tuple[np.ndarray, np.ndarray]:
    kernel = np.asarray(dense.kernel[...])
    bias = np.zeros(kernel.shape[1]) if dense.bias is None else np.asarray(dense.bias[...])
    return kernel, bias


def fold_model(model, scaling=None) -> list[FoldedLayer]:
    """The folded Dense layers of an :class:`deeprun.models.MLP` (float32). With ``scaling`` (the run's
    ``PixelScaling``) the result reads raw pixels; without, the scaled inputs the model reads."""
    first = model.blocks[0].dense if len(model.blocks) else model.output
    n_features = first.kernel[...].shape[0]
    pending = pixel_affine(scaling, n_features) if scaling is not None else None  # waits for the next Dense
    if model.input_norm is not None:
        bn = _bn(model.input_norm)
        pending = bn if pending is None else pending.then(bn)
    layers = []
    for index, block in enumerate(model.blocks, start=1):
        kernel, bias = _dense(block.dense)
        if pending is not None:
            kernel, bias = fold_into_next(pending, kernel, bias)
            pending = None
        if block.placement == "before":
            kernel, bias = fold_into_previous(kernel, bias, _bn(block.norm))
        alpha = getattr(block.activation, "alpha", None)  # PReLU: a learned slope per unit
        layers.append(FoldedLayer(f"hidden_{index}", kernel, bias, None if alpha is None else np.asarray(alpha[...])))
        if block.placement == "after":
            pending = _bn(block.norm)
    kernel, bias = _dense(model.output)
    if pending is not None:
        kernel, bias = fold_into_next(pending, kernel, bias)
    layers.append(FoldedLayer("output", kernel, bias))
    return [
        dataclasses.replace(layer, kernel=layer.kernel.astype(np.float32), bias=layer.bias.astype(np.float32))
        for layer in layers
    ]


# ----- inference from the folded layers ------------------------------------------------------------


def predictor(layers: Sequence[FoldedLayer], activation, dtype: Precision = "float32") -> Callable:
    """``predict(x) -> float32 logits``: jitted Dense → activation → … → Dense, computed in ``dtype``.
    ``activation`` is the run's :class:`deeprun.techniques.activations.ActivationSpec` (its inference function)."""
    from deeprun.techniques.activations import leaky_relu

    params = [
        (
            jnp.asarray(layer.kernel, dtype),
            jnp.asarray(layer.bias, dtype),
            None if layer.alpha is None else jnp.asarray(layer.alpha, dtype),
        )
        for layer in layers
    ]

    @jax.jit
    def predict(params, x):
        x = jnp.asarray(x).astype(dtype)
        for i, (kernel, bias, alpha) in enumerate(params):
            x = x @ kernel + bias
            if i < len(params) - 1:
                x = activation.fn(x) if alpha is None else leaky_relu(x, alpha)
        return x.astype(jnp.float32)

    return lambda x: predict(params, x)


def _encode(array: np.ndarray, dtype: Precision) -> np.ndarray:
    """npz has no bfloat16: store its bit pattern as uint16."""
    cast = np.asarray(jnp.asarray(array, dtype))
    return cast.view(np.uint16) if dtype == "bfloat16" else cast


def _decode(array: np.ndarray, dtype: Precision) -> np.ndarray:
    return array.view(jnp.bfloat16) if dtype == "bfloat16" else array


def write_export(
    folder: Path,
    layers: Sequence[FoldedLayer],
    activation_config: dict[str, Any],
    head: str,
    precision: Precision,
    source: Path,
    activation=None,
) -> dict[str, Any]:
    """``model.npz`` + ``manifest.json``; returns the manifest. With ``activation`` (the run's
    :class:`~deeprun.techniques.activations.ActivationSpec`) also the folded model as a ``jax.export``
    program, ``model.jaxexport``, which runs with JAX alone (no deeprun)."""
    from deeprun.files import write_json

    folder.mkdir(parents=True, exist_ok=True)
    if activation is not None:
        _write_program(folder, predictor(layers, activation, precision), int(layers[0].kernel.shape[0]))
    arrays = {}
    for layer in layers:
        arrays[f"{layer.name}/kernel"] = _encode(layer.kernel, precision)
        arrays[f"{layer.name}/bias"] = _encode(layer.bias, precision)
        if layer.alpha is not None:
            arrays[f"{layer.name}/alpha"] = _encode(layer.alpha, precision)
    with atomic_open(folder / "model.npz", "wb") as npz:
        np.savez(npz, **arrays)  # type: ignore[arg-type]
    manifest = {
        "format": FORMAT,
        "source": str(source),
        "precision": precision,
        "input": "raw pixel values (0-255), flattened; the run's scaling and batch norm are folded in",
        "activation": activation_config,
        "head": head,
        **({"program": PROGRAM_FILE} if activation is not None else {}),
        "layers": [
            {
                "name": layer.name,
                "in": int(layer.kernel.shape[0]),
                "out": int(layer.kernel.shape[1]),
                "activation": i < len(layers) - 1,
                "prelu_alpha": layer.alpha is not None,
            }
            for i, layer in enumerate(layers)
        ],
    }
    write_json(folder / "manifest.json", manifest)
    return manifest


def write_program_export(folder: Path, model, scaling, n_features: int, head: str, source: Path) -> dict[str, Any]:
    """A model that is not an MLP (a plugin's): its float32 inference program on raw pixels, serialized
    with ``jax.export`` (StableHLO, the batch size symbolic) into ``model.jaxexport``, + ``manifest.json``."""
    from deeprun.files import write_json

    folder.mkdir(parents=True, exist_ok=True)
    _write_program(folder, unfolded_predictor(model, scaling), n_features)
    manifest = {
        "format": FORMAT,
        "kind": "program",
        "source": str(source),
        "precision": "float32",
        "input": "raw pixel values (0-255), flattened; the run's scaling is part of the program",
        "head": head,
        "program": PROGRAM_FILE,
    }
    write_json(folder / "manifest.json", manifest)
    return manifest


PROGRAM_FILE = "model.jaxexport"


def _write_program(folder: Path, predict: Callable, n_features: int) -> None:
    """``predict`` (raw float32 pixels → logits) serialized with ``jax.export``: StableHLO with its
    weights inside and the batch size symbolic. Load it with ``jax.export.deserialize(bytearray(data))``
    and call ``.call(pixels)``."""
    batch = jax.export.symbolic_shape("batch")[0]
    program = jax.export.export(jax.jit(predict))(jax.ShapeDtypeStruct((batch, n_features), jnp.float32))
    with atomic_open(folder / PROGRAM_FILE, "wb") as file:
        file.write(program.serialize())


def load_export(folder: Path) -> tuple[Callable, dict[str, Any]]:
    """The exported model's ``predict(pixels) -> logits`` and its manifest, from ``folder`` alone."""
    from deeprun.techniques.activations import ACTIVATIONS

    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{folder} is not a deeprun export (format {manifest.get('format')!r})")
    if manifest.get("kind") == "program":
        program = jax.export.deserialize(bytearray((Path(folder) / manifest["program"]).read_bytes()))
        return program.call, manifest
    precision = manifest["precision"]
    with np.load(Path(folder) / "model.npz") as arrays:
        layers = [
            FoldedLayer(
                layer["name"],
                _decode(arrays[f"{layer['name']}/kernel"], precision),
                _decode(arrays[f"{layer['name']}/bias"], precision),
                _decode(arrays[f"{layer['name']}/alpha"], precision) if layer["prelu_alpha"] else None,
            )
            for layer in manifest["layers"]
        ]
    return predictor(layers, ACTIVATIONS.build(manifest["activation"]), precision), manifest


# ----- latency -------------------------------------------------------------------------------------


def median_latency(fn: Callable, x: np.ndarray, repeats: int) -> float:
    """Median wall time in seconds of ``fn(x)`` (compiled and warmed up first; waits for the result)."""
    x = jax.device_put(x)
    jax.block_until_ready(fn(x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def latency_rows(
    variants: dict[str, Callable], n_features: int, batch_sizes: Sequence[int], repeats: int, seed: int = 0
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for batch in batch_sizes:
        pixels = rng.integers(0, 256, size=(batch, n_features)).astype(np.float32)
        for label, fn in variants.items():
            seconds = median_latency(fn, pixels, repeats)
            rows.append(
                {
                    "model": label,
                    "batch_size": batch,
                    "median_ms": seconds * 1e3,
                    "per_example_us": seconds * 1e6 / batch,
                }
            )
    return rows


# ----- the command ---------------------------------------------------------------------------------


def unfolded_predictor(model, scaling) -> Callable:
    """The run's own model (with its BN layers) on raw pixels, jitted: the reference for the export."""
    from flax import nnx

    graphdef, state = nnx.split(model)
    predict = jax.jit(lambda state, pixels: nnx.merge(graphdef, state)(scaling.apply(pixels)))
    return lambda pixels: predict(state, pixels)


def export_run(run_dir: Path, options: ExportOptions) -> dict[str, Any]:
    """Fold, export (``options.precision``), check every precision on the test split, time them."""

    from deeprun.files import write_json
    from deeprun.models import MLP
    from deeprun.runs.folder import environment
    from deeprun.runs.loading import load_run

    run = load_run(run_dir)
    dataset = run.settings.data.load()
    model = run.model()
    folder = run.path / "export"
    variants = {"unfolded float32": unfolded_predictor(model, dataset.scaling)}
    if isinstance(model, MLP):
        layers = fold_model(model, dataset.scaling)
        activation_config = plain_mapping(run.path / ".hydra" / "config.yaml", resolve=False)["activation"]
        write_export(
            folder,
            layers,
            activation_config,
            run.settings.model.head,
            options.precision,
            run.path.resolve(),
            activation=run.settings.activation,
        )
        variants |= {f"folded {p}": predictor(layers, run.settings.activation, p) for p in PRECISIONS}
        label = f"folded {options.precision}"
    else:
        require(
            options.precision == "float32",
            "precision",
            "must be float32 for a model that is not an MLP",
            options.precision,
        )
        write_program_export(
            folder, model, dataset.scaling, run.n_features, run.settings.model.head, run.path.resolve()
        )
        label = "exported program float32"
    exported, _ = load_export(folder)
    variants[label] = exported  # the exported files themselves, not the arrays in memory
    unfolded = variants["unfolded float32"]
    pixels_test = dataset.pixels_test.astype(np.float32)
    reference = np.asarray(unfolded(pixels_test))
    checks = {}
    for label, fn in variants.items():
        logits = np.asarray(fn(pixels_test))
        checks[label] = {
            "test_accuracy": float(np.mean(logits.argmax(1) == dataset.y_test)),
            "argmax_agreement": float(np.mean(logits.argmax(1) == reference.argmax(1))),
            "max_abs_logit_diff": float(np.max(np.abs(logits - reference))),
        }
    report = {
        "export": str(folder.resolve()),
        "precision": options.precision,
        "checks": checks,
        "latency": latency_rows(variants, run.n_features, options.batch_sizes, options.repeats)
        if options.latency
        else [],
        "device": environment()["device"],
    }
    write_json(folder / "latency.json", report)
    return report
