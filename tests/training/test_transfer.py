"""Transfer learning: reuse an earlier run's hidden layers, freeze them for a phase, then fine-tune."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from deeprun.registry import ConfigError
from deeprun.runs.loading import load_donor, load_run
from deeprun.training.loop import fit


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A 10-class run on synthetic data with hidden layers [16, 8] (the "model A")."""
    cwd = tmp_path_factory.mktemp("source")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deeprun.commands.run",
            "data=synthetic",
            "model.hidden=[16,8]",
            "trainer.epochs=2",
            "optimizer=adam",
            "hydra.run.dir=model_a",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return cwd / "model_a"


def binary_task(make_settings, source, *overrides):
    return make_settings(
        "model.hidden=[16,8]",
        f"model.init_from={source}",
        "model.head=sigmoid",
        "data.n_classes=2",
        "optimizer=sgd",
        "schedule=constant",
        *overrides,
    )


def hidden_kernels(state):
    return [
        np.asarray(block["dense"]["kernel"])
        for block in jax.tree.map(np.asarray, _pure(state.params))["blocks"].values()
    ]


def _pure(params):
    from flax import nnx

    return nnx.to_pure_dict(params)


def test_frozen_phase_keeps_the_reused_layers_and_trains_the_new_head(make_settings, source_run):
    source = load_run(source_run).state
    settings = binary_task(
        make_settings, source_run, "trainer.epochs=1", "trainer.phases=[{epochs: 1, freeze: reused}]"
    )
    result = fit(settings, settings.data.load(), donor=load_donor(settings.model.init_from))
    for got, want in zip(hidden_kernels(result.state), hidden_kernels(source), strict=True):
        np.testing.assert_array_equal(got, want)
    assert _pure(result.state.params)["output"]["kernel"].shape == (8, 1)
    assert result.history[0]["step"] == 16


def test_unfrozen_phase_fine_tunes_with_its_learning_rate(make_settings, source_run):
    source = load_run(source_run).state
    settings = binary_task(
        make_settings,
        source_run,
        "trainer.epochs=3",
        "trainer.phases=[{epochs: 1, freeze: reused}, {epochs: 2, learning_rate: 0.05}]",
    )
    result = fit(settings, settings.data.load(), donor=load_donor(settings.model.init_from))
    assert [r["lr"] for r in result.history] == pytest.approx([0.01, 0.05, 0.05])
    for got, want in zip(hidden_kernels(result.state), hidden_kernels(source), strict=True):
        assert not np.allclose(got, want)


def test_reuse_only_the_first_layer(make_settings, source_run):
    source = load_run(source_run).state
    settings = binary_task(
        make_settings,
        source_run,
        "model.reuse_layers=1",
        "trainer.epochs=1",
        "trainer.phases=[{epochs: 1, freeze: reused}]",
    )
    kernels = hidden_kernels(fit(settings, settings.data.load(), donor=load_donor(settings.model.init_from)).state)
    np.testing.assert_array_equal(kernels[0], hidden_kernels(source)[0])
    assert not np.allclose(kernels[1], hidden_kernels(source)[1])


def test_bad_transfer_settings(make_settings, source_run, tmp_path):
    with pytest.raises(ConfigError, match="model.init_from must be an existing run folder"):
        load_donor(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="model.init_from has no checkpoint/"):
        load_donor(str(tmp_path))
    with pytest.raises(ConfigError, match="trainer.phases.freeze reused needs model.init_from"):
        make_settings("trainer.epochs=1", "trainer.phases=[{epochs: 1, freeze: reused}]")
    with pytest.raises(ConfigError, match=r"trainer.epochs must equal the phases' total \(3\)"):
        make_settings("trainer.epochs=2", "trainer.phases=[{epochs: 1}, {epochs: 2}]")
    settings = make_settings("model.hidden=[32,8]", f"model.init_from={source_run}")
    with pytest.raises(
        ConfigError, match=r"model.init_from: blocks/0/dense/\w+ has shape \(\d+(, 16)?,?\) in the source run"
    ):
        fit(settings, settings.data.load(), donor=load_donor(settings.model.init_from))


def _phase_run(make_settings, optimizer, *phase_fields):
    """Two 1-epoch phases (no reuse: the optimizer state is the point); the optimizer state's step
    count after each epoch, and the history."""
    second = ", ".join(("epochs: 1", *phase_fields))
    settings = make_settings(
        f"optimizer={optimizer}",
        "schedule=constant",
        "trainer.epochs=2",
        f"trainer.phases=[{{epochs: 1}}, {{{second}}}]",
    )
    counts = []
    result = fit(settings, settings.data.load(), saver=lambda point: counts.append(int(point.state.opt_state.count)))
    return counts, [(r["train/loss"], r["val/loss"]) for r in result.history]


def test_a_later_phase_starts_a_fresh_optimizer_state_as_keras_recompiles(make_settings):
    """Adam: by default the second phase's moments and step count start again (Keras's new optimizer
    after ``compile``), ``keep_optimizer_state: true`` carries them on, and the runs differ; plain SGD
    has no state, so both give the same numbers."""
    steps = -(-make_settings().data.load().y_train.shape[0] // 32)  # Keras keeps the partial batch
    fresh, fresh_history = _phase_run(make_settings, "adam")
    kept, kept_history = _phase_run(make_settings, "adam", "keep_optimizer_state: true")
    assert fresh == [steps, steps] and kept == [steps, 2 * steps]
    assert fresh_history[0] == kept_history[0] and fresh_history[1] != kept_history[1]
    assert _phase_run(make_settings, "sgd")[1] == _phase_run(make_settings, "sgd", "keep_optimizer_state: true")[1]
