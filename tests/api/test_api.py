"""``import deeprun``: train from Python, read runs back, results as DataFrames (the README's example)."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

import deeprun
from deeprun.commands.run import main as deeprun_main
from deeprun.registry import ConfigError
from helpers.commands import invoke

FAST = ("data=synthetic", "model.hidden=[16]", "trainer.epochs=2", "trainer.plots=false")


def test_train_writes_the_run_folder_and_returns_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = deeprun.train([*FAST, f"hydra.run.dir={tmp_path / 'run'}"])
    assert run.path == tmp_path / "run" and run.status == "completed"
    assert run.summary == json.loads((run.path / "summary.json").read_text())
    assert [epoch["epoch"] for epoch in run.history] == [1, 2]
    assert run.config["optimizer"]["name"] == "momentum" and run.config["trainer"]["epochs"] == 2
    again = deeprun.load_run(run.path)
    assert again.summary == run.summary and again.config == run.config
    pixels = np.zeros((3, 8, 8), dtype=np.uint8)
    probabilities = again.predict(pixels)
    assert probabilities.shape == (3, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_train_raises_on_bad_input_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"trainer.epochs must be > 0 \(got 0\)"):
        deeprun.train([*FAST, "trainer.epochs=0"])
    with pytest.raises(ConfigError, match="trains one run"):
        deeprun.train(["-m", *FAST])
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """2 learning rates × 3 seeds, from the command line (one fused program)."""
    root = tmp_path_factory.mktemp("sweep")
    args = ("-m", *FAST, "optimizer.learning_rate=0.01,0.05", "trainer.seed=1,2,3", f"hydra.sweep.dir={root / 's'}")
    result = invoke(deeprun_main, *args, cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "s"


def test_load_runs_groups_by_learning_rate_over_seeds(sweep):
    runs = deeprun.load_runs(sweep)
    assert len(runs) == 6 and set(runs["status"]) == {"completed"}
    assert {"optimizer.learning_rate", "trainer.seed", "final.val/accuracy", "test.accuracy", "best_epoch"} <= set(
        runs.columns
    )
    assert runs["model.hidden"].iloc[0] == (16,)
    table = runs.groupby("optimizer.learning_rate")["final.val/accuracy"].agg(["mean", "std", "count"])
    assert list(table.index) == [0.01, 0.05] and list(table["count"]) == [3, 3]
    summaries = [json.loads((sweep / str(job) / "summary.json").read_text()) for job in range(6)]
    by_rate: dict[float, list[float]] = {}
    for job, summary in enumerate(summaries):
        rate = 0.01 if job < 3 else 0.05
        by_rate.setdefault(rate, []).append(summary["final"]["val/accuracy"])
    for rate, values in by_rate.items():
        assert math.isclose(table.loc[rate, "mean"], float(np.mean(values)))
        assert math.isclose(table.loc[rate, "std"], float(np.std(values, ddof=1)))

    # The sweep's own grouped table says the same.
    groups = (sweep / "sweep_groups.csv").read_text().splitlines()
    assert groups[0].startswith("optimizer.learning_rate,runs,seeds,")
    header = groups[0].split(",")
    for line in groups[1:]:
        row = dict(zip(header, line.split(","), strict=True))
        rate = float(row["optimizer.learning_rate"])
        assert row["runs"] == "3" and row["seeds"] == "1 2 3"
        assert math.isclose(float(row["final_val_accuracy_mean"]), table.loc[rate, "mean"])
        assert math.isclose(float(row["final_val_accuracy_std"]), table.loc[rate, "std"])
    markdown = (sweep / "sweep_summary.md").read_text()
    assert "## Grouped by optimizer.learning_rate: mean ± std" in markdown
    assert "| 0.01 | 3 | " in markdown
    assert "| job | optimizer.learning_rate | trainer.seed | status |" in markdown


def test_load_history_has_every_epoch_of_every_run(sweep):
    history = deeprun.load_history(sweep)
    assert len(history) == 6 * 2
    assert {"path", "job", "epoch", "val/loss", "train/accuracy"} <= set(history.columns)
    one = deeprun.load_history(sweep / "0")
    assert list(one["epoch"]) == [1, 2]


def test_without_pandas_the_error_says_how_to_install_it(sweep, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install 'deeprun\[frames\]'"):
        deeprun.load_runs(sweep)
