"""Optimizers with the update rules of Keras (TF2 ``optimizer_v2``), built as Optax transformations.

Each option of the ``optimizer`` config group is a frozen dataclass registered in :data:`OPTIMIZERS`; its
fields, with Keras's defaults, are the schema. :meth:`OptimizerSpec.build` returns

    inject_hyperparams(chain(<gradient clipping>, <update rule, including the −η scaling>))

so the whole optimizer state is an ``InjectStatefulHyperparamsState`` whose ``hyperparams`` hold the
learning rate (and, for the momentum family and the Adam family, the momentum-like hyperparameter that
1cycle may cycle). Schedules change them with :func:`with_hyperparams` between or inside compiled steps:
they are traced arrays, so changing them never recompiles.

Where Keras and Optax disagree, Keras wins (the book's numbers were produced by Keras):

- momentum: Keras's velocity accumulates lr-scaled steps (v ← βv − ηg), optax.sgd traces raw gradients;
- Adagrad / RMSprop / Adam / Adamax: Keras adds ε *outside* the square root, and Adam adds it to the
  un-bias-corrected √v; Adamax puts ε outside the max;
- Nadam: TF2 Keras uses Dozat's warming momentum schedule, optax.nadam does not.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from deeprun.registry import (
    Registry,
    require,
    require_in_unit_interval,
    require_non_negative,
    require_positive,
)

OPTIMIZERS: Registry[OptimizerSpec] = Registry("optimizer")

# Keras's Nadam momentum schedule u_t = β1·(1 − ½·0.96^(k·t)): TF2 optimizer_v2 used k = 0.004
# (its `schedule_decay`), Keras 3 uses k = 1.
NADAM_DECAY_EXPONENTS = {"legacy": 0.004, "keras3": 1.0}


# --------------------------------------------------------------------------------------------------
# Gradient transformations that Optax lacks or defines differently from Keras
# --------------------------------------------------------------------------------------------------


def clip_by_tensor_norm(max_norm: float) -> optax.GradientTransformation:
    """Keras ``clipnorm``: clip each gradient tensor by its own L2 norm, g ← g·c / max(‖g‖₂, c).

    Unlike ``optax.clip_by_global_norm`` the tensors are rescaled independently of each other.
    """

    def clip(gradient: jax.Array) -> jax.Array:
        norm = jnp.sqrt(jnp.sum(jnp.square(gradient)))
        return gradient * (max_norm / jnp.maximum(norm, max_norm))

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(clip, updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def scale_by_keras_adagrad(initial_accumulator_value: float, epsilon: float) -> optax.GradientTransformation:
    """Keras Adagrad direction: s ← s + g²;  d = g / (√s + ε), with s₀ = initial_accumulator_value.

    ``optax.adagrad`` puts ε inside the square root and starts from a different accumulator.
    """

    def init_fn(params):
        return optax.ScaleByRssState(sum_of_squares=optax.tree.full_like(params, initial_accumulator_value))

    def update_fn(updates, state, params=None):
        del params
        sum_of_squares = jax.tree.map(lambda s, g: s + jnp.square(g), state.sum_of_squares, updates)
        updates = jax.tree.map(lambda g, s: g / (jnp.sqrt(s) + epsilon), updates, sum_of_squares)
        return updates, optax.ScaleByRssState(sum_of_squares=sum_of_squares)

    return optax.GradientTransformation(init_fn, update_fn)


def _zero_moments(params) -> optax.ScaleByAdamState:
    return optax.ScaleByAdamState(
        count=jnp.zeros([], jnp.int32),
        mu=optax.tree.zeros_like(params),
        nu=optax.tree.zeros_like(params),
    )


def scale_by_keras_adam(beta_1: Any, beta_2: float, epsilon: float) -> optax.GradientTransformation:
    """Keras Adam direction (t = 1, 2, …):

        m ← β1·m + (1−β1)·g;   v ← β2·v + (1−β2)·g²
        d = √(1−β2^t)/(1−β1^t) · m / (√v + ε)

    ε is added to the *un-corrected* √v (``optax.scale_by_adam`` adds it to √v̂), which matters while
    v is small. ``beta_1`` may be a traced hyperparameter (1cycle momentum cycling).
    """

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, beta_1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, beta_2, 2)
        count = optax.safe_increment(state.count)
        step_size = jnp.sqrt(1 - beta_2**count) / (1 - beta_1**count)
        updates = jax.tree.map(lambda m, v: step_size * m / (jnp.sqrt(v) + epsilon), mu, nu)
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(_zero_moments, update_fn)


def scale_by_keras_adamax(beta_1: Any, beta_2: float, epsilon: float) -> optax.GradientTransformation:
    """Keras Adamax direction (t = 1, 2, …):

        m ← β1·m + (1−β1)·g;   u ← max(β2·u, |g|)
        d = m / ((1−β1^t)·(u + ε))

    ``optax.scale_by_adamax`` uses u ← max(β2·u, |g| + ε) instead.
    """

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, beta_1, 1)
        nu = jax.tree.map(lambda u, g: jnp.maximum(beta_2 * u, jnp.abs(g)), state.nu, updates)
        count = optax.safe_increment(state.count)
        bias_correction = 1 - beta_1**count
        updates = jax.tree.map(lambda m, u: m / (bias_correction * (u + epsilon)), mu, nu)
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(_zero_moments, update_fn)


class ScaleByKerasNadamState(NamedTuple):
    """Adam's moments plus Π_t = u_1·…·u_t, the running product of Dozat's momentum schedule."""

    count: jax.Array  # type: ignore[assignment]  # optax's own states name this field count, too
    mu: optax.Updates
    nu: optax.Updates
    momentum_product: jax.Array


def nadam_momentum(beta_1: Any, t: jax.Array, decay_exponent: float) -> jax.Array:
    """Dozat's warming momentum u_t = β1·(1 − ½·0.96^(decay_exponent·t))."""
    return beta_1 * (1 - 0.5 * 0.96 ** (decay_exponent * t))


