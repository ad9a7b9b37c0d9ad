"""deeprun-prune: zero a trained run's small weights and compare the metrics before/after."""

import json

import numpy as np
import pytest

from deeprun.registry import ConfigError, options_from_tokens
from deeprun.runs.loading import load_run
from deeprun.runs.prune import PruneOptions, prune_kernel, prune_run
from helpers.commands import run_command as run


@pytest.fixture(scope="module")
def l1_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("prune")
    result = run(
        "data=synthetic",
        "model.hidden=[32]",
        "regularizer=l1",
        "regularizer.l1.factor=0.001",
        "optimizer=adam",
        "optimizer.learning_rate=0.01",
        "schedule=constant",
        "trainer.epochs=3",
        "trainer.plots=false",
        "hydra.run.dir=run",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    return cwd / "run"


def kernels(run_dir) -> dict[str, np.ndarray]:
    return {name: np.asarray(dense.kernel[...]) for name, dense in load_run(run_dir).model().kernel_layers()}


def test_prune_kernel_zeroes_only_weights_below_the_threshold():
    w = np.array([[-0.3, 0.05], [0.1, -0.1]], np.float32)
    np.testing.assert_array_equal(prune_kernel(w, 0.1), np.array([[-0.3, 0.0], [0.1, -0.1]], np.float32))
    np.testing.assert_array_equal(prune_kernel(w, 0.0), w)


def test_sparsity_is_the_fraction_of_weights_below_the_threshold(l1_run):
    original = kernels(l1_run)
    threshold = float(np.median(np.abs(np.concatenate([k.ravel() for k in original.values()]))))
    report = prune_run(l1_run, PruneOptions(threshold=threshold, overwrite=True))
    for layer in report["layers"]:
        kernel = original[layer["name"]]
        assert layer["shape"] == list(kernel.shape)
        assert layer["sparsity"] == np.mean(np.abs(kernel) < threshold)
    assert report["total"]["sparsity"] == pytest.approx(
        sum(np.sum(np.abs(k) < threshold) for k in original.values()) / sum(k.size for k in original.values())
    )
    assert 0.4 < report["total"]["sparsity"] < 0.6  # the median threshold prunes about half
    # the l1 penalty inside the reported loss, f·Σ|w| over the kernels, shrinks with the pruned weights
    for when, kept in (("before", lambda k: k), ("after", lambda k: np.where(np.abs(k) < threshold, 0, k))):
        expected = 0.001 * sum(np.abs(kept(k).astype(np.float64)).sum() for k in original.values())
        assert report[when]["penalty"] == pytest.approx(expected, rel=1e-5)
    # before: the run's own final metrics; the report is in the run folder
    summary = json.loads((l1_run / "summary.json").read_text())
    assert report["before"]["test"]["accuracy"] == summary["test"]["accuracy"]
    assert json.loads((l1_run / "prune.json").read_text()) == report
    # the pruned run folder holds exactly the pruned kernels, and evaluates to the "after" metrics
    pruned = kernels(l1_run / "pruned")
    for name, kernel in original.items():
        np.testing.assert_array_equal(pruned[name], np.where(np.abs(kernel) < threshold, 0, kernel))
    assert json.loads((l1_run / "pruned/summary.json").read_text())["test"] == report["after"]["test"]
    for name, kernel in kernels(l1_run).items():  # the source checkpoint is untouched
        np.testing.assert_array_equal(kernel, original[name])


def test_threshold_zero_changes_nothing_and_counts_exact_zeros(l1_run):
    prune_run(l1_run, PruneOptions(threshold=0.05, overwrite=True))  # makes l1_run/pruned, with exact zeros
    zeros = kernels(l1_run / "pruned")
    expected = sum(np.sum(k == 0) for k in zeros.values()) / sum(k.size for k in zeros.values())
    assert expected > 0
    report = prune_run(l1_run / "pruned", PruneOptions(threshold=0.0, save=False))
    assert report["after"] == report["before"]
    assert report["total"]["sparsity"] == pytest.approx(expected)
    assert report["total"]["zeros_before"] == report["total"]["zeros_after"]
    assert not (l1_run / "pruned/pruned").exists()


def test_deeprun_prune_command(l1_run, tmp_path):
    result = run(
        str(l1_run), "threshold=1e-2", "save=false", "overwrite=true", cwd=tmp_path, module="deeprun.commands.prune"
    )
    assert result.returncode == 0, result.stderr
    assert "pruned |w| < 0.01" in result.stdout and "hidden_1" in result.stdout and "accuracy after" in result.stdout
    assert json.loads((l1_run / "prune.json").read_text())["threshold"] == 0.01


def test_an_earlier_prune_is_kept_unless_overwrite_is_given(l1_run, tmp_path):
    import shutil

    source = shutil.copytree(l1_run, tmp_path / "run", ignore=shutil.ignore_patterns("prune.json", "pruned"))
    first = prune_run(source, PruneOptions(threshold=0.01))
    with pytest.raises(
        ConfigError, match=r"already pruned at threshold 0.01 \(prune.json, pruned/\); give overwrite=true"
    ):
        prune_run(source, PruneOptions(threshold=0.05))
    assert json.loads((source / "prune.json").read_text()) == first
    again = run(str(source), "threshold=0.05", cwd=tmp_path, module="deeprun.commands.prune")
    assert (
        again.returncode == 2
        and again.stderr.startswith("deeprun-prune: error:")
        and len(again.stderr.splitlines()) == 1
    )
    replaced = prune_run(source, PruneOptions(threshold=0.05, overwrite=True))
    assert json.loads((source / "prune.json").read_text()) == replaced and replaced["threshold"] == 0.05


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["threshold=-0.1"], "threshold must be >= 0 (got -0.1)"),
        (["threshold=small"], "threshold must be a number"),
        ([], "missing required field 'threshold'"),
    ],
)
def test_deeprun_prune_rejects_bad_options(l1_run, tmp_path, args, message):
    result = run(str(l1_run), *args, cwd=tmp_path, module="deeprun.commands.prune")
    assert result.returncode == 2
    assert result.stderr.startswith("deeprun-prune: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_deeprun_prune_rejects_a_folder_that_is_not_a_run(tmp_path):
    result = run(str(tmp_path), "threshold=0.1", cwd=tmp_path, module="deeprun.commands.prune")
    assert result.returncode == 2 and "is not a deeprun run folder" in result.stderr


def test_command_line_values_are_parsed_as_json_then_text():
    assert options_from_tokens(PruneOptions, ["threshold=1e-3", "save=false"]) == PruneOptions(0.001, False)
    with pytest.raises(ConfigError, match="^save must be true or false"):
        options_from_tokens(PruneOptions, ["threshold=1", "save=yes"])
    with pytest.raises(ConfigError, match="expected key=value"):
        options_from_tokens(PruneOptions, ["0.1"])
