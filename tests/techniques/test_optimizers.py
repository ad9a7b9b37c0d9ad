"""Optimizers against the Keras (TF2 optimizer_v2) update equations, reimplemented here in numpy."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from omegaconf import OmegaConf

from deeprun.registry import ConfigError
from deeprun.settings import CONFIG_DIR
from deeprun.techniques.optimizers import OPTIMIZERS, learning_rate_of, with_hyperparams

CONF_DIR = CONFIG_DIR / "optimizer"
N_STEPS = 4


# ----- numpy references: each yields the weights after every step, for one tensor -----------------


def keras_sgd(spec, w, gradients):
    for g in gradients:
        w = w - spec.learning_rate * g
        yield w


def keras_momentum(spec, w, gradients):
    v = np.zeros_like(w)
    for g in gradients:
        v = spec.momentum * v - spec.learning_rate * g
        w = w + v
        yield w


def keras_nesterov(spec, w, gradients):
    v = np.zeros_like(w)
    for g in gradients:
        v = spec.momentum * v - spec.learning_rate * g
        w = w + spec.momentum * v - spec.learning_rate * g
        yield w


def keras_adagrad(spec, w, gradients):
    s = np.full_like(w, spec.initial_accumulator_value)
    for g in gradients:
        s = s + g**2
        w = w - spec.learning_rate * g / (np.sqrt(s) + spec.epsilon)
        yield w


def keras_rmsprop(spec, w, gradients):
    s = np.zeros_like(w)
    for g in gradients:
        s = spec.rho * s + (1 - spec.rho) * g**2
        w = w - spec.learning_rate * g / (np.sqrt(s) + spec.epsilon)
        yield w


def keras_adam(spec, w, gradients, weight_decay=0.0):
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(gradients, start=1):
        w = w - spec.learning_rate * weight_decay * w
        m = spec.beta_1 * m + (1 - spec.beta_1) * g
        v = spec.beta_2 * v + (1 - spec.beta_2) * g**2
        alpha = spec.learning_rate * np.sqrt(1 - spec.beta_2**t) / (1 - spec.beta_1**t)
        w = w - alpha * m / (np.sqrt(v) + spec.epsilon)
        yield w


def keras3_adamw(spec, w, gradients):
    yield from keras_adam(spec, w, gradients, weight_decay=spec.weight_decay)


def keras_adamax(spec, w, gradients):
    m, u = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(gradients, start=1):
        m = spec.beta_1 * m + (1 - spec.beta_1) * g
        u = np.maximum(spec.beta_2 * u, np.abs(g))
        w = w - spec.learning_rate / (1 - spec.beta_1**t) * m / (u + spec.epsilon)
        yield w


def keras_nadam(spec, w, gradients, decay_exponent):
    m, v = np.zeros_like(w), np.zeros_like(w)
    product = 1.0
    for t, g in enumerate(gradients, start=1):
        u_t = spec.beta_1 * (1 - 0.5 * 0.96 ** (decay_exponent * t))
        u_next = spec.beta_1 * (1 - 0.5 * 0.96 ** (decay_exponent * (t + 1)))
        product = product * u_t
        m = spec.beta_1 * m + (1 - spec.beta_1) * g
        v = spec.beta_2 * v + (1 - spec.beta_2) * g**2
        m_bar = (1 - u_t) * g / (1 - product) + u_next * m / (1 - product * u_next)
        v_hat = v / (1 - spec.beta_2**t)
        w = w - spec.learning_rate * m_bar / (np.sqrt(v_hat) + spec.epsilon)
        yield w


def optax_nadam(spec, w, gradients):
    """Dozat's Nadam as optax writes it: no momentum schedule, ε added to √v̂."""
    b1, b2 = spec.beta_1, spec.beta_2
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(gradients, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        w = w - spec.learning_rate * m_hat / (np.sqrt(v_hat) + spec.epsilon)
        yield w


def nadam_reference(spec, w, gradients):
    if spec.momentum_schedule == "optax":
        return optax_nadam(spec, w, gradients)
    exponent = {"legacy": 0.004, "keras3": 1.0}[spec.momentum_schedule]
    return keras_nadam(spec, w, gradients, decay_exponent=exponent)


KERAS_REFERENCES = {
    "sgd": keras_sgd,
    "momentum": keras_momentum,
    "nesterov": keras_nesterov,
    "adagrad": keras_adagrad,
    "rmsprop": keras_rmsprop,
    "adam": keras_adam,
    "adamax": keras_adamax,
    "nadam": nadam_reference,
    "adamw": keras3_adamw,
}

# Non-default values that make every term of the update equations visible at float32 precision
# (e.g. a large ε separates "ε inside the root" from "ε outside", "on √v" from "on √v̂").
STRESSED = {
    "learning_rate": 0.1,
    "epsilon": 0.1,
    "momentum": 0.7,
    "beta_1": 0.8,
    "beta_2": 0.9,
    "rho": 0.8,
    "initial_accumulator_value": 0.5,
    "weight_decay": 0.05,
}

CASES = [(name, {}) for name in OPTIMIZERS.names()] + [
    ("nadam", {"momentum_schedule": "keras3"}),
    ("nadam", {"momentum_schedule": "optax"}),
]


def stressed(name: str, overrides: dict) -> dict:
    fields = {f.name for f in dataclasses.fields(OPTIMIZERS.get(name))}
    return {k: v for k, v in STRESSED.items() if k in fields} | overrides


def random_problem(seed: int = 0):
    """Initial weights (two tensors) and a sequence of gradients of order 0.01–1."""
    rng = np.random.default_rng(seed)
    params = {"kernel": rng.normal(size=(3, 2)), "bias": rng.normal(size=(2,))}
    scales = [1.0, 0.3, 0.01, 0.5, 0.05, 1.0]
    gradients = [{k: scales[t] * rng.normal(size=p.shape) for k, p in params.items()} for t in range(N_STEPS)]
    return params, gradients


def run_optimizer(tx, params, gradients):
    """Weights after each step, applying ``tx`` to float32 copies."""
    params = jax.tree.map(jnp.float32, params)
    state = tx.init(params)
    trajectory = []
    for g in gradients:
        updates, state = tx.update(jax.tree.map(jnp.float32, g), state, params)
        params = optax.apply_updates(params, updates)
        trajectory.append(params)
    return trajectory


@pytest.mark.parametrize("use_stressed", [False, True], ids=["defaults", "stressed"])
@pytest.mark.parametrize("name,overrides", CASES, ids=[f"{n}{o}" for n, o in CASES])
def test_first_steps_follow_the_keras_update_equations(name, overrides, use_stressed):
    spec = OPTIMIZERS.build({"name": name, **(stressed(name, overrides) if use_stressed else overrides)})
    reference = KERAS_REFERENCES[name]  # a new option without a reference fails here
    params, gradients = random_problem()
    trajectory = run_optimizer(spec.build(), params, gradients)
    for leaf in params:
        expected = list(reference(spec, params[leaf], [g[leaf] for g in gradients]))
        actual = [np.asarray(p[leaf]) for p in trajectory]
        assert len(expected) == N_STEPS
        np.testing.assert_allclose(actual, expected, rtol=2e-5, atol=1e-6, err_msg=leaf)


def test_legacy_nadam_differs_from_keras3_and_optax_nadam():
    params, gradients = random_problem(seed=1)
    final = {
        schedule: run_optimizer(
            OPTIMIZERS.build({"name": "nadam", "momentum_schedule": schedule}).build(),
            params,
            gradients,
        )[-1]["kernel"]
        for schedule in ("legacy", "keras3", "optax")
    }
    assert not np.allclose(final["legacy"], final["keras3"], rtol=1e-4, atol=0)
    assert not np.allclose(final["legacy"], final["optax"], rtol=1e-4, atol=0)


def test_optax_defaults_differ_from_keras_where_we_replaced_them():
    """Guards the reason the Keras rules are hand-written: with optax's own forms the result moves."""
    params, gradients = random_problem(seed=2)
    keras_adam_spec = OPTIMIZERS.build({"name": "adam", "epsilon": 0.1})
    ours = run_optimizer(keras_adam_spec.build(), params, gradients)[-1]["kernel"]
    theirs = run_optimizer(optax.adam(1e-3, eps=0.1), params, gradients)[-1]["kernel"]
    assert not np.allclose(ours, theirs, rtol=1e-4, atol=0)


# ----- clipping ------------------------------------------------------------------------------------


def clipped(gradients, **clip):
    """The gradient after clipping: SGD with η = 1 returns −g."""
    tx = OPTIMIZERS.build({"name": "sgd", "learning_rate": 1.0, **clip}).build()
    gradients = jax.tree.map(jnp.float32, gradients)
    updates, _ = tx.update(gradients, tx.init(gradients), gradients)
    return jax.tree.map(lambda u: -np.asarray(u), updates)


def test_clip_value_maps_the_book_example():
    np.testing.assert_allclose(clipped([0.9, 100.0], clip_value=1.0), [0.9, 1.0], rtol=1e-6)


def test_clip_norm_maps_the_book_example():
    np.testing.assert_allclose(clipped(np.array([0.9, 100.0]), clip_norm=1.0), [0.00899964, 0.9999595], rtol=1e-5)


def test_clip_norm_clips_each_tensor_by_its_own_norm_unlike_global_norm():
    gradients = {"big": np.array([3.0, 4.0]), "small": np.array([0.3, 0.4])}  # norms 5 and 0.5
    per_tensor = clipped(gradients, clip_norm=1.0)
    np.testing.assert_allclose(per_tensor["big"], gradients["big"] / 5.0, rtol=1e-6)
    np.testing.assert_allclose(per_tensor["small"], gradients["small"], rtol=1e-6)

    global_norm = np.sqrt(5.0**2 + 0.5**2)
    together = clipped(gradients, clip_global_norm=1.0)
    for name in gradients:
        np.testing.assert_allclose(together[name], gradients[name] / global_norm, rtol=1e-6)


def test_clipping_leaves_small_gradients_alone():
    gradients = np.array([0.1, -0.2])
    for clip in ({"clip_value": 1.0}, {"clip_norm": 1.0}, {"clip_global_norm": 1.0}):
        np.testing.assert_allclose(clipped(gradients, **clip), gradients, rtol=1e-6)


def test_clip_norm_and_clip_global_norm_are_exclusive():
    with pytest.raises(ConfigError, match="optimizer.clip_global_norm"):
        OPTIMIZERS.build({"name": "adam", "clip_norm": 1.0, "clip_global_norm": 1.0})


# ----- injected hyperparameters ----------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_injected_hyperparams_are_the_learning_rate_and_the_momentum_hyperparam(name):
    spec = OPTIMIZERS.default(name)
    state = spec.build().init({"w": jnp.zeros(3)})
    expected = {"learning_rate"} | ({spec.momentum_hyperparam} - {None})
    assert set(state.hyperparams) == expected
    assert float(learning_rate_of(state)) == pytest.approx(spec.learning_rate)
    if spec.momentum_hyperparam is not None:
        value = getattr(spec, spec.momentum_hyperparam)
        assert float(state.hyperparams[spec.momentum_hyperparam]) == pytest.approx(value)


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS.names() if OPTIMIZERS.get(n).momentum_hyperparam])
def test_changing_the_momentum_hyperparam_changes_the_update(name):
    spec = OPTIMIZERS.default(name)
    tx = spec.build()
    params = {"w": jnp.ones(3)}
    gradients = [{"w": jnp.array([1.0, -2.0, 0.5])}, {"w": jnp.array([0.3, 0.1, -1.0])}]

    def second_update(momentum_value):
        state = tx.init(params)
        _, state = tx.update(gradients[0], state, params)
        state = with_hyperparams(state, **{spec.momentum_hyperparam: momentum_value})
        updates, _ = tx.update(gradients[1], state, params)
        return np.asarray(updates["w"])

    assert not np.allclose(second_update(0.9), second_update(0.5))


