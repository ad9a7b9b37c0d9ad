"""The chapter's figures: each writes a valid PNG, and the plotted data match the book's formulas."""

from __future__ import annotations

import math

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest

from deeprun.reports import figures
from deeprun.techniques.schedules import OneCycle

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def lines_by_label(fig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    ax = fig.axes[0]
    return {line.get_label(): tuple(np.asarray(d, float) for d in line.get_data()) for line in ax.get_lines()}


def find(lines, prefix):
    matches = [data for label, data in lines.items() if label.startswith(prefix)]
    assert len(matches) == 1, (prefix, list(lines))
    return matches[0]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_activation_figures_write_four_pngs(tmp_path):
    paths = figures.activation_figures(tmp_path / "figs")
    assert [p.name for p in paths] == [f"{name}.png" for name in figures.ACTIVATION_FIGURES]
    for path in paths:
        assert_png(path)


def test_sigmoid_saturation_data():
    lines = lines_by_label(figures.sigmoid_saturation_plot())
    z, y = find(lines, r"$\sigma")
    assert z[0] == -5 and z[-1] == 5
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-z)), atol=1e-6)
    zl, yl = lines["_linear"]  # the tangent at 0: 1/2 + z/4
    np.testing.assert_allclose(yl, 0.5 + zl / 4)


def test_leaky_relu_uses_the_books_alpha():
    z, y = find(lines_by_label(figures.leaky_relu_plot()), "$LeakyReLU")
    np.testing.assert_allclose(y, np.where(z >= 0, z, 0.1 * z), atol=1e-6)


def test_elu_selu_asymptotes():
    lines = lines_by_label(figures.elu_selu_plot())
    assert figures.selu_asymptote() == pytest.approx(-1.758, abs=1e-3)
    assert set(lines["_asymptote ELU"][1]) == {-1.0}
    assert lines["_asymptote SELU"][1] == pytest.approx([-1.7581, -1.7581], abs=1e-4)
    z, elu = find(lines, "ELU")
    _, selu = find(lines, "SELU")
    assert elu[0] == pytest.approx(math.expm1(-5), abs=1e-6)  # ELU(−5) = e^−5 − 1, near −1
    assert selu[0] == pytest.approx(1.0507009873554805 * 1.6732632423543772 * math.expm1(-5), abs=1e-5)
    assert elu.min() > -1 and selu.min() > figures.selu_asymptote()
    np.testing.assert_allclose(selu[z > 0], 1.0507009873554805 * z[z > 0], rtol=1e-6)


def test_gelu_minimum_and_swish_mish():
    lines = lines_by_label(figures.gelu_swish_mish_plot())
    z, gelu = find(lines, "GELU")
    assert z[0] == -4 and z[-1] == 2
    i = int(np.argmin(gelu))
    assert gelu[i] == pytest.approx(-0.17, abs=0.01) and z[i] == pytest.approx(-0.75, abs=0.05)
    np.testing.assert_allclose(gelu, z / (1 + np.exp(-1.702 * z)), atol=1e-6)
    _, swish = find(lines, "Swish$(z)")
    np.testing.assert_allclose(swish, z / (1 + np.exp(-z)), atol=1e-6)
    _, swish06 = find(lines, r"Swish$_{\beta=0.6}")
    np.testing.assert_allclose(swish06, z / (1 + np.exp(-0.6 * z)), atol=1e-6)
    _, mish = find(lines, "Mish")
    np.testing.assert_allclose(mish, z * np.tanh(np.log1p(np.exp(z))), atol=1e-6)
    # the exact GELU, from the same registry, has the book's minimum too
    zz = np.linspace(-2, 0, 2001)
    exact = figures.activation_values("gelu", zz)
    assert exact.min() == pytest.approx(-0.17, abs=0.001) and zz[exact.argmin()] == pytest.approx(-0.75, abs=0.01)


def test_schedule_curves_per_step_and_per_epoch(tmp_path):
    x, lrs, unit = figures.schedule_curve(OneCycle(max_lr=0.1), 0.01, 10, 5)
    assert unit == "step" and len(x) == 50
    assert lrs[0] == pytest.approx(0.01) and lrs.max() == pytest.approx(0.1)
    x, lrs, unit = figures.schedule_curve(OneCycle(max_lr=0.1), 0.01, 10, 5, per="epoch")
    assert unit == "epoch" and list(x) == [1, 2, 3, 4, 5] and len(lrs) == 5
    # a unit=epoch schedule is always plotted per epoch: the book's piecewise 0.01/0.005/0.001 at 5, 15
    x, lrs, unit = figures.schedule_curve({"name": "piecewise"}, 0.01, 7, 20)
    assert unit == "epoch" and len(x) == 20
    np.testing.assert_allclose(lrs, [0.01] * 5 + [0.005] * 10 + [0.001] * 5, rtol=1e-6)
    assert_png(figures.schedule_figure(OneCycle(), 0.01, 10, 5, tmp_path / "1cycle.png"))
    assert_png(
        figures.schedule_figure(
            {"name": "exponential", "unit": "epoch", "decay_steps": 20}, 0.01, 10, 30, tmp_path / "exp.png", per="epoch"
        )
    )
    with pytest.raises(ValueError, match="metrics.jsonl"):
        figures.schedule_figure({"name": "performance"}, 0.01, 10, 5, tmp_path / "no.png")


