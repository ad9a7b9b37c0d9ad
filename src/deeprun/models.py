"""Models (config group ``model``): the protocol a model option follows, and the Keras-style MLPs.

A ``model`` option is a frozen dataclass registered in :data:`MODELS` (subclassing :class:`ModelSpec`)
whose :meth:`ModelSpec.build` returns a :class:`Network`: a Flax NNX module the trainer drives. What the
trainer needs of it, so the chapter's techniques apply to any network:

* ``__call__(x, *, train, key, dropout)`` → logits: ``x`` the scaled inputs, flattened ``(batch,
  n_features)`` (reshape them yourself, e.g. to an image shape of the spec's); ``train`` selects batch
  statistics (``nnx.BatchNorm`` layers: their statistics are the state's ``batch_stats``) and the
  ``dropout`` layer (None, or the selected :class:`~deeprun.techniques.regularizers.Dropout` /
  ``AlphaDropout``: call ``dropout(h, key)`` where it belongs); training passes a PRNG ``key``.
* its kernel layers (:meth:`Network.kernel_layers`: ``nnx.Linear``/``nnx.Conv``, the output layer last,
  found in the module's graph by default) give the ℓ1/ℓ2 penalties (:meth:`~Network.kernels`), the max-norm
  constraint and the gradient norms (:meth:`~Network.hidden_kernels`) and ``deeprun-prune``'s layers;
* :meth:`Network.layer_activations` (each hidden layer's pre-activation and activation) feeds
  ``trainer.diagnostics``.

The initializer, activation and normalization groups arrive as built options (``initializer.build()``:
a kernel initializer; ``activation.build(features, rngs)``: a callable ``(x, train=, key=)``;
``normalization.layer(features, rngs)``: Keras-default batch norm). The MLP below is one implementation;
a plugin's is another (``tests/plugins/``).

The MLP's layer order follows the book's Keras models: an optional input BN layer; per hidden layer
``[dropout] → Dense → [BN] → activation → [BN]`` (BN before or after the activation, per
``normalization``); then ``[dropout] → Dense(outputs)``. The output layer keeps Keras's default
glorot_uniform initializer unless ``model.output_initializer`` says otherwise. Softmax and sigmoid
heads return *logits*; the loss applies the link function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from deeprun.registry import ConfigError, Registry, require, require_positive
from deeprun.techniques.activations import ActivationSpec
from deeprun.techniques.initializers import INITIALIZERS, Initializer
from deeprun.techniques.normalization import Normalization
from deeprun.techniques.regularizers import AlphaDropout, Dropout

MODELS: Registry[ModelSpec] = Registry("model")

Head = Literal["softmax", "sigmoid"]


@dataclass(frozen=True)
class ModelSpec:
    """Base: the hidden layer sizes plus the output layer's settings."""

    output_initializer: str = "glorot_uniform"
    head: Head = "softmax"
    # Transfer learning: start from an earlier run's hidden layers (the output layer is always new).
    init_from: str | None = None
    reuse_layers: int | None = None  # the first N hidden layers of the source; null: all of them

    def __post_init__(self) -> None:
        if self.output_initializer not in INITIALIZERS:
            raise ConfigError(
                f"model.output_initializer: unknown option {self.output_initializer!r}; "
                f"valid options: {', '.join(INITIALIZERS.names())}"
            )
        # Whether init_from is a finished run is checked when a run starts (runs.loading.load_donor): a
        # finished transfer run's saved config stays valid after its donor is moved or deleted.
        if self.reuse_layers is not None:
            require_positive("model.reuse_layers", self.reuse_layers)
            require(self.init_from is not None, "model.reuse_layers", "needs model.init_from", self.reuse_layers)

    def build(
        self,
        n_features: int,
        n_classes: int,
        initializer: Initializer,
        activation: ActivationSpec,
        normalization: Normalization,
        rngs: nnx.Rngs,
        dtype: jnp.dtype | None = None,
    ) -> Network:
        """The network for inputs of ``n_features`` and ``n_classes`` classes; ``dtype`` is the compute
        dtype of its layers (None: float32, the parameters' own)."""
        raise NotImplementedError(f"{type(self).__name__}.build")

    def hidden_layers(self) -> tuple[int, ...]:
        """The widths of the hidden Dense layers (a first memory estimate; () when not a Dense stack)."""
        return ()

    def output_units(self, n_classes: int) -> int:
        if self.head == "sigmoid":
            require(n_classes == 2, "model.head", "sigmoid needs a 2-class dataset", n_classes)
            return 1
        return n_classes


