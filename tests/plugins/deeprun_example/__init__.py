"""An example deeprun plugin, as a user's package would be: an activation, a dataset and a model.

Registered with deeprun's own decorators; ``conf/`` beside this file holds their YAMLs. The tests
install it through the ``deeprun.plugins`` entry point group and also load it with ``plugins=[...]``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from deeprun.data.base import DATASETS, make_dataset
from deeprun.models import MODELS, ModelSpec, Network
from deeprun.registry import require_positive
from deeprun.techniques.activations import ACTIVATIONS, ActivationSpec
from deeprun.techniques.initializers import INITIALIZERS


@ACTIVATIONS.register("scaled_tanh")
@dataclasses.dataclass(frozen=True)
class ScaledTanh(ActivationSpec):
    """LeCun's 1.7159·tanh(2z/3)."""

    scale: float = 1.7159

    def __post_init__(self) -> None:
        require_positive("activation.scaled_tanh.scale", self.scale)

    def fn(self, x: jax.Array) -> jax.Array:
        return self.scale * jnp.tanh(2.0 * x / 3.0)


@DATASETS.register("stripes")
@dataclasses.dataclass(frozen=True)
class Stripes:
    """``size``×``size`` grey images of horizontal, vertical or diagonal stripes (3 classes), with noise."""

    n_train: int = 240
    n_test: int = 60
    size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for field in ("n_train", "n_test", "size"):
            require_positive(f"data.{field}", getattr(self, field))

    def load(self):
        rng = np.random.default_rng(self.seed)
        rows, cols = np.indices((self.size, self.size))
        patterns = np.stack([rows % 2, cols % 2, (rows + cols) % 2]).astype(np.float64)

        def sample(count: int):
            labels = rng.permutation(np.arange(count) % 3)
            values = 0.7 * patterns[labels] + 0.3 * rng.uniform(size=(count, self.size, self.size))
            return np.rint(values * 255).astype(np.uint8), labels

        return make_dataset(
            "stripes",
            sample(self.n_train),
            sample(self.n_test),
            val_size=self.n_train // 5,
            validation="last",
            scaling="unit",
            class_names=["horizontal", "vertical", "diagonal"],
            where="data.n_train",
        )


@MODELS.register("small_cnn")
@dataclasses.dataclass(frozen=True)
class SmallCNNSpec(ModelSpec):
    """Conv(3×3) blocks over ``image_size``×``image_size``×1 inputs, then the output Dense layer."""

    image_size: int = 8
    channels: tuple[int, ...] = (8, 16)

    def build(self, n_features, n_classes, initializer, activation, normalization, rngs, dtype=None):
        return SmallCNN(self, n_classes, initializer, activation, normalization, rngs, dtype)


class SmallCNN(Network):
    """``[Conv → (BN) → activation]`` per entry of ``channels`` (stride 2 after the first), global average
    pooling, ``[dropout] → Dense``; batch norm where ``normalization`` places it."""

    def __init__(self, spec: SmallCNNSpec, n_classes, initializer, activation, normalization, rngs, dtype):
        self.head, self.size = spec.head, spec.image_size
        widths = (1, *spec.channels)
        self.convs = nnx.List(
            nnx.Conv(a, b, (3, 3), strides=1 if i == 0 else 2, kernel_init=initializer.build(), dtype=dtype, rngs=rngs)
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
        )
        normalize = normalization.placement != "none"
        self.norms = nnx.List(normalization.layer(b, rngs) if normalize else None for b in spec.channels)
        self.activations = nnx.List(activation.build(b, rngs) for b in spec.channels)
        output_init = INITIALIZERS.default(spec.output_initializer).build()
        self.output = nnx.Linear(widths[-1], spec.output_units(n_classes), kernel_init=output_init, rngs=rngs)

    def _stages(self, x, train, keys):
        h = x.reshape(x.shape[0], self.size, self.size, 1)
        stages = []
        for conv, norm, activation, key in zip(self.convs, self.norms, self.activations, keys, strict=True):
            pre = conv(h)
            if norm is not None:
                pre = norm(pre, use_running_average=not train)
            h = activation(pre, train=train, key=key)
            stages.append((pre, h))
        return stages

    def __call__(self, x, *, train=False, key=None, dropout=None):
        keys = jax.random.split(key, len(self.convs) + 1) if train else [None] * (len(self.convs) + 1)
        h = self._stages(x, train, keys[:-1])[-1][1].mean(axis=(1, 2))
        if train and dropout is not None:
            h = dropout(h, keys[-1])
        return self.output(h)

    def layer_activations(self, x):
        return [
            (pre.reshape(pre.shape[0], -1), act.reshape(act.shape[0], -1))
            for pre, act in self._stages(x, False, [None] * len(self.convs))
        ]
