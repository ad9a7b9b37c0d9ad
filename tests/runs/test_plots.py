"""The run folder's learning curves and the sweep's final-metrics bars: what a reader needs to see."""

from __future__ import annotations

import math

from deeprun.reports.sweep import accuracy_span
from deeprun.runs.plots import learning_curves_plot, run_title


def _history(losses):
    return [
        {"epoch": i + 1, "train/loss": loss, "val/loss": loss, "train/accuracy": 0.5, "val/accuracy": 0.5}
        for i, loss in enumerate(losses)
    ]


def test_epochs_are_whole_ticks():
    for ax in learning_curves_plot(_history([1.0, 0.8, 0.7])).axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_a_diverged_epoch_is_marked_and_the_axis_keeps_the_finite_values():
    loss_ax = learning_curves_plot(_history([1.0, 0.9, math.nan, math.inf])).axes[0]
    marks = [line for line in loss_ax.get_lines() if line.get_linestyle() == ":"]
    assert [float(line.get_xdata()[0]) for line in marks] == [3.0]
    assert "diverged (epoch 3)" in [text.get_text() for text in loss_ax.get_legend().get_texts()]
    low, high = loss_ax.get_ylim()
    assert math.isfinite(low) and math.isfinite(high) and low < 0.9 and high > 1.0
    all_nan = learning_curves_plot(_history([math.nan])).axes[0]
    assert all_nan.get_ylim() == (0.0, 1.0)


def test_the_title_says_what_was_run(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- optimizer=nadam\n- ++schedule=1cycle\n")
    assert run_title("default", tmp_path) == "default: optimizer=nadam schedule=1cycle"
    assert run_title("default", tmp_path / "elsewhere") == "default"


def test_the_accuracy_axis_does_not_start_at_zero():
    low, high = accuracy_span([0.868, 0.878, math.nan], [None, None])
    assert 0.8 < low < 0.868 and 0.878 < high <= 1.1
    assert accuracy_span([math.nan], [None]) == (0.0, 1.1)
