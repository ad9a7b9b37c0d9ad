"""Learning-rate schedules against their formulas, the book's callbacks and Keras's ReduceLROnPlateau."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from deeprun.registry import ConfigError
from deeprun.settings import CONFIG_DIR
from deeprun.techniques.schedules import SCHEDULES, PlateauState, learning_rate_curve

CONF_DIR = CONFIG_DIR / "schedule"
# Schedules that set the rate from the counters: `performance` changes it on the host, and `constant`
# without a value leaves the optimizer's rate in its state.
LR_SETTING = [name for name in SCHEDULES.names() if name not in ("performance", "constant")]


def schedule(base_lr=0.01, steps_per_epoch=10, epochs=5, **config):
    return SCHEDULES.build(config).resolve(base_lr, steps_per_epoch, epochs)


def lr_at(resolved, step, epoch=0):
    return float(resolved.learning_rate(step, epoch))


# ----- closed-form schedules ---------------------------------------------------------------------


def test_constant_uses_base_lr_or_its_own_value():
    assert not schedule(0.03, name="constant").sets_learning_rate  # the optimizer's rate, left in its state
    assert lr_at(schedule(0.03, name="constant", learning_rate=0.2), 7) == pytest.approx(0.2)


@pytest.mark.parametrize("power", [1.0, 2.0, 0.5])
def test_power_follows_its_formula_per_step(power):
    resolved = schedule(0.01, name="power", decay_steps=10_000, power=power)
    for t in (0, 1, 5_000, 10_000, 12_345, 100_000):
        assert lr_at(resolved, t) == pytest.approx(0.01 / (1 + t / 10_000) ** power, rel=1e-6)


def test_power_default_is_keras_legacy_sgd_decay():
    """SGD(learning_rate=0.01, decay=1e-4): lr_t = lr0 / (1 + decay·t)."""
    resolved = schedule(0.01, name="power")
    for t in (0, 1719, 17_190):
        assert lr_at(resolved, t) == pytest.approx(0.01 / (1 + 1e-4 * t), rel=1e-6)


def test_power_per_epoch_reads_the_epoch_counter():
    resolved = schedule(0.01, name="power", decay_steps=4, unit="epoch")
    assert lr_at(resolved, step=999, epoch=3) == pytest.approx(0.01 / (1 + 3 / 4), rel=1e-6)


def test_exponential_follows_its_formula_smooth_and_staircase():
    smooth = schedule(0.01, name="exponential", decay_rate=0.1, decay_steps=20_000)
    stairs = schedule(0.01, name="exponential", decay_rate=0.1, decay_steps=20_000, staircase=True)
    for t in (0, 1, 19_999, 20_000, 34_375, 100_000):
        assert lr_at(smooth, t) == pytest.approx(0.01 * 0.1 ** (t / 20_000), rel=1e-5)
        assert lr_at(stairs, t) == pytest.approx(0.01 * 0.1 ** (t // 20_000), rel=1e-5)


def test_exponential_per_epoch_matches_the_books_callback():
    """LearningRateScheduler(lambda epoch: 0.01 * 0.1 ** (epoch / 20)); lr at E25 = 6.3096e-4."""
    resolved = schedule(0.01, name="exponential", decay_steps=20, unit="epoch")
    curve = learning_rate_curve(resolved, steps_per_epoch=3, epochs=25)
    expected = np.repeat([0.01 * 0.1 ** (epoch / 20) for epoch in range(25)], 3)
    np.testing.assert_allclose(curve, expected, rtol=1e-5)
    assert curve[-1] == pytest.approx(6.3096e-4, rel=1e-4)


def test_piecewise_per_epoch_switches_at_the_boundary_epoch():
    """The book: 0.01 if epoch < 5, 0.005 if epoch < 15, else 0.001 (from base 0.01 and factors)."""
    resolved = schedule(0.01, name="piecewise")
    expected = [0.01 if e < 5 else 0.005 if e < 15 else 0.001 for e in range(25)]
    actual = [lr_at(resolved, step=0, epoch=e) for e in range(25)]
    np.testing.assert_allclose(actual, expected, rtol=1e-6)


def test_piecewise_per_step_keeps_the_value_at_the_boundary_like_tf():
    """PiecewiseConstantDecay: values[0] while step <= boundaries[0], values[1] while <= boundaries[1]."""
    resolved = schedule(name="piecewise", boundaries=[100, 200], values=[0.3, 0.2, 0.1], unit="step")
    for step, expected in [(0, 0.3), (100, 0.3), (101, 0.2), (200, 0.2), (201, 0.1), (10**6, 0.1)]:
        assert lr_at(resolved, step, epoch=50) == pytest.approx(expected)


def test_piecewise_absolute_values_ignore_base_lr():
    resolved = schedule(0.5, name="piecewise", values=[0.01, 0.005, 0.001])
    assert lr_at(resolved, 0, epoch=6) == pytest.approx(0.005)


def test_per_epoch_rates_are_constant_within_an_epoch():
    resolved = schedule(0.01, name="exponential", decay_steps=2, unit="epoch")
    curve = learning_rate_curve(resolved, steps_per_epoch=7, epochs=4).reshape(4, 7)
    assert np.all(curve == curve[:, :1])
    assert np.all(np.diff(curve[:, 0]) < 0)


# ----- 1cycle ------------------------------------------------------------------------------------


def book_one_cycle_lrs(iterations, max_lr, start_lr=None, last_iterations=None, last_lr=None):
    """The book's OneCycleScheduler, run batch by batch (lr set at batch begin)."""
    start_lr = start_lr or max_lr / 10
    last_iterations = last_iterations or iterations // 10 + 1
    half = (iterations - last_iterations) // 2
    last_lr = last_lr or start_lr / 1000

    def interpolate(iteration, iter1, iter2, lr1, lr2):
        return (lr2 - lr1) * (iteration - iter1) / (iter2 - iter1) + lr1

    lrs = []
    for iteration in range(iterations):
        if iteration < half:
            lrs.append(interpolate(iteration, 0, half, start_lr, max_lr))
        elif iteration < 2 * half:
            lrs.append(interpolate(iteration, half, 2 * half, max_lr, start_lr))
        else:
            lrs.append(interpolate(iteration, 2 * half, iterations, start_lr, last_lr))
    return np.array(lrs)


