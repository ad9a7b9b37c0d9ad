"""``deeprun-prune RUN_DIR threshold=T [save=true] [overwrite=false]``: the book's sparse-model guideline — train with ℓ1
(``regularizer=l1``), then zero out the tiny weights.

Every Dense kernel (hidden and output) has its weights with |w| < T set to 0; biases, BN parameters and
statistics are kept. The run is evaluated on its validation and test splits before and after (the loss is
Keras's: cross-entropy plus the run's ℓ1/ℓ2 penalty, which pruning shrinks too, so the penalty is recorded
as well). ``prune.json`` in the run folder records, per layer, the kernel's size, its zeros before and after
and the sparsity (fraction of zeros after pruning), the totals, and the metrics before/after. With
``save=true`` the pruned weights go to ``RUN_DIR/pruned/``, itself a run folder (config, summary,
checkpoint) that ``deeprun-eval`` and ``deeprun-export`` accept.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from deeprun.registry import ConfigError, require_non_negative


@dataclass(frozen=True)
class PruneOptions:
    threshold: float
    save: bool = True
    overwrite: bool = False  # replace an earlier prune of the run (prune.json, pruned/)

    def __post_init__(self) -> None:
        require_non_negative("threshold", self.threshold)


def prune_kernel(kernel: jnp.ndarray, threshold: float) -> jnp.ndarray:
    """w ↦ 0 where |w| < threshold, else w (threshold 0 changes nothing)."""
    return jnp.where(jnp.abs(kernel) < threshold, 0.0, kernel).astype(kernel.dtype)


def prune_model(model, threshold: float) -> list[dict[str, Any]]:
    """Zero ``model``'s small kernel weights in place; one record per Dense layer."""
    layers = []
    for name, dense in model.kernel_layers():
        kernel = dense.kernel[...]
        pruned = prune_kernel(kernel, threshold)
        dense.kernel[...] = pruned
        zeros_after = int(jnp.sum(pruned == 0))
        layers.append(
            {
                "name": name,
                "shape": list(kernel.shape),
                "weights": int(kernel.size),
                "zeros_before": int(jnp.sum(kernel == 0)),
                "zeros_after": zeros_after,
                "sparsity": zeros_after / kernel.size,
            }
        )
    return layers


def totals(layers: list[dict[str, Any]]) -> dict[str, Any]:
    weights = sum(layer["weights"] for layer in layers)
    zeros = sum(layer["zeros_after"] for layer in layers)
    return {
        "weights": weights,
        "zeros_before": sum(layer["zeros_before"] for layer in layers),
        "zeros_after": zeros,
        "sparsity": zeros / weights,
    }


def prune_run(run_dir: Path, options: PruneOptions) -> dict[str, Any]:
    """Prune ``run_dir``'s final weights, evaluate before/after, write ``prune.json`` (and ``pruned/``)."""
    from flax import nnx

    from deeprun.files import write_json
    from deeprun.runs.loading import load_run
    from deeprun.training.trainer import Trainer

    run = load_run(run_dir)
    earlier = run.path / "prune.json"
    if earlier.exists() and not options.overwrite:
        threshold = json.loads(earlier.read_text()).get("threshold")
        raise ConfigError(
            f"{run.path} was already pruned at threshold {threshold} (prune.json"
            f"{', pruned/' if (run.path / 'pruned').exists() else ''}); give overwrite=true to replace it"
        )
    dataset = run.settings.data.load()
    trainer = Trainer(run.settings, len(dataset.y_train), run.n_features, run.n_classes)

    def evaluate(state) -> dict[str, dict[str, float]]:
        return {
            split: trainer.evaluate(
                state,
                run.settings.regularization,
                dataset.scaling,
                getattr(dataset, f"pixels_{split}"),
                getattr(dataset, f"y_{split}"),
            )
            for split in ("val", "test")
        }

    def penalty(model) -> float:
        return float(run.settings.regularization.penalty(model.kernels()))

    model = nnx.clone(run.model())  # merged models share their variables with run.state: prune a copy
    penalty_before = penalty(model)
    layers = prune_model(model, options.threshold)
    _, params, _ = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
    pruned = run.state._replace(params=params)
    report = {
        "run": str(run.path.resolve()),
        "threshold": options.threshold,
        "l1": run.settings.regularization.l1,
        "layers": layers,
        "total": totals(layers),
        "before": {**evaluate(run.state), "penalty": penalty_before},
        "after": {**evaluate(pruned), "penalty": penalty(model)},
        "pruned_run": str(run.path.resolve() / "pruned") if options.save else None,
    }
    if options.save:
        save_pruned_run(run.path, pruned, report)
    write_json(run.path / "prune.json", report)
    return report


def save_pruned_run(run_dir: Path, state, report: dict[str, Any]) -> Path:
    """``run_dir/pruned/``: the source's config, a summary with the pruned metrics, the pruned checkpoint."""
    import json

    from deeprun.files import write_json
    from deeprun.runs.checkpoints import save_state

    folder = run_dir / "pruned"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(run_dir / ".hydra", folder / ".hydra")
    source = json.loads((run_dir / "summary.json").read_text())
    write_json(
        folder / "summary.json",
        {
            "name": f"{source.get('name', run_dir.name)} (pruned)",
            "status": "pruned",
            "source": str(run_dir),
            "threshold": report["threshold"],
            "sparsity": report["total"]["sparsity"],
            "val": report["after"]["val"],
            "test": report["after"]["test"],
            "data": source["data"],
        },
    )
    save_state(folder / "checkpoint", state)
    return folder