class DenseStackSpec(ModelSpec):
    """The MLPs: :class:`MLP` over :meth:`hidden_layers`."""

    def build(self, n_features, n_classes, initializer, activation, normalization, rngs, dtype=None) -> Network:
        return MLP(self, n_features, n_classes, initializer, activation, normalization, rngs=rngs, dtype=dtype)


@MODELS.register("mlp")
@dataclass(frozen=True)
class MLPSpec(DenseStackSpec):
    hidden: tuple[int, ...] = (300, 100)

    def __post_init__(self) -> None:
        super().__post_init__()
        for i, units in enumerate(self.hidden):
            require_positive(f"model.hidden[{i}]", units)

    def hidden_layers(self) -> tuple[int, ...]:
        return self.hidden


@MODELS.register("deep_mlp")
@dataclass(frozen=True)
class DeepMLPSpec(DenseStackSpec):
    """``depth`` hidden layers of ``width`` units (100×100 in the SELU-vs-ReLU experiment); the first of
    ``first_width`` units when set (the 2nd edition's net: Dense(300), then 99 × Dense(100))."""

    depth: int = 100
    width: int = 100
    first_width: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive("model.depth", self.depth)
        require_positive("model.width", self.width)
        if self.first_width is not None:
            require_positive("model.first_width", self.first_width)

    def hidden_layers(self) -> tuple[int, ...]:
        return (self.width if self.first_width is None else self.first_width,) + (self.width,) * (self.depth - 1)


