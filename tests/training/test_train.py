"""Training semantics: Keras's metric conventions, batching, determinism, early stopping, every option."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeprun.models import MODELS
from deeprun.techniques.activations import ACTIVATIONS
from deeprun.techniques.initializers import INITIALIZERS
from deeprun.techniques.normalization import NORMALIZATIONS
from deeprun.techniques.optimizers import OPTIMIZERS
from deeprun.techniques.regularizers import REGULARIZERS
from deeprun.techniques.schedules import SCHEDULES
from deeprun.training.loop import fit
from deeprun.training.trainer import Trainer, build_model, steps_per_epoch
from helpers.runs import without_times


def test_steps_per_epoch_follow_keras():
    assert steps_per_epoch(55_000, 32, False) == 1719
    assert steps_per_epoch(55_000, 128, False) == 430
    assert steps_per_epoch(45_000, 32, False) == 1407
    assert steps_per_epoch(55_000, 32, True) == 1718


@pytest.mark.parametrize("drop_remainder,steps", [(False, 16), (True, 15)])
def test_partial_last_batch_is_kept_unless_dropped(make_settings, drop_remainder, steps):
    settings = make_settings("data.n_train=500", f"trainer.drop_remainder={str(drop_remainder).lower()}")
    result = fit(settings, settings.data.load())
    assert result.history[0]["step"] == steps


def test_train_metrics_are_sample_weighted_running_means(make_settings):
    """With a negligible learning rate the weights stay put, so Keras's running mean over the epoch's
    batches (weighted by batch size, partial batch included) equals the loss over all examples."""
    settings = make_settings(
        "data.n_train=500", "optimizer=sgd", "optimizer.learning_rate=1e-12", "schedule=constant", "regularizer=l2"
    )
    dataset = settings.data.load()
    result = fit(settings, dataset)
    model = build_model(settings, dataset.n_features, dataset.n_classes)  # same seed: same initial weights
    logits = model(jnp.asarray(dataset.x_train), train=False)
    ce = -jax.nn.log_softmax(logits)[np.arange(500), dataset.y_train]
    penalty = 0.01 * sum(float(jnp.sum(k**2)) for k in model.kernels())
    expected_acc = float(jnp.mean(jnp.argmax(logits, -1) == dataset.y_train))
    assert result.history[0]["train/loss"] == pytest.approx(float(jnp.mean(ce)) + penalty, rel=1e-5)
    assert result.history[0]["train/accuracy"] == pytest.approx(expected_acc, abs=1e-6)


def test_same_seed_same_metrics_different_seed_different(make_settings):
    overrides = ("trainer.epochs=2", "regularizer=dropout")
    a = fit(s := make_settings(*overrides), s.data.load()).history
    b = fit(s, s.data.load()).history
    c = fit(s2 := make_settings(*overrides, "trainer.seed=7"), s2.data.load()).history
    strip = [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in a]
    assert strip == [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in b]
    assert a[-1]["train/loss"] != c[-1]["train/loss"]


def test_training_learns_the_synthetic_task(make_settings):
    settings = make_settings("trainer.epochs=5", "optimizer=adam", "optimizer.learning_rate=0.01", "schedule=constant")
    result = fit(settings, settings.data.load())
    assert result.status == "completed"
    assert result.history[-1]["val/accuracy"] > 0.8
    assert result.history[-1]["train/loss"] < result.history[0]["train/loss"]
    assert result.test["accuracy"] > 0.8


def test_lr_is_recorded_from_the_optimizer_state(make_settings):
    settings = make_settings(
        "trainer.epochs=3",
        "schedule=exponential",
        "schedule.unit=epoch",
        "schedule.decay_steps=2",
        "optimizer=sgd",
        "optimizer.learning_rate=0.1",
    )
    history = fit(settings, settings.data.load()).history
    np.testing.assert_allclose([r["lr"] for r in history], [0.1 * 0.1 ** (e / 2) for e in range(3)], rtol=1e-6)


def test_early_stopping_stops_and_restores_the_best_weights(make_settings):
    """Monitoring val/loss in `max` mode makes epoch 1 the best while the loss falls: with patience 1
    Keras stops after epoch 2 and restores epoch 1's weights."""
    settings = make_settings(
        "trainer.epochs=5",
        "optimizer=adam",
        "schedule=constant",
        "trainer.early_stopping.mode=max",
        "trainer.early_stopping.patience=1",
    )
    dataset = settings.data.load()
    result = fit(settings, dataset)
    assert result.status == "stopped_early"
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert result.best_epoch == 1
    trainer = Trainer(settings, len(dataset.y_train), dataset.n_features, dataset.n_classes)
    val = trainer.evaluate(result.state, settings.regularization, dataset.scaling, dataset.pixels_val, dataset.y_val)
    assert val["loss"] == pytest.approx(result.history[0]["val/loss"], rel=1e-5)


