"""``deeprun-eval RUN_DIR [mc_samples=100] [split=test] [seed=42] [bins=15]``: evaluate a finished run's
accuracy and calibration, with Monte Carlo dropout (Gal & Ghahramani 2016) when ``mc_samples`` > 0.

MC dropout averages the class probabilities of ``mc_samples`` stochastic passes, each in Keras's
``training=True`` mode (dropout active, batch norm on batch statistics), over the whole split.
Calibration is the expected calibration error over ``bins`` equal-width confidence bins
(:mod:`deeprun.reports.calibration`), of the deterministic model (dropout off) and of the MC-dropout mean.

Files written into the run folder:

- ``mc_dropout.json``: accuracy and ECE, deterministic and (``mc_*``) with MC dropout; the mean
  predictive entropy and predicted-class std of correct and wrong predictions; each reliability bin;
  the first example's probabilities;
- ``calibration.png``: the reliability diagram (accuracy vs confidence per bin, the diagonal, ECE in
  the legend) over the histogram of confidences;
- with MC dropout, ``mc_dropout.npz`` (per example: ``mean`` and ``std`` (n, K) over the passes,
  ``predicted_std`` the std of the predicted class's probability, ``entropy`` H(p̄) = −Σ p̄ log p̄,
  ``deterministic`` the (n, K) probabilities with dropout off, ``labels``) and ``mc_dropout.png`` (the
  first example's mean ± std per class).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from deeprun.files import atomic_open
from deeprun.registry import ConfigError, require_non_negative, require_positive
from deeprun.reports.calibration import entropy, expected_calibration_error, mc_statistics, reliability_bins


@dataclass(frozen=True)
class EvalOptions:
    mc_samples: int = 100
    split: str = "test"
    seed: int = 42
    chunk: int = 2000
    bins: int = 15  # equal-width confidence bins of the calibration error and the reliability diagram

    def __post_init__(self) -> None:
        require_non_negative("mc_samples", self.mc_samples)
        require_positive("bins", self.bins)
        if self.split not in ("train", "val", "test"):
            raise ConfigError(f"split must be one of train, val, test (got {self.split!r})")


def probabilities(
    graphdef, state, x: jax.Array, head: str, *, key: jax.Array | None = None, dropout=None, chunk: int
) -> jax.Array:
    """Class probabilities of ``x`` in chunks; stochastic (training mode) when ``key`` is given."""
    from flax import nnx

    from deeprun.models import predict_probabilities

    model = nnx.merge(graphdef, state, copy=True)  # fresh variables: BN may update them in training mode
    outputs = []
    for start in range(0, x.shape[0], chunk):
        xb = x[start : start + chunk]
        if key is None:
            logits = model(xb)
        else:
            logits = model(xb, train=True, key=jax.random.fold_in(key, start), dropout=dropout)
        outputs.append(predict_probabilities(logits, head))  # type: ignore[arg-type]
    return jnp.concatenate(outputs)


def uncertainty_summary(
    entropy: np.ndarray, correct: np.ndarray, predicted_std: np.ndarray | None = None
) -> dict[str, float | None]:
    """Mean predictive entropy (and predicted-class std) over all, correct and wrong predictions: an
    uncertainty measure worth having is higher where the model is wrong."""
    summary: dict[str, float | None] = {}
    for name, values in (("entropy", entropy), ("predicted_std", predicted_std)):
        if values is None:
            continue
        for subset, mask in (("", np.ones_like(correct)), ("_correct", correct), ("_wrong", ~correct)):
            summary[f"mean_{name}{subset}"] = float(values[mask].mean()) if mask.any() else None
    return summary


def mc_dropout(run_dir: Path, options: EvalOptions) -> dict[str, Any]:
    """Evaluate ``run_dir`` plainly and with MC dropout; write the files; return the report."""
    from deeprun.files import write_json
    from deeprun.runs.loading import load_run

    run = load_run(run_dir)
    dataset = run.settings.data.load()
    x = jnp.asarray(getattr(dataset, f"x_{options.split}"))
    y = np.asarray(getattr(dataset, f"y_{options.split}"))
    from flax import nnx

    graphdef, state = nnx.split(run.model())
    head = run.settings.model.head
    plain = np.asarray(jax.jit(lambda x: probabilities(graphdef, state, x, head, chunk=options.chunk))(x))
    curves = {"deterministic": reliability_bins(plain, y, options.bins)}
    report: dict[str, Any] = {
        "split": options.split,
        "mc_samples": options.mc_samples,
        "bins": options.bins,
        "accuracy": float(np.mean(plain.argmax(1) == y)),
        "ece": expected_calibration_error(plain, y, options.bins),
        "uncertainty": {"deterministic": uncertainty_summary(entropy(plain), plain.argmax(1) == y)},
        "first_example": {"label": int(y[0]), "probabilities": plain[0].astype(np.float64).round(4).tolist()},
    }
    if options.mc_samples:
        dropout = run.settings.regularization.dropout
        keys = jax.random.split(jax.random.key(options.seed), options.mc_samples)

        def sample(key):
            return probabilities(graphdef, state, x, head, key=key, dropout=dropout, chunk=options.chunk)

        # One program for every pass (the pass traced once, mapped over the keys), read back once.
        stats = mc_statistics(np.asarray(jax.jit(lambda keys: jax.lax.map(sample, keys))(keys)))
        mc_correct = stats.predicted == y
        curves["mc_dropout"] = reliability_bins(stats.mean, y, options.bins)
        report.update(
            {
                "mc_accuracy": float(np.mean(mc_correct)),
                "mc_ece": expected_calibration_error(stats.mean, y, options.bins),
                "has_dropout": dropout is not None,
            }
        )
        report["uncertainty"]["mc_dropout"] = uncertainty_summary(stats.entropy, mc_correct, stats.predicted_std)
        report["first_example"].update(
            {"mc_mean": stats.mean[0].round(4).tolist(), "mc_std": stats.std[0].round(4).tolist()}
        )
        with atomic_open(run.path / "mc_dropout.npz", "wb") as npz:
            np.savez_compressed(
                npz,
                mean=stats.mean.astype(np.float32),
                std=stats.std.astype(np.float32),
                predicted_std=stats.predicted_std.astype(np.float32),
                entropy=stats.entropy.astype(np.float32),
                deterministic=plain,
                labels=y,
            )
        from deeprun.reports.figures import mc_dropout_figure

        mc_dropout_figure(
            stats.mean[0],
            stats.std[0],
            dataset.class_names,
            run.path / "mc_dropout.png",
            title=f"MC dropout, first {options.split} example ({options.mc_samples} passes)",
        )
    report["reliability"] = {name: bins.rows() for name, bins in curves.items()}
    from deeprun.reports.figures import reliability_figure

    labels = {"deterministic": "dropout off", "mc_dropout": f"MC dropout, {options.mc_samples} passes"}
    reliability_figure(
        {labels[name]: bins for name, bins in curves.items()},
        run.path / "calibration.png",
        title=f"Reliability diagram, {options.split} split ({options.bins} bins)",
    )
    write_json(run.path / "mc_dropout.json", report)
    return report
