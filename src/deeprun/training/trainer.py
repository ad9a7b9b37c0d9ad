"""Training: one compiled program per epoch, Keras's metric conventions, no Hydra.

An epoch is a single call of a ``jax.jit``-compiled function: shuffle with ``jax.random.permutation``,
``lax.scan`` over the full batches (plus one step on the remainder batch, kept as Keras does), then the
validation pass in inference mode. The data stays on the device, the training state is donated, and the
host only reads the epoch's metrics afterwards (for early stopping, the plateau rule and progress).

Reported numbers follow Keras's ``fit``: train loss/accuracy are running means over the epoch's batches
in training mode, weighted by batch size, penalty included; validation is computed once per epoch in
inference mode, penalty included; test metrics once at the end.

Fused sweeps: runs that share every shape-determining setting and differ only in numbers (seed, learning
rate, momentum, schedule constants, penalty factors, dropout rate) are trained together by
:func:`fit_many`: their states and :class:`Member` numbers are stacked along a leading axis, and one
compiled program trains each member's epoch in turn (:meth:`Trainer._member_loop`; a lone run is a loop
of one). Every member runs the same loop body, so a run's numbers are bitwise the same alone, fused with
any others, resumed, in any process. ``batched=True`` runs the members under ``jax.vmap`` instead:
faster, but the batched kernels' reduction order depends on the member count, and so (to float
rounding, which training amplifies) do the numbers. Each run still gets its own history, early stopping
and plateau rule.

``trainer.precision`` sets the compute dtype (``deeprun.techniques.precision``: float32 parameters and optimizer
state, float16's loss scale in the state). ``trainer.diagnostics`` adds per-layer statistics to each epoch
(:data:`DIAGNOSTICS`), computed inside the same compiled program: per step the gradient norm of each
hidden kernel (an output of the ``lax.scan``), at the epoch's end the activations on a fixed validation
batch. Both are static settings: the program without them is the one it always was.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from deeprun.data.base import PixelScaling
from deeprun.models import Network
from deeprun.settings import Settings
from deeprun.techniques.optimizers import learning_rate_of, with_hyperparams
from deeprun.techniques.precision import LossScale, adjust_loss_scale, all_finite, compute_dtype, unscale, where_finite
from deeprun.techniques.regularizers import Regularization
from deeprun.training.diagnostics import finite_mean, kernel_norms, layer_statistics
from deeprun.training.state import DeviceData, Member, Metrics, TrainState
from deeprun.training.transfer import Donor, describe_layers, layer_of, reused_layer_names, transfer_layers

#: How often an epoch with a host progress callback reports (``Trainer(steps_done=...)``).
PROGRESS_REPORTS = 5


def initial_variables(
    settings: Settings, n_features: int, n_classes: int, tx: optax.GradientTransformation, key: jax.Array
) -> tuple[nnx.State, nnx.State, optax.OptState]:
    """A fresh model's parameters, batch statistics and ``tx``'s optimizer state."""
    model = build_model(settings, n_features, n_classes, key=key)
    _, params, batch_stats = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
    return params, batch_stats, tx.init(params)


def state_structure(settings: Settings, n_features: int, n_classes: int) -> TrainState:
    """The shapes and dtypes of a run's :class:`TrainState` (``jax.ShapeDtypeStruct`` leaves), computed
    without running anything: the structure a checkpoint restores into."""
    tx = with_default_hyperparams(settings.optimizer).build()
    params, batch_stats, opt_state = jax.eval_shape(
        functools.partial(initial_variables, settings, n_features, n_classes, tx), jax.random.key(0)
    )
    loss_scale = LossScale.initial(settings.trainer.loss_scale) if settings.trainer.precision == "float16" else None
    step = typing.cast(jax.Array, jax.ShapeDtypeStruct((), jnp.int32))
    return TrainState(params, batch_stats, opt_state, step, loss_scale)


def configure_compilation_cache(enabled: bool) -> None:
    """JAX's persistent compilation cache under deeprun's cache dir: an identical second run compiles
    nothing (``trainer.compilation_cache=false`` turns it off)."""
    from deeprun.data.storage import cache_dir

    if enabled:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    else:
        jax.config.update("jax_enable_compilation_cache", False)


def training_devices(count: int | str) -> list[jax.Device]:
    """The devices a run trains on: the first ``count`` visible ones, or all of them (``"all"``).
    ConfigError if fewer are visible (checked before anything compiles)."""
    from deeprun.registry import ConfigError

    visible = jax.devices()
    wanted = len(visible) if count == "all" else int(count)
    if wanted > len(visible):
        raise ConfigError(
            f"trainer.devices: {wanted} requested, but {len(visible)} {visible[0].platform} device(s) are visible"
        )
    return visible[:wanted]


def build_model(
    settings: Settings, n_features: int, n_classes: int, dtype: jnp.dtype | None = None, key: jax.Array | None = None
) -> Network:
    """The model of ``settings``, initialised from ``key`` (None: ``trainer.seed``'s, the same key as
    ``jax.random.key(seed)``); ``dtype``: its compute dtype (None: float32; training uses
    ``trainer.precision``'s, a loaded run's inference model float32)."""
    return settings.model.build(
        n_features,
        n_classes,
        settings.initializer,
        settings.activation,
        settings.normalization,
        rngs=nnx.Rngs(params=settings.trainer.seed if key is None else key),
        dtype=dtype,
    )


def per_example_loss(logits: jax.Array, labels: jax.Array, head: str) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy and correctness per example: sparse categorical for softmax heads, binary for
    a one-unit sigmoid head (computed from logits, which is Keras's formula without its clipping).
    Always in float32: low-precision logits are cast up first (a no-op in float32)."""
    logits = logits.astype(jnp.float32)
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
    """The compiled epoch and evaluation programs for one model structure and dataset shape.

    ``members`` > 1: the programs take stacked states (a fused sweep), trained member by member, or under
    ``jax.vmap`` when ``batched``.
    """

    def __init__(
        self,
        settings: Settings,
        n_train: int,
        n_features: int,
        n_classes: int,
        members: int = 1,
        batched: bool = False,
        steps_done: Callable[[int], None] | None = None,
    ):
        """``steps_done``: called on the host with the count of training steps done since its last call
        (of every run: ``members`` × :attr:`progress_every` under ``batched``), every :attr:`progress_every`
        steps (None: the program has no host callback)."""
        self.settings = settings
        self.steps_done = steps_done
        self.n_features, self.n_classes = n_features, n_classes
        self.members = members
        trainer = settings.trainer
        # Abstract: only the structure is needed here, each run's parameters come from `init`.
        dtype = compute_dtype(trainer.precision)
        self.graphdef = nnx.graphdef(nnx.eval_shape(lambda: build_model(settings, n_features, n_classes, dtype)))
        self.head = settings.model.head
        # Built with the option's default hyperparameters: the run's own live in the optimizer state
        # (`with_hyperparams_of`), so runs differing only in them share the compiled programs.
        self.tx = with_default_hyperparams(settings.optimizer).build()
        devices = training_devices(trainer.devices)
        # Data parallelism: batches are split along a "data" mesh axis, everything else is replicated;
        # XLA's partitioner inserts the gradient all-reduce.
        self.mesh = (
            jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)
            if len(devices) > 1
            else None
        )
        self.steps_per_epoch = steps_per_epoch(n_train, trainer.batch_size, trainer.drop_remainder)
        self.progress_every = max(1, math.ceil(n_train // trainer.batch_size / PROGRESS_REPORTS))
        evaluate_fn = self._evaluate
        self.batched = members > 1 and batched
        if self.batched:
            epoch_fn = jax.vmap(self._train_epoch, in_axes=(0, 0, None, None, None))
        else:
            epoch_fn = functools.partial(self._member_loop, members)
        self.epoch_fn = jax.jit(epoch_fn, donate_argnums=0)
        self.evaluate_fn = jax.jit(evaluate_fn)
        self._init_programs: dict[str, Any] = {}

    def init(self, settings: Settings, donor: Donor | None = None) -> tuple[TrainState, Member]:
        """One run's initial state and numbers; its structure must match the trainer's settings.
        ``donor``: the trained variables of ``model.init_from`` (required when it is set)."""
        # One compiled program (served by the persistent cache) instead of dozens of eager ops; the key is
        # an argument, so runs that differ only in their seed share it.
        params, batch_stats, opt_state = self.init_program(settings)(jax.random.key(settings.trainer.seed))
        opt_state = with_hyperparams_of(opt_state, settings.optimizer)
        if settings.model.init_from is not None:
            if donor is None:
                raise ValueError("model.init_from is set: pass the source run's variables as donor")
            params, batch_stats = transfer_layers(settings.model, params, batch_stats, donor, describe_layers(settings))
        schedule = settings.schedule.resolve(
            settings.optimizer.learning_rate, self.steps_per_epoch, settings.trainer.epochs
        )
        # float16 (5 exponent bits) needs loss scaling; bfloat16 has float32's range.
        loss_scale = LossScale.initial(settings.trainer.loss_scale) if settings.trainer.precision == "float16" else None
        state = TrainState(params, batch_stats, opt_state, jnp.zeros((), jnp.int32), loss_scale)
        member = Member(jax.random.key(settings.trainer.seed), schedule, settings.regularization)
        return state, member

    def init_program(self, settings: Settings):
        """``key ↦ (params, batch_stats, opt_state)`` of ``settings``' model, jitted. The optimizer state
        holds the option's default hyperparameters, which ``init`` replaces with the run's. One program
        per initializer: fused members differ in nothing else that init reads, so it is traced and
        compiled once for all of them (measured: 2.2 s per member otherwise, without the persistent cache)."""
        key = repr(settings.initializer)
        if key not in self._init_programs:
            init = functools.partial(initial_variables, settings, self.n_features, self.n_classes, self.tx)
            self._init_programs[key] = jax.jit(init)
        return self._init_programs[key]

    def fresh_optimizer_state(self, state: TrainState) -> TrainState:
        """``state`` with the optimizer's statistics (moments, accumulators, step count) started again
        and its hyperparameters kept: what Keras's new optimizer at a phase boundary starts from."""

        def init(params):
            return self.tx.init(params).inner_state

        opt_state = state.opt_state
        init = init if self.members == 1 else jax.vmap(init)
        fresh = opt_state._replace(count=jnp.zeros_like(opt_state.count), inner_state=jax.jit(init)(state.params))
        return state._replace(opt_state=self.place(fresh))

    def place(self, tree: Any) -> Any:
        """Put ``tree`` on the training device(s): replicated over the mesh when there is one."""
        if self.mesh is None:
            return jax.device_put(tree)
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

    # ----- pure pieces, traced once -------------------------------------------------------------
    def _split_batch(self, batch: jax.Array) -> jax.Array:
        """Shard a batch's leading axis over the devices (uneven sizes are padded by XLA)."""
        if self.mesh is None:
            return batch
        return jax.lax.with_sharding_constraint(batch, NamedSharding(self.mesh, PartitionSpec("data")))

    def _merge(self, params: nnx.State, batch_stats: nnx.State) -> Network:
        # copy=True: fresh Variables in the current trace, so BN can update them under jax.grad/scan.
        return nnx.merge(self.graphdef, params, batch_stats, copy=True)

    def _scheduled_opt_state(self, state: TrainState, member: Member, epoch: jax.Array) -> optax.OptState:
        """Write this step's learning rate (and momentum, for cycling schedules) into the optimizer state."""
        values = {}
        if member.schedule.sets_learning_rate:
            values["learning_rate"] = member.schedule.learning_rate(state.step, epoch)
        momentum = member.schedule.momentum(state.step, epoch)
        if momentum is not None:
            values[str(self.settings.optimizer.momentum_hyperparam)] = momentum
        return with_hyperparams(state.opt_state, **values) if values else state.opt_state

    def _train_step(
        self,
        state: TrainState,
        member: Member,
        x: jax.Array,
        y: jax.Array,
        key: jax.Array,
        epoch: jax.Array,
        trainable: nnx.State | None,
    ):
        """One optimizer step. Returns the new state and the step's outputs: ``sums`` = [loss·batch,
        correct, batch] and, with ``trainer.diagnostics``, ``grad_norms`` (‖∂L/∂W_l‖ per hidden kernel)."""
        regularization, loss_scale = member.regularization, state.loss_scale

        def loss_fn(params, batch_stats):  # batch_stats is an argument: BN updates it in this trace
            model = self._merge(params, batch_stats)
            logits = model(x, train=True, key=key, dropout=regularization.dropout)
            loss, correct = per_example_loss(logits, y, self.head)
            total = jnp.mean(loss) + regularization.penalty(model.kernels())
            if loss_scale is not None:  # float16: scaled so that small gradients survive the backward pass
                total = total * loss_scale.scale
            _, _, batch_stats = nnx.split(model, nnx.Param, ...)
            return total, (jnp.sum(correct), batch_stats)

        (loss, (correct, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats
        )
        if loss_scale is not None:  # exact: the scale is a power of two
            loss, grads = loss / loss_scale.scale, unscale(grads, loss_scale)
        # Before the freezing mask: the gradient the layer receives, trained or not.
        grad_norms = (
            kernel_norms(self._merge(grads, batch_stats).hidden_kernels())
            if self.settings.trainer.diagnostics
            else None
        )
        opt_state = self._scheduled_opt_state(state, member, epoch)
        if trainable is not None:  # frozen layers: no gradient, no update (not even weight decay)
            grads = jax.tree.map(jnp.multiply, grads, trainable)
        updates, new_opt_state = self.tx.update(grads, opt_state, state.params)
        if trainable is not None:
            updates = jax.tree.map(jnp.multiply, updates, trainable)
        params = optax.apply_updates(state.params, updates)
        if regularization.max_norm is not None:
            model = self._merge(params, batch_stats)
            model.constrain(regularization.max_norm)
            params = nnx.state(model, nnx.Param)
        if loss_scale is not None:  # a non-finite gradient skips the whole step (BN statistics included)
            finite = all_finite(grads)
            params, batch_stats, new_opt_state = where_finite(
                finite, (params, batch_stats, new_opt_state), (state.params, state.batch_stats, opt_state)
            )
            loss_scale = adjust_loss_scale(loss_scale, finite, self.settings.trainer.loss_scale.growth_steps)
        new_state = TrainState(params, batch_stats, new_opt_state, state.step + 1, loss_scale)
        outputs = {"sums": jnp.stack([loss * x.shape[0], correct, jnp.float32(x.shape[0])])}
        if grad_norms is not None:
            outputs["grad_norms"] = grad_norms
        return new_state, outputs

    def _member_loop(
        self,
        members: int,
        state: TrainState,
        member: Member,
        data: DeviceData,
        epoch: jax.Array,
        trainable: nnx.State | None,
    ):
        """:meth:`_train_epoch` of each of ``members`` stacked runs in turn (one: an unstacked state), in a
        loop whose trip count XLA cannot see (so never unrolls nor drops): every member runs the very same
        compiled body, whatever the member count."""
        stacked = (state, member) if members > 1 else jax.tree.map(lambda x: x[None], (state, member))
        first = jax.tree.map(lambda x: x[0], stacked)
        _, shapes = jax.eval_shape(lambda s, m: self._train_epoch(s, m, data, epoch, trainable), *first)
        outputs = jax.tree.map(lambda o: jnp.zeros((max(members, 1), *o.shape), o.dtype), shapes)

        def body(index, carry):
            states, outs = carry
            take = functools.partial(jax.lax.dynamic_index_in_dim, index=index, keepdims=False)
            new_state, out = self._train_epoch(
                jax.tree.map(take, states), jax.tree.map(take, stacked[1]), data, epoch, trainable
            )
            put = functools.partial(_put_at, index=index)
            return jax.tree.map(put, states, new_state), jax.tree.map(put, outs, out)

        count = jnp.minimum(jnp.int32(max(members, 1)), epoch + max(members, 1))  # the count, not a constant
        states, outs = jax.lax.fori_loop(0, count, body, (stacked[0], outputs))
        return (states, outs) if members > 1 else jax.tree.map(lambda x: x[0], (states, outs))

    def _train_epoch(
        self, state: TrainState, member: Member, data: DeviceData, epoch: jax.Array, trainable: nnx.State | None
    ):
        """One epoch; ``trainable`` (1/0 per parameter tensor, or None: all) freezes layers as data, so
        a phase change does not recompile."""
        trainer = self.settings.trainer
        shuffle_key, dropout_key = jax.random.split(jax.random.fold_in(member.key, epoch))
        n = data.y_train.shape[0]
        order = jax.random.permutation(shuffle_key, n) if trainer.shuffle else jnp.arange(n)
        n_full = n // trainer.batch_size
        full_batches = order[: n_full * trainer.batch_size].reshape(n_full, trainer.batch_size)

        def step(state, indices):
            key = jax.random.fold_in(dropout_key, state.step)
            x = self._split_batch(data.scaling.apply(data.pixels_train[indices]))
            y = self._split_batch(data.y_train[indices])
            return self._train_step(state, member, x, y, key, epoch, trainable)

        if self.steps_done is None:
            state, outputs = jax.lax.scan(step, state, full_batches)
        else:
            state, outputs = self._reporting_scan(step, state, full_batches)
        seen = n_full * trainer.batch_size
        if n > seen and not trainer.drop_remainder:  # Keras keeps the last partial batch
            state, last = step(state, order[seen:])
            outputs = jax.tree.map(lambda steps, one: jnp.concatenate([steps, one[None]]), outputs, last)
            seen = n
        sums = outputs["sums"]
        metrics = {
            "batch/loss": sums[:, 0] / sums[:, 2],  # per step, for the LR finder
            "train/loss": jnp.sum(sums[:, 0]) / seen,
            "train/accuracy": jnp.sum(sums[:, 1]) / seen,
            "lr": learning_rate_of(state.opt_state),
        }
        val = self._evaluate(
            state.params, state.batch_stats, member.regularization, data.scaling, data.pixels_val, data.y_val
        )
        metrics.update({f"val/{k}": v for k, v in val.items()})
        if trainer.diagnostics:
            metrics["diagnostics"] = self._diagnostics(state, data, outputs["grad_norms"])
        return state, metrics

    def _reporting_scan(self, step: Callable[[TrainState, jax.Array], Any], state: TrainState, batches: jax.Array):
        """``lax.scan(step, state, batches)`` as a scan over chunks of :attr:`progress_every` steps, each
        chunk a scan of ``step`` that then tells the host (no branch in the steps' loop: the steps run
        as they do without progress); the steps after the last whole chunk in a scan of their own."""
        every, report = self.progress_every, self.steps_done
        assert report is not None
        count = every * self.members if self.batched else every  # under vmap one call stands for every member
        chunks = batches.shape[0] // every

        def chunk(state: TrainState, chunk_batches: jax.Array):
            state, outputs = jax.lax.scan(step, state, chunk_batches)
            jax.debug.callback(lambda: report(count))
            return state, outputs

        whole = batches[: chunks * every].reshape(chunks, every, *batches.shape[1:])
        state, outputs = jax.lax.scan(chunk, state, whole)
        outputs = jax.tree.map(lambda leaf: leaf.reshape(chunks * every, *leaf.shape[2:]), outputs)
        if batches.shape[0] > chunks * every:
            state, rest = jax.lax.scan(step, state, batches[chunks * every :])
            outputs = jax.tree.map(lambda done, more: jnp.concatenate([done, more]), outputs, rest)
        return state, outputs

    def _diagnostics(self, state: TrainState, data: DeviceData, grad_norms: jax.Array) -> jax.Array:
        """(hidden layers, 5): each layer's :data:`DIAGNOSTICS` at the end of the epoch. The activation
        statistics are taken in inference mode on a fixed batch (the first ``trainer.diagnostics_batch``
        validation examples); the gradient norm is the mean over the epoch's steps of ‖∂L/∂W_l‖_F on the
        training batches, which is the gradient the layer trained with."""
        x = data.scaling.apply(data.pixels_val[: self.settings.trainer.diagnostics_batch])
        model = self._merge(state.params, state.batch_stats)
        stats = jnp.stack(
            [
                jnp.concatenate([layer_statistics(pre)[:2], layer_statistics(act)[:2]])
                for pre, act in model.layer_activations(x)
            ]
        )
        return jnp.concatenate([stats, finite_mean(grad_norms)[:, None]], axis=1)

    def _evaluate(
        self,
        params: nnx.State,
        batch_stats: nnx.State,
        regularization: Regularization,
        scaling: PixelScaling,
        pixels: jax.Array,
        y: jax.Array,
    ):
        """Mean loss (penalty included) and accuracy in inference mode, in fixed-size chunks."""
        n = pixels.shape[0]
        chunk = min(self.settings.trainer.eval_batch_size, n)
        n_chunks = -(-n // chunk)
        pad = n_chunks * chunk - n
        xs = jnp.pad(pixels, ((0, pad), (0, 0))).reshape(n_chunks, chunk, -1)
        ys = jnp.pad(y, (0, pad)).reshape(n_chunks, chunk)
        valid = (jnp.arange(n_chunks * chunk) < n).reshape(n_chunks, chunk)

        def chunk_sums(args):
            xb, yb, mask = (self._split_batch(a) for a in args)
            model = self._merge(params, batch_stats)  # inside the map: NNX variables are trace-local
            loss, correct = per_example_loss(model(scaling.apply(xb), train=False), yb, self.head)
            return jnp.sum(loss * mask), jnp.sum(correct * mask)

        losses, corrects = jax.lax.map(chunk_sums, (xs, ys, valid))
        penalty = regularization.penalty(self._merge(params, batch_stats).kernels())
        return {"loss": jnp.sum(losses) / n + penalty, "accuracy": jnp.sum(corrects) / n}

    # ----- host side --------------------------------------------------------------------------------
    def trainable_mask(self, phase) -> nnx.State:
        """1.0 for each trained parameter tensor, 0.0 for the layers a ``freeze: reused`` phase fixes."""
        abstract = nnx.eval_shape(lambda: build_model(self.settings, self.n_features, self.n_classes))
        blocks = len(getattr(abstract, "blocks", ()))  # the MLPs reuse hidden blocks (transfer learning)
        frozen = reused_layer_names(self.settings.model, blocks) if phase.freeze == "reused" else set()
        params = nnx.state(abstract, nnx.Param)
        return jax.tree_util.tree_map_with_path(lambda path, _: jnp.float32(layer_of(path) not in frozen), params)

    def evaluate(
        self, state: TrainState, regularization: Regularization, scaling: PixelScaling, pixels: jax.Array, y: jax.Array
    ) -> Metrics:
        """Loss and accuracy of one (unstacked) state on uint8 ``pixels`` and labels ``y``."""
        metrics = self.evaluate_fn(state.params, state.batch_stats, regularization, scaling, pixels, y)
        return {k: float(v) for k, v in jax.device_get(metrics).items()}

    def model(self, state: TrainState) -> Network:
        return nnx.merge(self.graphdef, state.params, state.batch_stats, copy=True)


def _put_at(stacked: jax.Array, value: jax.Array, index: jax.Array) -> jax.Array:
    return jax.lax.dynamic_update_index_in_dim(stacked, value, index, 0)


def with_default_hyperparams(optimizer):
    """``optimizer`` with its injected hyperparameters (learning rate, momentum) at the option's defaults."""
    defaults = type(optimizer)()
    return dataclasses.replace(optimizer, **{name: getattr(defaults, name) for name in optimizer.hyperparam_names()})


def with_hyperparams_of(opt_state: optax.OptState, optimizer) -> optax.OptState:
    """The trainer's optimizer is built from the first run's spec; set this run's own injected values."""
    return with_hyperparams(opt_state, **{name: getattr(optimizer, name) for name in optimizer.hyperparam_names()})