def test_early_stopping_disabled_runs_every_epoch(make_settings):
    settings = make_settings(
        "trainer.epochs=3",
        "trainer.early_stopping.enabled=false",
        "trainer.early_stopping.mode=max",
        "trainer.early_stopping.patience=0",
    )
    assert len(fit(settings, settings.data.load()).history) == 3


def test_divergence_is_detected(make_settings):
    settings = make_settings(
        "trainer.epochs=3", "optimizer=sgd", "optimizer.learning_rate=1e30", "schedule=constant", "activation=relu"
    )
    result = fit(settings, settings.data.load())
    assert result.status == "diverged"
    assert result.diverged_epoch == 1 and len(result.history) == 1
    assert not math.isfinite(result.history[0]["train/loss"])
    assert result.test is None


def _every_option():
    groups = {
        "initializer": INITIALIZERS,
        "activation": ACTIVATIONS,
        "normalization": NORMALIZATIONS,
        "optimizer": OPTIMIZERS,
        "schedule": SCHEDULES,
        "model": MODELS,
    }
    cases = [(f"{group}={name}",) for group, registry in groups.items() for name in registry.names()]
    cases += [(f"regularizer={name}",) for name in REGULARIZERS.names()]
    return cases


@pytest.mark.parametrize("overrides", _every_option(), ids=lambda o: " ".join(o))
def test_every_option_trains_one_epoch(make_settings, overrides):
    extra = ("model.depth=3", "model.width=16") if overrides[0] == "model=deep_mlp" else ()
    settings = make_settings(*overrides, *extra)
    result = fit(settings, settings.data.load())
    assert result.status == "completed"
    record = result.history[0]
    assert all(math.isfinite(record[k]) for k in ("train/loss", "val/loss", "lr"))
    assert result.history[0]["step"] == 16


def _close(a, b):
    keys = ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr", "step", "epoch")
    np.testing.assert_allclose(
        [[r[k] for k in keys] for r in a], [[r[k] for k in keys] for r in b], rtol=2e-4, atol=2e-5
    )


def test_fused_runs_match_runs_alone(make_settings):
    """Runs differing in seed, learning rate, momentum and dropout rate train as one vmapped program
    and give each run the numbers it gets alone."""
    from deeprun.training.loop import fit_many

    variants = [
        ("trainer.seed=1", "optimizer.learning_rate=0.01", "regularizer.dropout.rate=0.1"),
        ("trainer.seed=2", "optimizer.learning_rate=0.03", "regularizer.dropout.rate=0.3"),
        ("trainer.seed=3", "optimizer.momentum=0.5", "regularizer.dropout.rate=0.2"),
    ]
    runs = [make_settings("trainer.epochs=3", "regularizer=dropout", "optimizer=momentum", *v) for v in variants]
    dataset = runs[0].data.load()
    fused = fit_many(runs, dataset)
    for settings, together in zip(runs, fused, strict=True):
        alone = fit(settings, dataset)
        _close(together.history, alone.history)
        assert together.test == pytest.approx(alone.test, rel=2e-4)
    assert fused[0].history[-1]["train/loss"] != fused[1].history[-1]["train/loss"]