def test_momentum_velocity_accumulates_lr_scaled_steps_when_lr_changes():
    """Keras: v ← βv − η_t·g, so a lower η only scales the new contribution."""
    tx = OPTIMIZERS.build({"name": "momentum", "learning_rate": 0.1, "momentum": 0.9}).build()
    g = {"w": jnp.array([1.0, -2.0])}
    w = {"w": jnp.zeros(2)}
    state = tx.init(w)
    v, w_ref = np.zeros(2), np.zeros(2)
    for lr in (0.1, 0.01, 0.001):
        state = with_hyperparams(state, learning_rate=lr)
        updates, state = tx.update(g, state, w)
        w = optax.apply_updates(w, updates)
        v = 0.9 * v - lr * np.asarray(g["w"])
        w_ref = w_ref + v
        np.testing.assert_allclose(w["w"], w_ref, rtol=1e-6)


def test_with_hyperparams_changes_the_lr_inside_jit_without_retracing():
    tx = OPTIMIZERS.default("adam").build()
    traces = []

    @jax.jit
    def step(params, state, gradients, learning_rate):
        traces.append(1)
        state = with_hyperparams(state, learning_rate=learning_rate)
        updates, state = tx.update(gradients, state, params)
        return optax.apply_updates(params, updates), state

    params, g = {"w": jnp.ones(2)}, {"w": jnp.array([1.0, -1.0])}
    state = tx.init(params)
    for lr in (0.1, 0.05, 0.2):
        params, state = step(params, state, g, jnp.float32(lr))
        assert float(learning_rate_of(state)) == pytest.approx(lr)
    # Also changed on the host between compiled steps: same pytree type, so no new trace.
    state = with_hyperparams(state, learning_rate=0.3)
    step(params, state, g, jnp.float32(0.3))
    assert len(traces) == 1