def test_one_cycle_constants_of_the_3_1cycle_run():
    """bs 128, 25 epochs of 430 steps, max_lr 0.1: 10750 iterations, last 1076, half 4837."""
    plan = SCHEDULES.build({"name": "1cycle", "max_lr": 0.1}).plan(0.01, 430, 25)
    assert (plan.iterations, plan.last_iterations, plan.half) == (10_750, 1_076, 4_837)
    assert (plan.start_lr, plan.max_lr, plan.last_lr) == pytest.approx((0.01, 0.1, 1e-5))


def test_one_cycle_matches_the_books_scheduler_on_the_3_1cycle_run():
    resolved = schedule(0.01, steps_per_epoch=430, epochs=25, name="1cycle", max_lr=0.1)
    curve = learning_rate_curve(resolved, 430, 25)
    np.testing.assert_allclose(curve, book_one_cycle_lrs(10_750, max_lr=0.1), rtol=1e-5, atol=1e-9)
    assert curve[0] == pytest.approx(0.01, rel=1e-6)
    assert int(np.argmax(curve)) == 4_837 and curve[4_837] == pytest.approx(0.1, rel=1e-6)
    assert curve[2 * 4_837] == pytest.approx(0.01, rel=1e-5)
    assert np.all(np.diff(curve[:4_838]) > 0) and np.all(np.diff(curve[4_837:]) < 0)
    # Past the last iteration the lr stays at last_lr (the book's code would extrapolate below it).
    for t in (10_750, 20_000):
        assert lr_at(resolved, t) == pytest.approx(1e-5, rel=1e-5)


def test_one_cycle_with_explicit_fields_matches_the_book():
    config = dict(iterations=91, max_lr=0.5, start_lr=0.02, last_iterations=20, last_lr=0.001)
    resolved = schedule(0.01, steps_per_epoch=13, epochs=7, name="1cycle", **config)
    expected = book_one_cycle_lrs(**config)
    np.testing.assert_allclose(learning_rate_curve(resolved, 13, 7), expected, rtol=1e-5)


def test_one_cycle_defaults_to_the_optimizer_lr_as_max_and_the_run_length():
    resolved = schedule(0.05, steps_per_epoch=11, epochs=3, name="1cycle")
    np.testing.assert_allclose(learning_rate_curve(resolved, 11, 3), book_one_cycle_lrs(33, max_lr=0.05), rtol=1e-5)


