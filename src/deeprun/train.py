"""Training: one compiled program per epoch, Keras's metric conventions, no Hydra.

An epoch is a single call of a ``jax.jit``-compiled function: shuffle with ``jax.random.permutation``,
``lax.scan`` over the full batches (plus one step on the remainder batch, kept as Keras does), then the
validation pass in inference mode. The data stays on the device, the training state is donated, and the
host only reads the epoch's metrics afterwards (for early stopping, the plateau rule and progress).

Reported numbers follow Keras's ``fit``: train loss/accuracy are running means over the epoch's batches
in training mode, weighted by batch size, penalty included; validation is computed once per epoch in
inference mode, penalty included; test metrics once at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from deeprun.models import MLP, count_parameters
from deeprun.optimizers import learning_rate_of, with_hyperparams
from deeprun.settings import Settings, monitor_mode

Metrics = dict[str, float]
EpochCallback = Callable[[dict[str, Any]], None]


class TrainState(NamedTuple):
    """Everything that changes during training (a pytree, donated to each epoch)."""

    params: nnx.State
    batch_stats: nnx.State
    opt_state: optax.OptState
    step: jax.Array


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    status: str  # completed | stopped_early | diverged
    history: list[dict[str, Any]]
    best_epoch: int | None
    best: Metrics | None
    test: Metrics | None
    params: dict[str, int]
    compile_time_s: float
    steady_epoch_time_s: float | None
    model: MLP
    state: TrainState
    diverged_epoch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, Any] | None:
        return self.history[-1] if self.history else None


def build_model(settings: Settings, n_features: int, n_classes: int) -> MLP:
    """The model of ``settings``, initialised from ``trainer.seed``."""
    return MLP(
        settings.model,
        n_features,
        n_classes,
        settings.initializer,
        settings.activation,
        settings.normalization,
        settings.regularization,
        rngs=nnx.Rngs(params=settings.trainer.seed),
    )


def per_example_loss(logits: jax.Array, labels: jax.Array, head: str) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy and correctness per example: sparse categorical for softmax heads, binary for
    a one-unit sigmoid head (computed from logits, which is Keras's formula without its clipping)."""
    if head == "sigmoid":
        logit = logits[..., 0]
        loss = optax.sigmoid_binary_cross_entropy(logit, labels.astype(logit.dtype))
        correct = (logit > 0) == (labels == 1)
    else:
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        correct = jnp.argmax(logits, axis=-1) == labels
    return loss, correct.astype(jnp.float32)


def steps_per_epoch(n_examples: int, batch_size: int, drop_remainder: bool) -> int:
    """Keras counts the last partial batch (55,000/32 → 1719 steps)."""
    return n_examples // batch_size if drop_remainder else math.ceil(n_examples / batch_size)