def test_sgd_update_uses_the_replaced_learning_rate():
    tx = OPTIMIZERS.default("sgd").build()
    params, g = {"w": jnp.zeros(2)}, {"w": jnp.array([1.0, -3.0])}
    state = with_hyperparams(tx.init(params), learning_rate=0.25)
    updates, _ = tx.update(g, state, params)
    np.testing.assert_allclose(updates["w"], [-0.25, 0.75], rtol=1e-6)


def test_with_hyperparams_rejects_unknown_names():
    state = OPTIMIZERS.default("sgd").build().init({"w": jnp.zeros(1)})
    with pytest.raises(KeyError, match="momentum"):
        with_hyperparams(state, momentum=0.9)


# ----- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,field,value,message",
    [
        ("sgd", "learning_rate", -1.0, "optimizer.learning_rate must be > 0 (got -1.0)"),
        ("adam", "learning_rate", 0, "optimizer.learning_rate must be > 0"),
        ("momentum", "momentum", 1.0, "optimizer.momentum must be in [0, 1) (got 1.0)"),
        ("nesterov", "momentum", -0.1, "optimizer.momentum must be in [0, 1)"),
        ("adam", "beta_1", 1.0, "optimizer.beta_1 must be in [0, 1)"),
        ("nadam", "beta_2", 1.5, "optimizer.beta_2 must be in [0, 1)"),
        ("rmsprop", "rho", -0.5, "optimizer.rho must be in [0, 1)"),
        ("adamax", "epsilon", -1e-7, "optimizer.epsilon must be >= 0"),
        ("adagrad", "initial_accumulator_value", -0.1, "optimizer.initial_accumulator_value must be >= 0"),
        ("adamw", "weight_decay", -0.01, "optimizer.weight_decay must be >= 0"),
        ("sgd", "clip_value", 0.0, "optimizer.clip_value must be > 0"),
        ("rmsprop", "clip_norm", -1.0, "optimizer.clip_norm must be > 0"),
        ("adam", "clip_global_norm", 0.0, "optimizer.clip_global_norm must be > 0"),
        ("adam", "learning_rate", "fast", "optimizer.adam.learning_rate must be a number"),
        ("nadam", "momentum_schedule", "dozat", "optimizer.nadam.momentum_schedule must be one of"),
    ],
)
def test_bad_values_raise_config_error_naming_the_field(name, field, value, message):
    with pytest.raises(ConfigError) as error:
        OPTIMIZERS.build({"name": name, field: value})
    assert message in str(error.value)