def test_one_cycle_momentum_goes_down_then_up_then_stays():
    resolved = schedule(0.1, steps_per_epoch=430, epochs=25, name="1cycle", cycle_momentum=True)
    half = 4_837
    expected = {
        0: 0.95,
        half // 2: 0.95 - 0.10 * (half // 2) / half,
        half: 0.85,
        half + 1000: 0.85 + 0.10 * 1000 / half,
        2 * half: 0.95,
        10_000: 0.95,
        50_000: 0.95,
    }
    for step, value in expected.items():
        assert float(resolved.momentum(step, 0)) == pytest.approx(value, rel=1e-6)


def test_no_momentum_unless_cycled():
    assert schedule(name="1cycle").momentum(0, 0) is None
    for name in SCHEDULES.names():
        if name != "1cycle":
            assert schedule(name=name).momentum(5, 0) is None


def test_one_cycle_rejects_a_last_phase_longer_than_the_run():
    with pytest.raises(ConfigError, match="schedule.last_iterations"):
        schedule(steps_per_epoch=10, epochs=2, name="1cycle", last_iterations=30)


# ----- performance scheduling (ReduceLROnPlateau) -----------------------------------------------------


def plateau_lrs(values, lr=0.1, **config):
    """The lr after each epoch end, feeding ``values`` of the monitored metric."""
    rule = schedule(lr, name="performance", **config).plateau
    state, lrs = rule.initial_state(), []
    for value in values:
        state, lr = rule.update(state, lr, value)
        lrs.append(lr)
    return lrs


def test_performance_does_not_set_the_lr_from_counters():
    resolved = schedule(name="performance")
    assert not resolved.sets_learning_rate
    assert resolved.plateau is not None and resolved.plateau.monitor == "val/loss"
    with pytest.raises(ValueError):
        resolved.learning_rate(0, 0)


def test_plateau_halves_the_lr_after_patience_epochs_without_improvement():
    lrs = plateau_lrs([1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8], patience=2)
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_plateau_default_patience_is_five_epochs():
    lrs = plateau_lrs([1.0] + [1.0] * 6)
    assert lrs == pytest.approx([0.1] * 5 + [0.05, 0.05])


def test_plateau_ignores_improvements_smaller_than_min_delta():
    assert plateau_lrs([1.0, 0.99995, 0.99992], patience=2) == pytest.approx([0.1, 0.1, 0.05])
    assert plateau_lrs([1.0, 0.99995, 0.99992], patience=2, min_delta=0.0) == pytest.approx([0.1] * 3)


def test_plateau_cooldown_skips_epochs_after_a_reduction():
    lrs = plateau_lrs([1.0] * 6, patience=1, cooldown=2)
    assert lrs == pytest.approx([0.1, 0.05, 0.05, 0.025, 0.025, 0.0125])


def test_plateau_cooldown_epoch_resets_wait_like_keras():
    rule = schedule(name="performance", patience=5, cooldown=3).plateau
    state, lr = rule.update(PlateauState(best=1.0, wait=3, cooldown_counter=2), 0.1, 2.0)
    assert (state, lr) == (PlateauState(best=1.0, wait=0, cooldown_counter=1), 0.1)


def test_plateau_never_goes_below_min_lr():
    lrs = plateau_lrs([1.0] * 5, patience=1, min_lr=0.03)
    assert lrs == pytest.approx([0.1, 0.05, 0.03, 0.03, 0.03])


def test_plateau_auto_mode_maximizes_accuracies():
    rising = plateau_lrs([0.5, 0.6, 0.7, 0.8], patience=1, monitor="val/accuracy")
    assert rising == pytest.approx([0.1] * 4)
    stalled = plateau_lrs([0.5, 0.6, 0.6, 0.4], patience=1, monitor="train/accuracy")
    assert stalled == pytest.approx([0.1, 0.1, 0.05, 0.025])
    forced_min = plateau_lrs([0.5, 0.6], patience=1, monitor="val/accuracy", mode="min")
    assert forced_min == pytest.approx([0.1, 0.05])


def test_plateau_state_survives_a_dict_round_trip():
    rule = schedule(name="performance", patience=3).plateau
    state = rule.initial_state()
    assert PlateauState.from_dict(state.as_dict()) == state and math.isinf(state.best)
    state, _ = rule.update(state, 0.1, 0.7)
    state, _ = rule.update(state, 0.1, 0.8)
    restored = PlateauState.from_dict(dict(state.as_dict()))
    assert restored == state == PlateauState(best=0.7, wait=1, cooldown_counter=0)


