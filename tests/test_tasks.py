"""The tasks beside training: MC-dropout evaluation of a finished run, and the LR finder."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from deeprun.evaluate import EvalOptions, mc_dropout, parse_options
from deeprun.lr_finder import suggest_max_rate
from deeprun.registry import ConfigError


def run(*args, cwd, module="deeprun.cli"):
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                            timeout=300)
    return result


@pytest.fixture(scope="module")
def dropout_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("mc")
    result = run("data=synthetic", "model.hidden=[64]", "regularizer=dropout", "regularizer.dropout.rate=0.3",
                 "optimizer=adam", "optimizer.learning_rate=0.01", "schedule=constant", "trainer.epochs=4",
                 "hydra.run.dir=run", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "run"


def test_mc_dropout_averages_stochastic_passes(dropout_run):
    report = mc_dropout(dropout_run, EvalOptions(mc_samples=20))
    summary = json.loads((dropout_run / "summary.json").read_text())
    assert report["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert abs(report["mc_accuracy"] - report["accuracy"]) < 0.1
    files = np.load(dropout_run / "mc_dropout.npz")
    assert files["mean"].shape == (128, 10)
    np.testing.assert_allclose(files["mean"].sum(1), 1, rtol=1e-5)
    assert files["std"].max() > 0  # the passes differ: dropout was active
    assert (dropout_run / "mc_dropout.png").is_file()
    first = report["first_example"]
    assert len(first["mc_mean"]) == len(first["mc_std"]) == 10
    assert json.loads((dropout_run / "mc_dropout.json").read_text())["mc_samples"] == 20


def test_mc_dropout_is_reproducible_with_its_seed(dropout_run):
    a = mc_dropout(dropout_run, EvalOptions(mc_samples=5, seed=1))
    b = mc_dropout(dropout_run, EvalOptions(mc_samples=5, seed=1))
    assert a == b


def test_deeprun_eval_command(dropout_run, tmp_path):
    result = run(str(dropout_run), "mc_samples=3", "split=val", cwd=tmp_path, module="deeprun.evaluate")
    assert result.returncode == 0, result.stderr
    assert "val accuracy" in result.stdout and "with MC dropout (3 passes)" in result.stdout
    bad = run(str(tmp_path), cwd=tmp_path, module="deeprun.evaluate")
    assert bad.returncode == 2 and "is not a deeprun run folder" in bad.stderr


def test_eval_options_are_validated():
    assert parse_options(["mc_samples=10", "split=val"]) == EvalOptions(mc_samples=10, split="val")
    with pytest.raises(ConfigError, match="unknown field 'samples'"):
        parse_options(["samples=3"])
    with pytest.raises(ConfigError, match="split must be one of"):
        parse_options(["split=holdout"])


def test_lr_finder_sweeps_rates_exponentially_and_records_each_batch(tmp_path):
    result = run("data=synthetic", "data.n_train=1000", "model.hidden=[32]", "lr_finder.batch_size=50",
                 "lr_finder.min_rate=1e-3", "lr_finder.max_rate=10", "hydra.run.dir=finder", cwd=tmp_path,
                 module="deeprun.lr_finder")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "finder/lr_finder.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20
    rates = np.array([float(r["learning_rate"]) for r in rows])
    np.testing.assert_allclose(rates, 1e-3 * (10 / 1e-3) ** (np.arange(20) / 20), rtol=1e-5)
    losses = np.array([float(r["loss"]) for r in rows])
    summary = json.loads((tmp_path / "finder/lr_finder.json").read_text())
    assert summary["suggested_max_rate"] == pytest.approx(rates[np.argmin(losses)], rel=1e-6)
    assert (tmp_path / "finder/lr_finder.png").is_file()
    assert not (tmp_path / "finder/checkpoint").exists()


def test_suggestion_ignores_diverged_batches():
    rates = np.array([0.001, 0.01, 0.1, 1.0])
    assert suggest_max_rate(rates, np.array([2.0, 1.0, np.nan, np.inf])) == pytest.approx(0.01)