def test_unknown_field_lists_the_valid_fields():
    with pytest.raises(ConfigError) as error:
        OPTIMIZERS.build({"name": "adam", "lr": 0.1})
    message = str(error.value)
    assert "'lr'" in message
    for field in ("learning_rate", "beta_1", "beta_2", "epsilon", "clip_norm"):
        assert field in message


def test_unknown_optimizer_lists_the_options():
    with pytest.raises(ConfigError, match="nadam"):
        OPTIMIZERS.build({"name": "adadelta"})


# ----- YAML ↔ registry ---------------------------------------------------------------------------


def test_yaml_files_are_exactly_the_registered_options():
    assert sorted(p.stem for p in CONF_DIR.glob("*.yaml")) == OPTIMIZERS.names()


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_yaml_writes_out_every_field_with_its_default_and_builds(path):
    assert path.read_text().startswith("# "), "one-line comment on top"
    config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert config["name"] == path.stem
    spec = OPTIMIZERS.build(config)
    fields = {f.name for f in dataclasses.fields(spec)}
    assert set(config) == {"name"} | fields
    assert spec == OPTIMIZERS.default(path.stem)
    state = spec.build().init({"w": jnp.zeros(2)})
    assert float(learning_rate_of(state)) == pytest.approx(config["learning_rate"])