class Network(nnx.Module):
    """The base of a model option's module (see the module docstring). Subclasses define ``__call__``
    and, for diagnostics, :meth:`layer_activations`; the output layer is the attribute ``output``."""

    head: Head = "softmax"

    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool = False,
        key: jax.Array | None = None,
        dropout: Dropout | AlphaDropout | None = None,
    ) -> jax.Array:
        raise NotImplementedError(f"{type(self).__name__}.__call__")

    def kernel_layers(self) -> list[tuple[str, nnx.Linear | nnx.Conv]]:
        """The layers with a kernel by name, the output layer (attribute ``output``) last."""
        layers = [
            ("/".join(map(str, path)), node)
            for path, node in nnx.iter_graph(self)
            if isinstance(node, (nnx.Linear, nnx.Conv))
        ]
        return sorted(layers, key=lambda layer: layer[0] == "output")

    def kernels(self) -> list[jax.Array]:
        """Every kernel (hidden and output): what ℓ1/ℓ2 penalize."""
        return [layer.kernel[...] for _, layer in self.kernel_layers()]

    def hidden_kernels(self) -> list[jax.Array]:
        """The kernels before the output layer, input side first (max-norm, gradient norms)."""
        return self.kernels()[:-1]

    def constrain(self, max_norm) -> None:
        """The max-norm constraint on the hidden kernels, in place (after an optimizer update): per output
        unit, over every other axis (a Dense kernel's inputs; a convolution's window and channels)."""
        for _, layer in self.kernel_layers()[:-1]:
            kernel = layer.kernel[...]
            layer.kernel[...] = max_norm(kernel.reshape(-1, kernel.shape[-1])).reshape(kernel.shape)

    def layer_activations(self, x: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
        """Inference mode: each hidden layer's (pre-activation, activation), for ``trainer.diagnostics``."""
        raise NotImplementedError(f"{type(self).__name__}.layer_activations (needed by trainer.diagnostics)")


class DenseBlock(nnx.Module):
    """One hidden layer: Dense, its activation and, where selected, batch norm before or after it.

    ``dtype`` is the compute dtype of the Dense layer (None: float32, the parameters' own); batch norm
    always computes in float32 (Keras's mixed precision) and hands on its input's dtype."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        initializer: Initializer,
        activation: ActivationSpec,
        normalization: Normalization,
        rngs: nnx.Rngs,
        dtype: jnp.dtype | None = None,
    ):
        self.placement = normalization.placement
        self.dense = nnx.Linear(
            in_features,
            out_features,
            use_bias=self.placement != "before",  # BN's β replaces the bias
            kernel_init=initializer.build(),
            dtype=dtype,
            rngs=rngs,
        )
        self.norm = None if self.placement == "none" else normalization.layer(out_features, rngs)
        self.activation = activation.build(out_features, rngs)

    def __call__(self, x: jax.Array, *, train: bool, key: jax.Array | None) -> jax.Array:
        return self.stages(x, train=train, key=key)[2]

    def stages(self, x: jax.Array, *, train: bool, key: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(pre-activation, activation, output): the activation function's input (the Dense output, batch
        normalized when BN comes before it), its output, and the block's output (BN'd when BN comes after)."""
        pre = self.dense(x)
        if self.norm is not None and self.placement == "before":
            pre = _batch_norm(self.norm, pre, train)
        act = self.activation(pre, train=train, key=key)
        out = _batch_norm(self.norm, act, train) if self.norm is not None and self.placement == "after" else act
        return pre, act, out


def _batch_norm(norm: nnx.BatchNorm, x: jax.Array, train: bool) -> jax.Array:
    """Batch norm computed in float32 whatever the compute dtype (no-op casts in float32)."""
    return norm(x.astype(jnp.float32), use_running_average=not train).astype(x.dtype)


class MLP(Network):
    """A multilayer perceptron on flattened inputs; ``__call__`` returns logits (in the compute dtype).

    ``dtype`` is the compute dtype of the Dense layers (mixed precision, ``deeprun.techniques.precision``); None
    computes in float32, the parameters' dtype."""

    def __init__(
        self,
        spec: ModelSpec,
        n_features: int,
        n_classes: int,
        initializer: Initializer,
        activation: ActivationSpec,
        normalization: Normalization,
        rngs: nnx.Rngs,
        dtype: jnp.dtype | None = None,
    ):
        self.head = spec.head
        self.input_norm = normalization.layer(n_features, rngs) if normalization.normalizes_input else None
        widths = (n_features, *spec.hidden_layers())
        self.blocks = nnx.List(
            DenseBlock(fan_in, fan_out, initializer, activation, normalization, rngs, dtype)
            for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.output = nnx.Linear(
            widths[-1],
            spec.output_units(n_classes),
            kernel_init=INITIALIZERS.default(spec.output_initializer).build(),
            dtype=dtype,
            rngs=rngs,
        )

    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool = False,
        key: jax.Array | None = None,
        dropout: Dropout | AlphaDropout | None = None,
    ) -> jax.Array:
        """Forward pass. ``train`` selects batch statistics, random activation slopes and ``dropout``
        (whose ``placement`` says where it acts); training needs a PRNG ``key``. The dropout layer is
        an argument rather than part of the model so its rate can be a traced number (fused sweeps)."""
        if not train:
            return self.output(self.hidden(x, dropout=dropout))
        if key is None:
            raise ValueError("training mode needs a PRNG key")
        hidden_key, output_key = jax.random.split(key)
        x = self.hidden(x, train=train, key=hidden_key, dropout=dropout)
        if dropout is not None:
            x = dropout(x, output_key)
        return self.output(x)

    def hidden(
        self,
        x: jax.Array,
        *,
        train: bool = False,
        key: jax.Array | None = None,
        dropout: Dropout | AlphaDropout | None = None,
    ) -> jax.Array:
        """The last hidden layer's output (the output layer's input, before its dropout)."""
        keys: Any = [None] * (2 * len(self.blocks))
        if train:
            if key is None:
                raise ValueError("training mode needs a PRNG key")
            keys = jax.random.split(key, 2 * len(self.blocks))
        if self.input_norm is not None:
            x = _batch_norm(self.input_norm, x, train)
        for i, block in enumerate(self.blocks):
            if train and dropout is not None and dropout.placement == "all":
                x = dropout(x, keys[2 * i])
            x = block(x, train=train, key=keys[2 * i + 1])
        return x

    def layer_activations(self, x: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
        """Inference mode: each hidden layer's (pre-activation, activation), as :meth:`DenseBlock.stages`
        defines them (training diagnostics)."""
        if self.input_norm is not None:
            x = _batch_norm(self.input_norm, x, train=False)
        pairs = []
        for block in self.blocks:
            pre, act, x = block.stages(x, train=False, key=None)
            pairs.append((pre, act))
        return pairs

    def kernel_layers(self) -> list[tuple[str, nnx.Linear | nnx.Conv]]:
        """``hidden_1`` … ``hidden_n`` and ``output``."""
        return [
            *((f"hidden_{i}", block.dense) for i, block in enumerate(self.blocks, start=1)),
            ("output", self.output),
        ]


def predict_probabilities(logits: jax.Array, head: Head) -> jax.Array:
    """Class probabilities from logits: softmax, or [1 − p, p] for a sigmoid head."""
    if head == "sigmoid":
        p = jax.nn.sigmoid(logits[..., 0])
        return jnp.stack([1 - p, p], axis=-1)
    return jax.nn.softmax(logits, axis=-1)


def count_parameters(model: nnx.Module) -> dict[str, int]:
    """Keras's summary counts: trainable (``Param``) and non-trainable (BN moving statistics)."""

    def size(state) -> int:
        return int(sum(leaf.size for leaf in jax.tree.leaves(state)))

    trainable = size(nnx.state(model, nnx.Param))
    non_trainable = size(nnx.state(model, nnx.BatchStat))
    return {"total": trainable + non_trainable, "trainable": trainable, "non_trainable": non_trainable}