def test_book_schedule_figures(tmp_path):
    paths = figures.book_schedule_figures(tmp_path)
    assert [p.stem for p in paths] == ["power_scheduling", "exponential_scheduling", "piecewise_constant_scheduling"]
    for path in paths:
        assert_png(path)


def test_lr_finder_plot_marks_the_suggested_rate():
    rates = np.geomspace(1e-4, 1, 50)
    losses = 2 - np.sin(np.linspace(0, 3, 50))
    suggested = float(rates[np.argmin(losses)])
    ax = figures.lr_finder_plot(rates, losses, suggested).axes[0]
    vertical = [line for line in ax.get_lines() if len(set(line.get_xdata())) == 1 and line.get_linestyle() == "--"]
    assert [float(line.get_xdata()[0]) for line in vertical] == [pytest.approx(suggested)]
    dot = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert (float(dot[0].get_xdata()[0]), float(dot[0].get_ydata()[0])) == (suggested, pytest.approx(losses.min()))
    assert "suggested max rate" in ax.get_legend().get_texts()[0].get_text()
    assert not [line for line in figures.lr_finder_plot(rates, losses).axes[0].get_lines() if line.get_marker() == "o"]


def test_lr_finder_figure(tmp_path):
    rates = np.geomspace(1e-4, 1, 50)
    losses = 2.3 - np.exp(-((np.log10(rates) + 2) ** 2))
    losses[-3:] = [5.0, float("inf"), float("nan")]  # the sweep blew up at the end
    assert_png(figures.lr_finder_figure(rates, losses, tmp_path / "lr_finder.png"))
    with pytest.raises(ValueError):
        figures.lr_finder_figure(rates, losses[:-1], tmp_path / "bad.png")


def test_optimizer_and_mc_dropout_figures(tmp_path):
    def history(k):
        return [{"epoch": e, "lr": 0.01, "train/loss": 0.8 / e**k, "val/loss": 0.85 / e**k} for e in range(1, 13)]

    histories = {"SGD": history(0.2), "Adam": history(0.4), "Nadam": history(0.45)}
    assert_png(figures.optimizer_curves_figure(histories, tmp_path / "optimizers.png"))
    assert_png(figures.optimizer_curves_figure(histories, tmp_path / "optimizers_auto.png", axis=None))
    mean = [0.0, 0.01, 0.02, 0.0, 0.0, 0.6, 0.0, 0.3, 0.05, 0.02]
    std = [0.0, 0.01, 0.02, 0.0, 0.0, 0.2, 0.0, 0.15, 0.05, 0.02]
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert_png(figures.mc_dropout_figure(mean, std, names, tmp_path / "mc_dropout.png"))
    with pytest.raises(ValueError):
        figures.mc_dropout_figure(mean, std[:-1], names, tmp_path / "bad.png")


def test_reliability_diagram_plots_each_bins_accuracy_vs_confidence_with_its_ece(tmp_path):
    from deeprun.reports.calibration import reliability_bins

    probs = np.array([[0.4, 0.3, 0.3], [0.2, 0.45, 0.35], [0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7]])
    bins = reliability_bins(probs, np.array([0, 2, 0, 1, 0]), 4)
    lines = lines_by_label(figures.reliability_plot({"dropout off": bins}))
    confidence, accuracy = lines["dropout off (ECE 0.2300)"]  # 2/5·0.075 + 1/5·0.7 + 2/5·0.15
    np.testing.assert_allclose(confidence, [0.425, 0.7, 0.85])  # the empty first bin is left out
    np.testing.assert_allclose(accuracy, [0.5, 0.0, 1.0])
    np.testing.assert_allclose(lines["perfect calibration"][1], [0, 1])
    assert_png(figures.reliability_figure({"dropout off": bins, "MC": bins}, tmp_path / "calibration.png"))


def test_chapter_figures_command_writes_every_figure(tmp_path):
    from deeprun.commands.figures import main

    main(["chapter", str(tmp_path)])
    names = {p.name for p in tmp_path.glob("*.png")}
    assert {
        "sigmoid_saturation_plot.png",
        "leaky_relu_plot.png",
        "elu_selu_plot.png",
        "gelu_swish_mish_plot.png",
        "1cycle_plot.png",
    } <= names
    assert len(names) == 8