def scale_by_keras_nadam(
    beta_1: Any, beta_2: float, epsilon: float, decay_exponent: float
) -> optax.GradientTransformation:
    """Keras Nadam direction (t = 1, 2, …; TF2 legacy: decay_exponent 0.004, Keras 3: 1):

    u_t = β1·(1 − ½·0.96^(k·t)),   Π_t = Π_{t−1}·u_t  (Π_0 = 1)
    m ← β1·m + (1−β1)·g;   v ← β2·v + (1−β2)·g²
    m̄ = (1−u_t)·g/(1−Π_t) + u_{t+1}·m/(1−Π_t·u_{t+1});   v̂ = v/(1−β2^t)
    d = m̄ / (√v̂ + ε)
    """

    def init_fn(params):
        moments = _zero_moments(params)
        return ScaleByKerasNadamState(
            count=moments.count,
            mu=moments.mu,
            nu=moments.nu,
            momentum_product=jnp.ones([], jnp.float32),
        )

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, beta_1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, beta_2, 2)
        count = optax.safe_increment(state.count)
        momentum_now = nadam_momentum(beta_1, count, decay_exponent)
        momentum_next = nadam_momentum(beta_1, count + 1, decay_exponent)
        # Keep Π_t's dtype fixed: with x64 enabled the schedule term would promote it to float64.
        product = (state.momentum_product * momentum_now).astype(state.momentum_product.dtype)
        product_next = product * momentum_next
        v_correction = 1 - beta_2**count

        def direction(g, m, v):
            m_bar = (1 - momentum_now) * g / (1 - product) + momentum_next * m / (1 - product_next)
            return m_bar / (jnp.sqrt(v / v_correction) + epsilon)

        updates = jax.tree.map(direction, updates, mu, nu)
        return updates, ScaleByKerasNadamState(count=count, mu=mu, nu=nu, momentum_product=product)

    return optax.GradientTransformation(init_fn, update_fn)


def descend(direction: optax.GradientTransformation, learning_rate: Any) -> optax.GradientTransformation:
    """w ← w − η·d: follow ``direction`` downhill with step size η."""
    return optax.chain(direction, optax.scale(-learning_rate))