def test_fused_runs_stop_and_reduce_lr_independently(make_settings):
    from deeprun.training.loop import fit_many

    common = (
        "trainer.epochs=6",
        "optimizer=adam",
        "schedule=performance",
        "schedule.patience=1",
        "schedule.monitor=train/accuracy",
        "schedule.mode=min",
    )
    runs = [
        make_settings(*common, "trainer.early_stopping.enabled=false"),
        make_settings(
            *common, "trainer.early_stopping.mode=max", "trainer.early_stopping.patience=1", "trainer.seed=5"
        ),
    ]
    dataset = runs[0].data.load()
    fused = fit_many(runs, dataset)
    assert fused[0].status == "completed" and len(fused[0].history) == 6
    assert fused[1].status == "stopped_early" and len(fused[1].history) == 2
    for settings, together in zip(runs, fused, strict=True):
        _close(together.history, fit(settings, dataset).history)
    lrs = [r["lr"] for r in fused[0].history]
    assert lrs[-1] < lrs[0]  # accuracy rises, so "min" mode sees no improvement and halves the lr


def test_injected_hyperparameters_stay_out_of_the_compiled_programs(make_settings):
    """Runs that differ only in seed, learning rate and momentum lower to the same init and epoch programs
    (so the persistent cache serves a tune trial or the next job of a sweep), and each still starts from
    its own values and trains with them."""
    from deeprun.training.state import DeviceData
    from deeprun.training.trainer import Trainer

    programs, results = [], []
    for overrides in (
        ("trainer.seed=1", "optimizer.learning_rate=0.01", "optimizer.beta_1=0.9"),
        ("trainer.seed=2", "optimizer.learning_rate=0.03", "optimizer.beta_1=0.8"),
    ):
        settings = make_settings("optimizer=nadam", "schedule=constant", *overrides)
        dataset = settings.data.load()
        trainer = Trainer(settings, len(dataset.y_train), dataset.n_features, dataset.n_classes)
        state, member = trainer.init(settings)
        assert float(state.opt_state.hyperparams["learning_rate"]) == pytest.approx(settings.optimizer.learning_rate)
        assert float(state.opt_state.hyperparams["beta_1"]) == pytest.approx(settings.optimizer.beta_1)
        init_text = trainer.init_program(settings).lower(jax.random.key(0)).as_text()
        epoch_text = trainer.epoch_fn.lower(
            state, member, trainer.place(DeviceData.of(dataset)), jnp.int32(0), None
        ).as_text()
        programs.append((init_text, epoch_text))
        results.append(fit(settings, dataset).history[-1]["train/loss"])
    assert programs[0] == programs[1]
    assert results[0] != results[1]


@pytest.mark.parametrize("batched", [False, True], ids=["member_loop", "vmap"])
def test_progress_within_the_epoch_reports_steps_and_changes_no_number(make_settings, batched):
    """The epoch program with its host callback (what a terminal gets) reports every 1/5 epoch of each
    fused run's full batches, and trains bit for bit as the program without it (under vmap: to float
    tolerance, as vmapped runs against runs alone)."""
    from deeprun.training.loop import fit_many
    from deeprun.training.trainer import PROGRESS_REPORTS

    runs = [make_settings("trainer.epochs=2", f"trainer.seed={seed}", "trainer.batch_size=8") for seed in (1, 2)]
    dataset = runs[0].data.load()
    reports: list[int] = []
    shown = fit_many(runs, dataset, batched=batched, steps_done=lambda count: reports.append(int(count)))
    plain = fit_many(runs, dataset, batched=batched)
    for with_progress, without in zip(shown, plain, strict=True):
        if batched:  # vmap's numbers are float-close, not bitwise (as against the runs alone)
            _close(with_progress.history, without.history)
        else:
            assert without_times(with_progress.history) == without_times(without.history)
            assert with_progress.test == without.test
    full_batches = len(dataset.y_train) // 8
    every = -(-full_batches // PROGRESS_REPORTS)
    assert set(reports) == {every * len(runs) if batched else every}  # under vmap: one call for both runs
    assert sum(reports) == 2 * len(runs) * (full_batches // every) * every  # 2 epochs × 2 fused runs