class Trainer:
    """Builds the compiled epoch and evaluation programs for one model and dataset shape."""

    def __init__(self, settings: Settings, model: MLP, n_train: int):
        self.settings = settings
        trainer = settings.trainer
        self.graphdef, params, batch_stats = nnx.split(model, nnx.Param, ...)
        self.head = settings.model.head
        self.tx = settings.optimizer.build()
        self.steps_per_epoch = steps_per_epoch(n_train, trainer.batch_size, trainer.drop_remainder)
        self.schedule = settings.schedule.resolve(
            settings.optimizer.learning_rate, self.steps_per_epoch, trainer.epochs
        )
        self.initial_state = TrainState(params, batch_stats, self.tx.init(params), jnp.zeros((), jnp.int32))
        self.base_key = jax.random.key(trainer.seed)
        self.epoch_fn = jax.jit(self._train_epoch, donate_argnums=0)
        self.evaluate_fn = jax.jit(self._evaluate)

    # ----- pure pieces, traced once -------------------------------------------------------------
    def _merge(self, params: nnx.State, batch_stats: nnx.State) -> MLP:
        # copy=True: fresh Variables in the current trace, so BN can update them under jax.grad/scan.
        return nnx.merge(self.graphdef, params, batch_stats, copy=True)

    def _scheduled_opt_state(self, state: TrainState, epoch: jax.Array) -> optax.OptState:
        """Write this step's learning rate (and momentum, for cycling schedules) into the optimizer state."""
        values = {}
        if self.schedule.sets_learning_rate:
            values["learning_rate"] = self.schedule.learning_rate(state.step, epoch)
        momentum = self.schedule.momentum(state.step, epoch)
        if momentum is not None:
            values[self.settings.optimizer.momentum_hyperparam] = momentum
        return with_hyperparams(state.opt_state, **values) if values else state.opt_state

    def _train_step(self, state: TrainState, x: jax.Array, y: jax.Array, key: jax.Array, epoch: jax.Array):
        regularization = self.settings.regularization

        def loss_fn(params, batch_stats):  # batch_stats is an argument: BN updates it in this trace
            model = self._merge(params, batch_stats)
            logits = model(x, train=True, key=key)
            loss, correct = per_example_loss(logits, y, self.head)
            total = jnp.mean(loss) + regularization.penalty(model.kernels())
            _, _, batch_stats = nnx.split(model, nnx.Param, ...)
            return total, (jnp.sum(correct), batch_stats)

        (loss, (correct, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats
        )
        opt_state = self._scheduled_opt_state(state, epoch)
        updates, opt_state = self.tx.update(grads, opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if regularization.max_norm is not None:
            model = self._merge(params, batch_stats)
            model.constrain(regularization.max_norm)
            params = nnx.state(model, nnx.Param)
        new_state = TrainState(params, batch_stats, opt_state, state.step + 1)
        return new_state, jnp.stack([loss * x.shape[0], correct])

    def _train_epoch(self, state: TrainState, x: jax.Array, y: jax.Array, x_val: jax.Array,
                     y_val: jax.Array, epoch: jax.Array):
        trainer = self.settings.trainer
        shuffle_key, dropout_key = jax.random.split(jax.random.fold_in(self.base_key, epoch))
        n = x.shape[0]
        order = jax.random.permutation(shuffle_key, n) if trainer.shuffle else jnp.arange(n)
        n_full = n // trainer.batch_size
        full_batches = order[: n_full * trainer.batch_size].reshape(n_full, trainer.batch_size)

        def step(state, indices):
            key = jax.random.fold_in(dropout_key, state.step)
            return self._train_step(state, x[indices], y[indices], key, epoch)

        state, sums = jax.lax.scan(step, state, full_batches)
        sums = jnp.sum(sums, axis=0)
        seen = n_full * trainer.batch_size
        if n > seen and not trainer.drop_remainder:  # Keras keeps the last partial batch
            state, last = step(state, order[seen:])
            sums, seen = sums + last, n
        metrics = {
            "train/loss": sums[0] / seen,
            "train/accuracy": sums[1] / seen,
            "lr": learning_rate_of(state.opt_state),
        }
        val = self._evaluate(state.params, state.batch_stats, x_val, y_val)
        metrics.update({f"val/{k}": v for k, v in val.items()})
        return state, metrics

    def _evaluate(self, params: nnx.State, batch_stats: nnx.State, x: jax.Array, y: jax.Array):
        """Mean loss (penalty included) and accuracy in inference mode, in fixed-size chunks."""
        n = x.shape[0]
        chunk = min(self.settings.trainer.eval_batch_size, n)
        n_chunks = -(-n // chunk)
        pad = n_chunks * chunk - n
        xs = jnp.pad(x, ((0, pad), (0, 0))).reshape(n_chunks, chunk, -1)
        ys = jnp.pad(y, (0, pad)).reshape(n_chunks, chunk)
        valid = (jnp.arange(n_chunks * chunk) < n).reshape(n_chunks, chunk)

        def chunk_sums(args):
            xb, yb, mask = args
            model = self._merge(params, batch_stats)  # inside the map: NNX variables are trace-local
            loss, correct = per_example_loss(model(xb, train=False), yb, self.head)
            return jnp.sum(loss * mask), jnp.sum(correct * mask)

        losses, corrects = jax.lax.map(chunk_sums, (xs, ys, valid))
        penalty = self.settings.regularization.penalty(self._merge(params, batch_stats).kernels())
        return {"loss": jnp.sum(losses) / n + penalty, "accuracy": jnp.sum(corrects) / n}

    # ----- host side --------------------------------------------------------------------------------
    def evaluate(self, state: TrainState, x: jax.Array, y: jax.Array) -> Metrics:
        return {k: float(v) for k, v in jax.device_get(self.evaluate_fn(state.params, state.batch_stats, x, y)).items()}

    def model(self, state: TrainState) -> MLP:
        return self._merge(state.params, state.batch_stats)


class _Monitor:
    """Tracks the best epoch of a monitored metric (Keras's ``EarlyStopping`` improvement rule)."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        self.monitor, self.min_delta = monitor, min_delta
        self.mode = monitor_mode(monitor, mode)
        self.best_value = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.wait = 0

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best_value - self.min_delta
        return value > self.best_value + self.min_delta


def _copy(tree):
    """A copy that survives the donation of the original buffers to the next epoch."""
    return jax.tree.map(jnp.copy, tree)


def fit(
    settings: Settings,
    dataset,
    callbacks: Sequence[EpochCallback] = (),
) -> TrainResult:
    """Train ``settings`` on ``dataset`` and evaluate on its test split.

    ``callbacks`` are called with each epoch's record (``epoch``, ``step``, ``lr``, ``train/loss``,
    ``train/accuracy``, ``val/loss``, ``val/accuracy``, ``epoch_time_s``) as soon as it is known.
    """
    trainer_settings = settings.trainer
    model = build_model(settings, dataset.n_features, dataset.n_classes)
    params_count = count_parameters(model)
    trainer = Trainer(settings, model, len(dataset.y_train))
    del model  # its arrays now belong to the (donated) training state

    device_data = jax.device_put(
        (dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val, dataset.x_test, dataset.y_test)
    )
    x_train, y_train, x_val, y_val, x_test, y_test = device_data
    state = trainer.initial_state

    start = time.perf_counter()
    compiled = trainer.epoch_fn.lower(state, x_train, y_train, x_val, y_val, jnp.int32(0)).compile()
    compile_time_s = time.perf_counter() - start

    early = trainer_settings.early_stopping
    monitor = _Monitor(early.monitor, early.mode, early.min_delta)
    plateau = trainer.schedule.plateau
    plateau_state = plateau.initial_state() if plateau is not None else None
    best_weights = None
    history: list[dict[str, Any]] = []
    status, diverged_epoch = "completed", None

    for epoch in range(trainer_settings.epochs):
        start = time.perf_counter()
        state, metrics = compiled(state, x_train, y_train, x_val, y_val, jnp.int32(epoch))
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        record = {
            "epoch": epoch + 1,
            "step": int(state.step),
            "lr": metrics.pop("lr"),
            **metrics,
            "epoch_time_s": time.perf_counter() - start,
        }
        history.append(record)
        for callback in callbacks:
            callback(record)

        if not all(math.isfinite(record[k]) for k in ("train/loss", "val/loss")):
            status, diverged_epoch = "diverged", epoch + 1
            break
        if plateau is not None:
            plateau_state, new_lr = plateau.update(plateau_state, record["lr"], record[plateau.monitor])
            if new_lr != record["lr"]:
                state = state._replace(opt_state=with_hyperparams(state.opt_state, learning_rate=new_lr))

        # Keras EarlyStopping: wait counts epochs since the last improvement.
        monitor.wait += 1
        if monitor.improved(record[monitor.monitor]):
            monitor.best_value, monitor.best_epoch, monitor.wait = record[monitor.monitor], epoch + 1, 0
            if early.enabled and early.restore_best:
                best_weights = _copy((state.params, state.batch_stats))
        elif early.enabled and monitor.wait >= early.patience and epoch > 0:
            status = "stopped_early"
            if best_weights is not None:
                state = state._replace(params=best_weights[0], batch_stats=best_weights[1])
            break

    test = trainer.evaluate(state, x_test, y_test) if status != "diverged" else None
    epoch_times = [r["epoch_time_s"] for r in history[1:]]
    best = history[monitor.best_epoch - 1] if monitor.best_epoch else None
    return TrainResult(
        status=status,
        history=history,
        best_epoch=monitor.best_epoch,
        best=best,
        test=test,
        params=params_count,
        compile_time_s=compile_time_s,
        steady_epoch_time_s=float(np.median(epoch_times)) if epoch_times else None,
        model=trainer.model(state),
        state=state,
        diverged_epoch=diverged_epoch,
    )
