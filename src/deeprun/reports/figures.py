"""The chapter's figures, drawn from formulas and from deeprun's own functions (spec §5).

Each ``*_figure`` function writes one PNG (matplotlib Agg, like :mod:`deeprun.runs.plots`) and returns its
path. The activation figures also have a ``*_plot`` builder returning the open :class:`Figure`, whose
lines carry labels, so their data can be checked; the curves come from :data:`deeprun.techniques.activations.ACTIVATIONS`
and :func:`deeprun.techniques.schedules.learning_rate_curve`, not from re-implementations.

- Fig 11-1 ``sigmoid_saturation_plot``, Fig 11-2 ``leaky_relu_plot`` (α = 0.1, as in [ml3]),
  Fig 11-3 ``elu_selu_plot``, Fig 11-4 ``gelu_swish_mish_plot``: :func:`activation_figures`
- a learning-rate schedule: :func:`schedule_figure`; the notebook's power / exponential / piecewise
  plots: :func:`book_schedule_figures`
- LR finder: :func:`lr_finder_figure`; optimizers' learning curves: :func:`optimizer_curves_figure`;
  MC dropout: :func:`mc_dropout_figure`; calibration:
  :func:`reliability_figure`; signal propagation through freshly initialized layers (deeprun-signal):
  :func:`signal_figure`
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from deeprun.files import write_figure

ACTIVATION_FIGURES = ("sigmoid_saturation_plot", "leaky_relu_plot", "elu_selu_plot", "gelu_swish_mish_plot")


# --------------------------------------------------------------------------------------------------
# Activation functions (Figures 11-1 to 11-4)
# --------------------------------------------------------------------------------------------------


def activation_values(name: str, z: np.ndarray, **fields: Any) -> np.ndarray:
    """``ACTIVATIONS.build({"name": name, **fields}).fn`` evaluated on ``z`` (float32), as NumPy."""
    import jax.numpy as jnp

    from deeprun.techniques.activations import ACTIVATIONS

    fn = ACTIVATIONS.build({"name": name, **fields}).fn
    return np.asarray(fn(jnp.asarray(z, jnp.float32)), dtype=np.float64)


def selu_asymptote() -> float:
    """lim_{z→−∞} SELU(z) = −scale·α ≈ −1.7581."""
    from deeprun.techniques.activations import SELU_ALPHA, SELU_SCALE

    return -SELU_SCALE * SELU_ALPHA


def _arrow(ax, text: str, xytext: tuple[float, float], xy: tuple[float, float]) -> None:
    ax.annotate(text, xytext=xytext, xy=xy, arrowprops={"facecolor": "black", "shrink": 0.1}, fontsize=14, ha="center")


def sigmoid_saturation_plot() -> Figure:
    """Fig 11-1: the sigmoid, its saturating ends and its linear part (tangent 1/2 + z/4 at 0)."""
    z = np.linspace(-5, 5, 200)
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    ax.plot([-5, 5], [0, 0], "k-", label="_axis")
    ax.plot([-5, 5], [1, 1], "k--", label="_asymptote 1")
    ax.plot([0, 0], [-0.2, 1.2], "k-", label="_axis")
    ax.plot([-5, 5], [-3 / 4, 7 / 4], "g--", label="_linear")
    ax.plot(z, activation_values("sigmoid", z), "b-", linewidth=2, label=r"$\sigma(z) = \dfrac{1}{1+e^{-z}}$")
    _arrow(ax, "Saturating", (3.5, 0.7), (5, 1))
    _arrow(ax, "Saturating", (-3.5, 0.3), (-5, 0))
    _arrow(ax, "Linear", (2, 0.2), (0, 0.5))
    ax.grid(True)
    ax.axis((-5, 5, -0.2, 1.2))
    ax.set_xlabel("$z$")
    ax.legend(loc="upper left", fontsize=16)
    ax.set_title("Sigmoid activation function", fontsize=14)
    fig.tight_layout()
    return fig


def leaky_relu_plot(alpha: float = 0.1) -> Figure:
    """Fig 11-2: leaky ReLU with a visible leak (α = 0.1 in [ml3], 0.05 in [ml2])."""
    z = np.linspace(-5, 5, 200)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(
        z,
        activation_values("leaky_relu", z, alpha=alpha),
        "b-",
        linewidth=2,
        label=rf"$LeakyReLU(z) = max(\alpha z, z)$, $\alpha={alpha:g}$",
    )
    ax.plot([-5, 5], [0, 0], "k-", label="_axis")
    ax.plot([0, 0], [-1, 3.7], "k-", label="_axis")
    ax.grid(True)
    _arrow(ax, "Leak", (-3.5, 0.5), (-4.5, -4.5 * alpha))
    ax.set_xlabel("$z$")
    ax.axis((-5, 5, -1, 3.7))
    ax.set_aspect("equal")
    ax.legend(loc="upper left")
    ax.set_title("Leaky ReLU", fontsize=14)
    fig.tight_layout()
    return fig


def elu_selu_plot() -> Figure:
    """Fig 11-3: ELU (α = 1) and SELU, with their asymptotes −1 and −1.758 dotted."""
    z = np.linspace(-5, 5, 200)
    low = selu_asymptote()
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    ax.plot(
        z,
        activation_values("elu", z, alpha=1.0),
        "b-",
        linewidth=2,
        label=r"ELU$_\alpha(z) = \alpha (e^z - 1)$ if $z < 0$, else $z$",
    )
    ax.plot(z, activation_values("selu", z), "r--", linewidth=2, label=r"SELU$(z) = 1.05 \, $ELU$_{1.67}(z)$")
    ax.plot([-5, 5], [0, 0], "k-", label="_axis")
    ax.plot([-5, 5], [-1, -1], "k:", linewidth=2, label="_asymptote ELU")
    ax.plot([-5, 5], [low, low], "k:", linewidth=2, label="_asymptote SELU")
    ax.plot([0, 0], [-2.2, 3.2], "k-", label="_axis")
    ax.text(4.9, -1 + 0.08, "−1", ha="right", fontsize=10)
    ax.text(4.9, low + 0.08, f"{low:.3f}".replace("-", "−"), ha="right", fontsize=10)
    ax.grid(True)
    ax.axis((-5, 5, -2.2, 3.2))
    ax.set_xlabel("$z$")
    ax.set_aspect("equal")
    ax.legend(loc="upper left")
    ax.set_title("ELU and SELU", fontsize=14)
    fig.tight_layout()
    return fig


def gelu_swish_mish_plot(beta: float = 0.6) -> Figure:
    """Fig 11-4: approximate GELU (= Swish with β = 1.702), Swish (β = 1), Swish (β = ``beta``), Mish."""
    z = np.linspace(-4, 2, 200)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(
        z,
        activation_values("swish", z, beta=1.702),
        "b-",
        linewidth=2,
        label=r"GELU$(z) = z\,\Phi(z) \approx z\,\sigma(1.702\,z)$",
    )
    ax.plot(z, activation_values("swish", z, beta=1.0), "r--", linewidth=2, label=r"Swish$(z) = z\,\sigma(z)$")
    ax.plot(
        z,
        activation_values("swish", z, beta=beta),
        "r:",
        linewidth=2,
        label=rf"Swish$_{{\beta={beta:g}}}(z)=z\,\sigma({beta:g}\,z)$",
    )
    ax.plot(z, activation_values("mish", z), "g:", linewidth=3, label=r"Mish$(z) = z\,\tanh($softplus$(z))$")
    ax.plot([-4, 2], [0, 0], "k-", label="_axis")
    ax.plot([0, 0], [-2.2, 3.2], "k-", label="_axis")
    ax.grid(True)
    ax.axis((-4, 2, -1, 2))
    ax.set_aspect("equal")
    ax.set_xlabel("$z$")
    ax.legend(loc="upper left")
    ax.set_title("GELU, Swish and Mish", fontsize=14)
    fig.tight_layout()
    return fig


def sigmoid_saturation_figure(path: Path) -> Path:
    return write_figure(sigmoid_saturation_plot(), path)


def leaky_relu_figure(path: Path, alpha: float = 0.1) -> Path:
    return write_figure(leaky_relu_plot(alpha), path)


def elu_selu_figure(path: Path) -> Path:
    return write_figure(elu_selu_plot(), path)


def gelu_swish_mish_figure(path: Path) -> Path:
    return write_figure(gelu_swish_mish_plot(), path)


def activation_figures(out_dir: Path) -> list[Path]:
    """Figures 11-1 to 11-4 as ``<out_dir>/<notebook name>.png`` (:data:`ACTIVATION_FIGURES`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    builders = (sigmoid_saturation_figure, leaky_relu_figure, elu_selu_figure, gelu_swish_mish_figure)
    return [build(out_dir / f"{name}.png") for build, name in zip(builders, ACTIVATION_FIGURES, strict=True)]


# --------------------------------------------------------------------------------------------------
# Learning-rate schedules
# --------------------------------------------------------------------------------------------------


def _schedule_option(spec: Any) -> tuple[str, Any]:
    """(registry name, validated option) from an option instance or a ``{"name": ..., ...}`` mapping."""
    from deeprun.techniques.schedules import SCHEDULES

    if isinstance(spec, str):
        spec = {"name": spec}
    if isinstance(spec, Mapping):
        return str(spec["name"]), SCHEDULES.build(spec)
    if dataclasses.is_dataclass(spec):
        for name in SCHEDULES.names():
            if SCHEDULES.get(name) is type(spec):
                return name, spec
    raise TypeError(f"not a schedule option: {spec!r}")


def schedule_curve(
    schedule_spec: Any,
    base_lr: float,
    steps_per_epoch: int,
    epochs: int,
    per: Literal["step", "epoch"] = "step",
) -> tuple[np.ndarray, np.ndarray, str]:
    """(x, lr, unit) of a schedule: per step (x = 0 … steps−1), or per epoch (x = 1 … epochs, the lr of
    each epoch's first step) when ``per="epoch"`` or the schedule's ``unit`` is epoch."""
    from deeprun.techniques.schedules import learning_rate_curve

    name, option = _schedule_option(schedule_spec)
    schedule = option.resolve(base_lr, steps_per_epoch, epochs)
    if not schedule.sets_learning_rate:
        raise ValueError(f"schedule {name!r} reacts to validation metrics; its rates are a run's, in metrics.jsonl")
    lrs = learning_rate_curve(schedule, steps_per_epoch, epochs).astype(np.float64)
    if per == "epoch" or schedule.unit == "epoch":
        return np.arange(1, epochs + 1), lrs[::steps_per_epoch][:epochs], "epoch"
    return np.arange(len(lrs)), lrs, "step"


def schedule_figure(
    schedule_spec: Any,
    base_lr: float,
    steps_per_epoch: int,
    epochs: int,
    path: Path,
    per: Literal["step", "epoch"] = "step",
    title: str | None = None,
) -> Path:
    """The learning rate of a ``schedule`` option (instance, or mapping with ``name``) over a run, as in
    the notebook's schedule plots: axis [0, last, 0, 1.1·max]."""
    name, _ = _schedule_option(schedule_spec)
    x, lrs, unit = schedule_curve(schedule_spec, base_lr, steps_per_epoch, epochs, per)
    fig = Figure(figsize=(8, 3.5))
    ax = fig.subplots()
    ax.plot(x, lrs, "o-" if unit == "epoch" and len(x) <= 100 else "-", linewidth=2, markersize=4)
    ax.set_xlim(x[0], max(x[-1], x[0] + 1))
    ax.set_ylim(0, float(np.max(lrs)) * 1.1)
    ax.set_xlabel("Epoch" if unit == "epoch" else "Step")
    ax.set_ylabel("Learning Rate")
    ax.set_title(title if title is not None else f"{name} scheduling", fontsize=14)
    ax.grid(True)
    fig.tight_layout()
    return write_figure(fig, path)


def book_schedule_figures(out_dir: Path) -> list[Path]:
    """[ml3]'s formula-based schedule plots over steps 0–100k: power (η0 = 0.01, s = 10,000), exponential
    (η0 = 0.01, r = 0.1, s = 20,000) and piecewise (0.01 / 0.005 / 0.001, boundaries 50k and 80k)."""
    out_dir = Path(out_dir)
    specs = {
        "power_scheduling": ({"name": "power", "initial_lr": 0.01, "decay_steps": 10_000}, "Power Scheduling"),
        "exponential_scheduling": (
            {"name": "exponential", "initial_lr": 0.01, "decay_rate": 0.1, "decay_steps": 20_000},
            "Exponential Scheduling",
        ),
        "piecewise_constant_scheduling": (
            {"name": "piecewise", "boundaries": [50_000, 80_000], "values": [0.01, 0.005, 0.001], "unit": "step"},
            "Piecewise Constant Scheduling",
        ),
    }
    return [
        schedule_figure(spec, 0.01, 1_000, 100, out_dir / f"{name}.png", title=title)
        for name, (spec, title) in specs.items()
    ]


# --------------------------------------------------------------------------------------------------
# Figures of training results
# --------------------------------------------------------------------------------------------------


def _floats(values: Any) -> np.ndarray:
    """float64 values, None (a missing number in JSON) as NaN."""
    return np.asarray([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def lr_finder_figure(rates: ArrayLike, losses: ArrayLike, path: Path, suggested: float | None = None) -> Path:
    """:func:`lr_finder_plot` written to ``path``."""
    return write_figure(lr_finder_plot(rates, losses, suggested), path)


def lr_finder_plot(rates: ArrayLike, losses: ArrayLike, suggested: float | None = None) -> Figure:
    """Loss vs learning rate (log x) of an LR-finder sweep, a horizontal line at the minimum loss and
    y ∈ [0, losses[0] + min(losses)], as in the book; ``suggested``: a dashed vertical line and a dot at
    the suggested max rate."""
    rates, losses = _floats(rates), _floats(losses)
    if len(rates) != len(losses) or len(rates) == 0:
        raise ValueError(f"need as many losses as rates, at least one (got {len(rates)} and {len(losses)})")
    finite = losses[np.isfinite(losses)]
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    ax.plot(rates, np.where(np.isfinite(losses), losses, np.nan), "b")
    ax.set_xscale("log")
    ax.set_xlim(rates.min(), rates.max())
    if finite.size:
        min_loss = float(finite.min())
        ax.hlines(min_loss, rates.min(), rates.max(), color="k")
        top = (losses[0] if np.isfinite(losses[0]) else float(finite.max())) + min_loss
        ax.set_ylim(0, top if top > 0 else 1)
    if suggested is not None:
        ax.axvline(suggested, color="r", linestyle="--", label=f"suggested max rate {suggested:.3g}")
        at = int(np.argmin(np.abs(np.log(rates) - np.log(suggested))))
        ax.plot([rates[at]], [losses[at]], "ro")
        ax.legend(loc="upper left")
    ax.set_xlabel("Learning rate")
    ax.set_ylabel("Loss")
    ax.grid(True)
    fig.tight_layout()
    return fig


def optimizer_curves_figure(
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    path: Path,
    axis: Sequence[float] | None = (0, 9, 0.1, 0.7),
) -> Path:
    """Training loss and validation loss per epoch, one line per optimizer (the ``metrics.jsonl``
    records of each run). x is the 0-based epoch index like Keras's ``history.epoch``, so the book's
    axis [0, 9, 0.1, 0.7] shows 10 epochs; only the limits are set (no data is dropped), x widened to
    show longer runs. ``axis=None`` autoscales."""
    fig = Figure(figsize=(14, 5.5))
    axes = fig.subplots(1, 2, sharex=True)
    last = 0
    for name, history in histories.items():
        x = np.asarray([record.get("epoch", i + 1) - 1 for i, record in enumerate(history)])
        if len(x):
            last = max(last, int(x.max()))
        for ax, key in zip(axes, ("train/loss", "val/loss"), strict=True):
            ax.plot(x, _floats([record.get(key) for record in history]), label=name, linewidth=3)
    for ax, ylabel in zip(axes, ("Training loss", "Validation loss"), strict=True):
        ax.grid(True)
        ax.set_xlabel("Epochs")
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper left")
        if axis is not None:
            ax.set_xlim(axis[0], max(axis[1], last))
            ax.set_ylim(axis[2], axis[3])
    fig.tight_layout()
    return write_figure(fig, path)


def mc_dropout_figure(
    probabilities_mean: Sequence[float],
    probabilities_std: Sequence[float],
    class_names: Sequence[str],
    path: Path,
    title: str = "MC dropout: mean class probabilities ± 1 std",
) -> Path:
    """MC-dropout prediction for one example: mean probability per class with std error bars
    (the most probable class highlighted)."""
    mean, std = _floats(probabilities_mean), _floats(probabilities_std)
    if not len(mean) == len(std) == len(class_names):
        raise ValueError(
            f"need one mean, one std and one name per class (got {len(mean)}, {len(std)}, {len(class_names)})"
        )
    colors = ["tab:gray"] * len(mean)
    if len(mean) and np.isfinite(mean).any():
        colors[int(np.nanargmax(mean))] = "tab:blue"
    fig = Figure(figsize=(max(6, 0.7 * len(mean) + 2), 4))
    ax = fig.subplots()
    x = np.arange(len(mean))
    ax.bar(x, mean, yerr=std, capsize=4, color=colors)
    for i, (m, s) in enumerate(zip(mean, std, strict=True)):
        if np.isfinite(m) and m >= 0.01:
            ax.text(i, min(m + (s if np.isfinite(s) else 0) + 0.02, 1.04), f"{m:.2f}", ha="center", fontsize=8)
    ax.set_xticks(
        x,
        [str(name) for name in class_names],
        rotation=45 if len(mean) > 5 else 0,
        ha="right" if len(mean) > 5 else "center",
    )
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("probability")
    ax.grid(True, axis="y", alpha=0.4)
    if title:
        ax.set_title(title, fontsize=12)
    fig.tight_layout()
    return write_figure(fig, path)


def reliability_plot(curves: Mapping[str, Any], title: str = "Reliability diagram") -> Figure:
    """Calibration of one or more predictors (``curves``: label → :class:`deeprun.reports.calibration.ReliabilityBins`
    over the same bins). Top: each non-empty bin's accuracy vs its mean confidence (line ``"<label> (ECE
    x)"``), the diagonal of perfect calibration; bottom: the fraction of examples per confidence bin."""
    fig = Figure(figsize=(6, 7))
    (top, bottom) = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    for offset, (label, bins) in enumerate(curves.items()):
        filled = bins.count > 0
        top.plot(
            bins.confidence[filled], bins.accuracy[filled], "o-", markersize=4, label=f"{label} (ECE {bins.ece:.4f})"
        )
        edges = np.asarray(bins.edges)
        width = np.diff(edges) / (len(curves) + 1)
        bottom.bar(
            edges[:-1] + width * (offset + 0.5), bins.count / max(bins.n, 1), width=width, align="edge", label=label
        )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.04)  # bins at accuracy 1 stay visible
    top.set_ylabel("accuracy")
    top.grid(True, alpha=0.4)
    top.legend(loc="best")
    bottom.set_xlabel("confidence (probability of the predicted class)")
    bottom.set_ylabel("fraction")
    bottom.grid(True, axis="y", alpha=0.4)
    if title:
        top.set_title(title, fontsize=12)
    fig.tight_layout()
    return fig


def reliability_figure(curves: Mapping[str, Any], path: Path, title: str = "Reliability diagram") -> Path:
    """:func:`reliability_plot` written to ``path``."""
    return write_figure(reliability_plot(curves, title), path)


def signal_figure(depths: ArrayLike, series: Mapping[str, ArrayLike], path: Path, title: str = "") -> Path:
    """``deeprun-signal``: the mean (left, linear) and the std and rms (right, log scale) of each layer's
    output vs depth, with the self-normalized values 0 and 1 dashed."""
    depths = np.asarray(depths)
    fig = Figure(figsize=(12, 4.5))
    (left, right) = fig.subplots(1, 2, sharex=True)
    mean = _floats(series["mean"])
    left.plot(depths, mean, "b", label="mean")
    left.axhline(0, color="k", linestyle="--", linewidth=1)
    left.set_ylabel("mean")
    # At least [-1, 1] and [0.1, 10]: a self-normalized signal then looks flat, as it is.
    finite = mean[np.isfinite(mean)]
    left.set_ylim(min(-1.0, finite.min(initial=0) * 1.1), max(1.0, finite.max(initial=0) * 1.1))
    positive_parts = []
    for name, style in (("std", "r"), ("rms", "g")):
        values = _floats(series[name])
        values = np.where((values > 0) & np.isfinite(values), values, np.nan)  # log axis: drop 0 and inf
        positive_parts.append(values[np.isfinite(values)])
        right.plot(depths, values, style, label=name)
    right.axhline(1, color="k", linestyle="--", linewidth=1)
    right.set_yscale("log")
    positive = np.concatenate(positive_parts)
    right.set_ylim(min(0.1, positive.min(initial=1) / 2), max(10.0, positive.max(initial=1) * 2))
    right.set_ylabel("std, rms (log scale)")
    for ax in (left, right):
        ax.set_xlabel("depth (layers)")
        ax.grid(True, alpha=0.4)
        ax.legend(loc="best")
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return write_figure(fig, path)


def optimizer_curves_from_sweep(folder: Path) -> Path:
    """The book's two optimizer figures from a sweep folder: one curve per job, labelled by its optimizer."""
    from deeprun.runs.records import collect_runs

    histories = {}
    for run in collect_runs(folder):
        label = next((o.split("=", 1)[1] for o in run.overrides.split() if o.startswith("optimizer=")), run.job)
        if run.metrics:
            histories[label] = run.metrics
    return optimizer_curves_figure(histories, Path(folder) / "optimizer_curves.png")
