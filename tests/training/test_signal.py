"""deeprun-signal: signal propagation through freshly initialized layers (the self-normalization demo)."""

import csv
import json

import jax
import numpy as np
import pytest

from deeprun.registry import ConfigError, from_mapping
from deeprun.techniques.activations import ACTIVATIONS
from deeprun.techniques.initializers import INITIALIZERS
from deeprun.training.diagnostics import layer_statistics
from deeprun.training.signal import SignalOptions, propagate
from helpers.commands import run_command


def signal(initializer: str, activation: str, **options) -> np.ndarray:
    return propagate(INITIALIZERS.default(initializer), ACTIVATIONS.default(activation), SignalOptions(**options))


def test_layer_statistics_are_the_books():
    """mean/std per unit over the batch, averaged over units (the notebook's np.mean(Z, axis=0).mean());
    rms over everything."""
    x = np.random.default_rng(0).normal(0.3, 2.0, size=(50, 7)).astype(np.float32)
    mean, std, rms = np.asarray(layer_statistics(x))
    assert mean == pytest.approx(np.mean(x, axis=0).mean(), abs=1e-6)
    assert std == pytest.approx(np.std(x, axis=0).mean(), rel=1e-5)
    assert rms == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_selu_with_lecun_init_self_normalizes_over_1000_layers(seed):
    """Over 40 seeds the recorded layers stayed within |mean| ≤ 0.13 and std ∈ [0.78, 1.02] (all 1000
    layers: |mean| ≤ 0.19, std ∈ [0.74, 1.07]); finite width (100 units) is what moves them off 0 and 1."""
    stats = signal("lecun_normal", "selu", layers=1000, seed=seed)
    rows = stats.rows(every=100)
    assert [row["depth"] for row in rows] == list(range(0, 1001, 100))
    for row in rows:
        assert abs(row["mean"]) < 0.2, row
        assert 0.7 <= row["std"] <= 1.3, row


@pytest.mark.parametrize(
    "initializer",
    [
        {"name": "glorot_uniform"},
        # the book's "normal init": N(0, 1) weights, i.e. σ² = scale/fan_in = 1 at width 100
        {"name": "variance_scaling", "scale": 100.0, "distribution": "untruncated_normal"},
    ],
)
def test_sigmoid_collapses_to_a_constant_near_one_half(initializer):
    stats = propagate(INITIALIZERS.build(initializer), ACTIVATIONS.default("sigmoid"), SignalOptions(layers=300))
    deep = stats.depths >= 100
    assert np.all(stats.std[deep] < 0.05)  # every input maps to (nearly) the same output
    assert np.all(np.abs(stats.mean[deep] - 0.5) < 0.15)


@pytest.mark.parametrize(("initializer", "gain"), [("he_normal", 1.0), ("glorot_uniform", 0.5)])
def test_relu_second_moment_follows_the_variance_formula(initializer, gain):
    """E[x_l²] = (fan_in·σ²/2)^l for ReLU on x₀ ~ N(0, 1): He (σ² = 2/fan_in) keeps it at 1, Glorot
    (σ² = 1/fan_avg = 1/100 here) halves it per layer. Averaged over 16 seeds the ratio to the formula
    ranged 0.89–0.97 at depth 10 (groups of 16 out of 64 seeds)."""
    depth = 10
    second = np.mean([signal(initializer, "relu", layers=depth, seed=s).rms[depth] ** 2 for s in range(16)])
    assert second / gain**depth == pytest.approx(1.0, abs=0.25)


def test_every_activation_and_initializer_option_propagates():
    # Eagerly (op by op, each op compiled once for all options): 18 compiled scans would take a minute.
    pairs = [
        *(("lecun_normal", name) for name in ACTIVATIONS.names()),
        *((name, "selu") for name in INITIALIZERS.names() if name != "lecun_normal"),
    ]
    with jax.disable_jit():
        for initializer, activation in pairs:
            stats = signal(initializer, activation, layers=3, width=8, batch=16)
            assert stats.mean.shape == stats.std.shape == stats.rms.shape == (4,)
            assert np.all(np.isfinite(stats.rms)) and stats.rms[-1] > 0, (initializer, activation)


def test_recorded_depths_end_at_the_last_layer():
    stats = signal("lecun_normal", "selu", layers=25, width=8, batch=16)
    assert stats.recorded(10).tolist() == [0, 10, 20, 25]


def test_options_are_validated():
    with pytest.raises(ConfigError, match="layers must be > 0"):
        SignalOptions(layers=0)
    with pytest.raises(ConfigError, match="^width must be an integer"):
        from_mapping(SignalOptions, {"width": "wide"}, "")


def run(*args, cwd):
    return run_command(*args, cwd=cwd, module="deeprun.commands.signal")


def test_deeprun_signal_command_writes_table_csv_json_and_png(tmp_path):
    result = run(
        "activation=tanh", "initializer=glorot_normal", "layers=40", "every=20", "hydra.run.dir=out", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "glorot_normal × tanh: 40 layers of 100 units" in result.stdout
    with open(tmp_path / "out/signal.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["depth"]) for r in rows] == list(range(41))
    report = json.loads((tmp_path / "out/signal.json").read_text())
    assert [row["depth"] for row in report["table"]] == [0, 20, 40]
    assert report["table"][-1]["std"] == pytest.approx(float(rows[-1]["std"]))
    assert report["activation"] == {"name": "tanh"}
    assert (tmp_path / "out/signal.png").is_file()


def test_deeprun_signal_rejects_bad_options(tmp_path):
    result = run("layers=0", "hydra.run.dir=out", cwd=tmp_path)
    assert result.returncode == 2
    assert "layers must be > 0 (got 0)" in result.stderr
    assert not (tmp_path / "out").exists()
    result = run("activation=leaky_relu", "activation.alpha=-1", "hydra.run.dir=out", cwd=tmp_path)
    assert result.returncode == 2 and "activation.alpha must be >= 0" in result.stderr