# ----- every option ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LR_SETTING)
def test_default_rates_are_derived_from_the_optimizer_lr(name):
    low = learning_rate_curve(schedule(0.02, 10, 30, name=name), 10, 30)
    high = learning_rate_curve(schedule(0.04, 10, 30, name=name), 10, 30)
    np.testing.assert_allclose(high, 2 * low, rtol=1e-6)
    assert np.all(low > 0) and np.all(low <= 0.02 * (1 + 1e-6))


@pytest.mark.parametrize("name", LR_SETTING)
def test_schedules_are_jittable_and_scannable(name):
    steps_per_epoch, epochs = 6, 4
    config = {"name": name} | ({"cycle_momentum": True} if name == "1cycle" else {})
    resolved = schedule(0.01, steps_per_epoch, epochs, **config)

    def body(carry, step):
        epoch = step // steps_per_epoch
        momentum = resolved.momentum(step, epoch)
        return carry, (resolved.learning_rate(step, epoch), jnp.float32(0) if momentum is None else momentum)

    _, (lrs, momenta) = jax.lax.scan(body, None, jnp.arange(steps_per_epoch * epochs))
    assert lrs.dtype == jnp.float32 and lrs.shape == (steps_per_epoch * epochs,)
    np.testing.assert_allclose(lrs, learning_rate_curve(resolved, steps_per_epoch, epochs), rtol=1e-6)
    jitted = jax.jit(resolved.learning_rate)(jnp.int32(7), jnp.int32(1))
    assert float(jitted) == pytest.approx(lr_at(resolved, 7, 1), rel=1e-6)
    if name == "1cycle":
        assert float(momenta[0]) == pytest.approx(0.95) and float(momenta.min()) < 0.95


# ----- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config,message",
    [
        ({"name": "constant", "learning_rate": -0.1}, "schedule.learning_rate must be > 0"),
        ({"name": "power", "decay_steps": 0}, "schedule.decay_steps must be > 0"),
        ({"name": "power", "power": -1.0}, "schedule.power must be >= 0"),
        ({"name": "exponential", "decay_rate": 0.0}, "schedule.decay_rate must be > 0"),
        ({"name": "exponential", "unit": "batch"}, "schedule.exponential.unit must be one of"),
        ({"name": "piecewise", "boundaries": [15, 5]}, "schedule.boundaries must be strictly increasing"),
        ({"name": "piecewise", "values": [0.1, 0.01]}, "schedule.values must have len(boundaries) + 1"),
        ({"name": "piecewise", "factors": [1.0, 0.5]}, "schedule.factors must have len(boundaries) + 1"),
        ({"name": "piecewise", "values": [0.1, -0.01, 0.001]}, "schedule.values[1] must be > 0"),
        ({"name": "performance", "factor": 1.0}, "schedule.factor must be in (0, 1)"),
        ({"name": "performance", "patience": -1}, "schedule.patience must be >= 0"),
        ({"name": "performance", "cooldown": -2}, "schedule.cooldown must be >= 0"),
        ({"name": "performance", "min_lr": -1e-3}, "schedule.min_lr must be >= 0"),
        ({"name": "performance", "monitor": "loss"}, "schedule.performance.monitor must be one of"),
        ({"name": "1cycle", "max_lr": 0.0}, "schedule.max_lr must be > 0"),
        ({"name": "1cycle", "iterations": 0}, "schedule.iterations must be > 0"),
        ({"name": "1cycle", "min_momentum": 1.0}, "schedule.min_momentum must be in [0, 1)"),
        ({"name": "1cycle", "lr": 0.1}, "valid fields: cycle_momentum, iterations"),
        ({"name": "cosine"}, "valid options: 1cycle, constant"),
    ],
)
def test_bad_configs_raise_config_error_naming_the_field(config, message):
    with pytest.raises(ConfigError) as error:
        SCHEDULES.build(config)
    assert message in str(error.value)


# ----- YAML ↔ registry ---------------------------------------------------------------------------


def test_yaml_files_are_exactly_the_registered_options():
    assert sorted(p.stem for p in CONF_DIR.glob("*.yaml")) == SCHEDULES.names()


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_yaml_writes_out_every_field_with_its_default_and_resolves(path):
    assert path.read_text().startswith("# "), "one-line comment on top"
    config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert config["name"] == path.stem
    option = SCHEDULES.build(config)
    assert set(config) == {"name"} | {f.name for f in dataclasses.fields(option)}
    assert option == SCHEDULES.default(path.stem)
    resolved = option.resolve(0.01, 100, 10)
    if resolved.sets_learning_rate:
        assert np.all(np.isfinite(learning_rate_curve(resolved, 100, 10)))
