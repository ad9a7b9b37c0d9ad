"""The tasks beside training: MC-dropout evaluation of a finished run, and the LR finder."""

import csv
import functools
import json

import numpy as np
import pytest

from deeprun.commands.evaluate import main as eval_main
from deeprun.commands.run import main as deeprun_main
from deeprun.registry import ConfigError, options_from_tokens
from deeprun.reports.calibration import entropy, expected_calibration_error
from deeprun.reports.mc_dropout import EvalOptions, mc_dropout
from deeprun.training.lr_finder import suggest_max_rate
from helpers.commands import invoke
from helpers.commands import run_command as run


@pytest.fixture(scope="module")
def dropout_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("mc")
    result = invoke(
        deeprun_main,
        "data=synthetic",
        "model.hidden=[64]",
        "regularizer=dropout",
        "regularizer.dropout.rate=0.3",
        "optimizer=adam",
        "optimizer.learning_rate=0.01",
        "schedule=constant",
        "trainer.epochs=4",
        "hydra.run.dir=run",
        cwd=cwd,
    )
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


def test_mc_dropout_writes_per_example_uncertainty_and_calibration(dropout_run):
    report = mc_dropout(dropout_run, EvalOptions(mc_samples=10, bins=10))
    files = np.load(dropout_run / "mc_dropout.npz")
    mean, std, labels = files["mean"], files["std"], files["labels"]
    np.testing.assert_allclose(files["entropy"], entropy(mean), rtol=1e-5)
    np.testing.assert_allclose(files["predicted_std"], std[np.arange(len(labels)), mean.argmax(1)])
    assert report["accuracy"] == pytest.approx(np.mean(files["deterministic"].argmax(1) == labels))
    assert report["ece"] == pytest.approx(expected_calibration_error(files["deterministic"], labels, 10))
    assert report["mc_ece"] == pytest.approx(expected_calibration_error(mean, labels, 10), rel=1e-5)
    for curve in ("deterministic", "mc_dropout"):
        rows = report["reliability"][curve]
        assert len(rows) == 10 and sum(row["count"] for row in rows) == len(labels)
    wrong = mean.argmax(1) != labels
    mc = report["uncertainty"]["mc_dropout"]
    if wrong.any():
        assert mc["mean_entropy_wrong"] == pytest.approx(files["entropy"][wrong].mean(), rel=1e-5)
    assert mc["mean_predicted_std"] == pytest.approx(files["predicted_std"].mean(), rel=1e-5)
    assert (dropout_run / "calibration.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "regularizer", [{}, {"dropout": {"rate": 0.0, "placement": "all"}}], ids=["no_dropout", "rate_0"]
)
def test_mc_passes_without_dropout_equal_the_deterministic_model(dropout_run, tmp_path, regularizer):
    # The trained run's weights without dropout (or at rate 0), no batch norm: training mode computes the
    # same function as inference, so every pass is the deterministic prediction.
    import shutil

    from omegaconf import OmegaConf

    run_dir = tmp_path / "run"
    shutil.copytree(dropout_run, run_dir)
    config = OmegaConf.load(run_dir / ".hydra/config.yaml")
    config.regularizer = regularizer
    OmegaConf.save(config, run_dir / ".hydra/config.yaml")
    report = mc_dropout(run_dir, EvalOptions(mc_samples=3))
    files = np.load(run_dir / "mc_dropout.npz")
    assert report["has_dropout"] is bool(regularizer)
    np.testing.assert_allclose(files["std"], 0, atol=1e-6)
    np.testing.assert_allclose(files["mean"], files["deterministic"], atol=1e-6)
    assert report["mc_accuracy"] == report["accuracy"]
    assert report["mc_ece"] == pytest.approx(report["ece"], abs=1e-5)


def test_mc_dropout_is_reproducible_with_its_seed(dropout_run):
    a = mc_dropout(dropout_run, EvalOptions(mc_samples=5, seed=1))
    b = mc_dropout(dropout_run, EvalOptions(mc_samples=5, seed=1))
    assert a == b


def test_deeprun_eval_command(dropout_run, tmp_path):
    evaluate = functools.partial(invoke, eval_main, cwd=tmp_path, program="deeprun-eval")
    result = evaluate(str(dropout_run), "mc_samples=3", "split=val", "bins=5")
    assert result.returncode == 0, result.stderr
    assert "val accuracy" in result.stdout and "with MC dropout (3 passes)" in result.stdout
    report = json.loads((dropout_run / "mc_dropout.json").read_text())
    assert f"expected calibration error (5 bins) {report['ece']:.4f} -> {report['mc_ece']:.4f}" in result.stdout
    assert "warning" not in result.stderr
    plain = ("data=synthetic", "model.hidden=[8]", "trainer.epochs=1", "trainer.plots=false", "hydra.run.dir=plain")
    trained = invoke(deeprun_main, *plain, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    without = evaluate("plain", "mc_samples=2")
    assert without.returncode == 0 and "deeprun-eval: warning: the run has no dropout layer" in without.stderr
    bad = evaluate(str(tmp_path))
    assert bad.returncode == 2 and "is not a deeprun run folder" in bad.stderr


def test_eval_options_are_validated():
    def parse_options(tokens):
        return options_from_tokens(EvalOptions, tokens)

    assert parse_options(["mc_samples=10", "split=val"]) == EvalOptions(mc_samples=10, split="val")
    with pytest.raises(ConfigError, match="unknown field 'samples'"):
        parse_options(["samples=3"])
    with pytest.raises(ConfigError, match="split must be one of"):
        parse_options(["split=holdout"])
    with pytest.raises(ConfigError, match="bins must be > 0"):
        parse_options(["bins=0"])


def test_lr_finder_sweeps_rates_exponentially_and_records_each_batch(tmp_path):
    result = run(
        "data=synthetic",
        "data.n_train=1000",
        "model.hidden=[32]",
        "lr_finder.batch_size=50",
        "lr_finder.min_rate=1e-3",
        "lr_finder.max_rate=10",
        "hydra.run.dir=finder",
        cwd=tmp_path,
        module="deeprun.commands.lr_finder",
    )
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "finder/lr_finder.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20
    rates = np.array([float(r["learning_rate"]) for r in rows])
    np.testing.assert_allclose(rates, 1e-3 * (10 / 1e-3) ** (np.arange(20) / 19), rtol=1e-5)
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(10)  # from min_rate up to max_rate
    losses = np.array([float(r["loss"]) for r in rows])
    summary = json.loads((tmp_path / "finder/lr_finder.json").read_text())
    assert summary["suggested_max_rate"] == pytest.approx(rates[np.argmin(losses)], rel=1e-6)
    assert (tmp_path / "finder/lr_finder.png").is_file()
    assert not (tmp_path / "finder/checkpoint").exists()


def test_suggestion_ignores_diverged_batches():
    rates = np.array([0.001, 0.01, 0.1, 1.0])
    assert suggest_max_rate(rates, np.array([2.0, 1.0, np.nan, np.inf])) == pytest.approx(0.01)