# --------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerSpec:
    """Fields every optimizer has: the learning rate η and Keras's gradient clipping.

    clip_value:       each gradient component clipped to [−c, c]          (Keras ``clipvalue``)
    clip_norm:        each gradient *tensor* g ← g·c / max(‖g‖, c)        (Keras ``clipnorm``)
    clip_global_norm: all gradients scaled together by c / max(‖G‖, c)   (Keras ``global_clipnorm``)

    Subclasses define :meth:`update_rule`, whose parameters after ``learning_rate`` are the injected
    hyperparameters (``momentum_hyperparam`` names the one 1cycle's momentum cycling sets).
    """

    learning_rate: float
    clip_value: float | None = None
    clip_norm: float | None = None
    clip_global_norm: float | None = None

    momentum_hyperparam: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        require_positive("optimizer.learning_rate", self.learning_rate)
        for name in ("clip_value", "clip_norm", "clip_global_norm"):
            if getattr(self, name) is not None:
                require_positive(f"optimizer.{name}", getattr(self, name))
        # Keras refuses both norm clippings at once (one would silently override the other).
        require(
            self.clip_norm is None or self.clip_global_norm is None,
            "optimizer.clip_global_norm",
            "cannot be set together with optimizer.clip_norm",
            self.clip_global_norm,
        )

    def _require_each(self, check, *names: str) -> None:
        for name in names:
            check(f"optimizer.{name}", getattr(self, name))

    def hyperparam_names(self) -> tuple[str, ...]:
        """The hyperparameters living in the optimizer state (changeable without recompiling)."""
        if self.momentum_hyperparam is None:
            return ("learning_rate",)
        return ("learning_rate", self.momentum_hyperparam)

    def clipping(self) -> list[optax.GradientTransformation]:
        """Keras's order: per-tensor norm, global norm, then value."""
        transforms = []
        if self.clip_norm is not None:
            transforms.append(clip_by_tensor_norm(self.clip_norm))
        if self.clip_global_norm is not None:
            transforms.append(optax.clip_by_global_norm(self.clip_global_norm))
        if self.clip_value is not None:
            transforms.append(optax.clip(self.clip_value))
        return transforms

    def update_rule(self, learning_rate: Any) -> optax.GradientTransformation:
        """The optimizer's update, −η·direction, for the (possibly traced) injected hyperparameters."""
        raise NotImplementedError

    def build(self) -> optax.GradientTransformationExtraArgs:
        """``inject_hyperparams(chain(clipping, update_rule))`` with this spec's values injected."""

        def factory(**hyperparams):
            return optax.chain(*self.clipping(), self.update_rule(**hyperparams))

        # inject_hyperparams reads the hyperparameter names from the factory's signature.
        factory.__signature__ = inspect.signature(self.update_rule)  # type: ignore[attr-defined]
        # float(): an int would be injected as an int32 hyperparameter.
        values = {name: float(getattr(self, name)) for name in self.hyperparam_names()}
        return optax.inject_hyperparams(factory)(**values)


@OPTIMIZERS.register("sgd")
@dataclasses.dataclass(frozen=True, kw_only=True)
class SGD(OptimizerSpec):
    """Plain SGD: w ← w − η·g."""

    learning_rate: float = 0.01

    def update_rule(self, learning_rate):
        return optax.scale(-learning_rate)


@OPTIMIZERS.register("momentum")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Momentum(OptimizerSpec):
    """Keras SGD(momentum=β): v ← β·v − η·g;  w ← w + v.

    The velocity accumulates lr-scaled steps, so the −η scaling comes *before* the trace (optax.sgd
    traces raw gradients and scales afterwards: the same for a constant η, not once η changes).
    """

    learning_rate: float = 0.01
    momentum: float = 0.9

    momentum_hyperparam: ClassVar[str | None] = "momentum"
    nesterov: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require_each(require_in_unit_interval, "momentum")

    def update_rule(self, learning_rate, momentum):
        return optax.chain(optax.scale(-learning_rate), optax.trace(decay=momentum, nesterov=self.nesterov))


@OPTIMIZERS.register("nesterov")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Nesterov(Momentum):
    """Keras SGD(momentum=β, nesterov=True): v ← β·v − η·g;  w ← w + β·v − η·g (v already updated).

    ``optax.trace(nesterov=True)`` applied to −η·g returns exactly β·v + (−η·g).
    """

    nesterov: ClassVar[bool] = True


@OPTIMIZERS.register("adagrad")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Adagrad(OptimizerSpec):
    """Keras Adagrad: s ← s + g²;  w ← w − η·g/(√s + ε), with s₀ = initial_accumulator_value."""

    learning_rate: float = 0.001
    initial_accumulator_value: float = 0.1
    epsilon: float = 1e-7

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require_each(require_non_negative, "initial_accumulator_value", "epsilon")

    def update_rule(self, learning_rate):
        return descend(scale_by_keras_adagrad(self.initial_accumulator_value, self.epsilon), learning_rate)


@OPTIMIZERS.register("rmsprop")
@dataclasses.dataclass(frozen=True, kw_only=True)
class RMSprop(OptimizerSpec):
    """Keras RMSprop: s ← ρ·s + (1−ρ)·g² (s₀ = 0);  w ← w − η·g/(√s + ε)."""

    learning_rate: float = 0.001
    rho: float = 0.9
    epsilon: float = 1e-7

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require_each(require_in_unit_interval, "rho")
        self._require_each(require_non_negative, "epsilon")

    def update_rule(self, learning_rate):
        # Optax's default puts ε inside the root; eps_in_sqrt=False is Keras's form.
        direction = optax.scale_by_rms(decay=self.rho, eps=self.epsilon, initial_scale=0.0, eps_in_sqrt=False)
        return descend(direction, learning_rate)


@OPTIMIZERS.register("adam")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Adam(OptimizerSpec):
    """Keras Adam: α_t = η·√(1−β2^t)/(1−β1^t);  w ← w − α_t·m/(√v + ε)  (see scale_by_keras_adam)."""

    learning_rate: float = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7

    momentum_hyperparam: ClassVar[str | None] = "beta_1"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require_each(require_in_unit_interval, "beta_1", "beta_2")
        self._require_each(require_non_negative, "epsilon")

    def update_rule(self, learning_rate, beta_1):
        return descend(scale_by_keras_adam(beta_1, self.beta_2, self.epsilon), learning_rate)


@OPTIMIZERS.register("adamax")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Adamax(Adam):
    """Keras Adamax: u ← max(β2·u, |g|);  w ← w − η/(1−β1^t)·m/(u + ε)."""

    def update_rule(self, learning_rate, beta_1):
        return descend(scale_by_keras_adamax(beta_1, self.beta_2, self.epsilon), learning_rate)


@OPTIMIZERS.register("nadam")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Nadam(Adam):
    """Keras Nadam (see scale_by_keras_nadam); ``momentum_schedule`` picks the variant:

    legacy: TF2 optimizer_v2 (u_t with 0.96^(0.004·t)) — what produced the book's numbers;
    keras3: Keras 3 (0.96^t);  optax: plain ``optax.nadam`` (no warming schedule, ε on √v̂).
    """

    momentum_schedule: Literal["legacy", "keras3", "optax"] = "legacy"

    def update_rule(self, learning_rate, beta_1):
        if self.momentum_schedule == "optax":
            direction = optax.scale_by_adam(b1=beta_1, b2=self.beta_2, eps=self.epsilon, nesterov=True)
        else:
            direction = scale_by_keras_nadam(
                beta_1, self.beta_2, self.epsilon, NADAM_DECAY_EXPONENTS[self.momentum_schedule]
            )
        return descend(direction, learning_rate)


@OPTIMIZERS.register("adamw")
@dataclasses.dataclass(frozen=True, kw_only=True)
class AdamW(Adam):
    """Keras 3 AdamW: w ← w − η·λ·w, then the Keras Adam step (decoupled, lr-multiplied decay).

    TensorFlow-Addons AdamW (the stored notebook output) decays by λ·w *without* η.
    """

    weight_decay: float = 0.004

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require_each(require_non_negative, "weight_decay")

    def update_rule(self, learning_rate, beta_1):
        direction = optax.chain(
            scale_by_keras_adam(beta_1, self.beta_2, self.epsilon),
            optax.add_decayed_weights(self.weight_decay),
        )
        return descend(direction, learning_rate)


# --------------------------------------------------------------------------------------------------
# Reading and changing the injected hyperparameters
# --------------------------------------------------------------------------------------------------


def learning_rate_of(opt_state: optax.InjectStatefulHyperparamsState) -> jax.Array:
    """The learning rate the next update will use."""
    return opt_state.hyperparams["learning_rate"]


def with_hyperparams(
    opt_state: optax.InjectStatefulHyperparamsState, **values: Any
) -> optax.InjectStatefulHyperparamsState:
    """A copy of ``opt_state`` with the named hyperparameters replaced (jit-safe, no recompilation).

    Each new value is cast to the current one's dtype, so the state's pytree type (and hence the
    compiled step) stays the same.
    """
    unknown = sorted(set(values) - set(opt_state.hyperparams))
    if unknown:
        raise KeyError(
            f"no hyperparameter {unknown[0]!r} in the optimizer state; "
            f"it has: {', '.join(sorted(opt_state.hyperparams))}"
        )
    replaced = {name: jnp.asarray(value, dtype=opt_state.hyperparams[name].dtype) for name, value in values.items()}
    return opt_state._replace(hyperparams={**opt_state.hyperparams, **replaced})
