"""Datasets and their train/validation/test splits (spec chapter 11, §2).

The ``data`` config group picks one option of :data:`DATASETS`; its ``load()`` returns a :class:`Dataset`
of flattened uint8 pixels and the scaling that turns them into inputs, split the way the book's notebooks
do it:

* ``fashion_mnist``: the real Fashion-MNIST, found on disk (``data.root``, ``$DEEPRUN_DATA``, the user
  cache, the Debian package ``dataset-fashion-mnist``) or downloaded, verified, and decoded once into a
  fast ``.npy`` cache. ``task`` selects the transfer-learning tasks A (8 classes) and B (2 classes).
* ``cifar10``: CIFAR-10 from its official *binary* distribution (never Python pickles), found on disk
  (``data.root``, ``$DEEPRUN_DATA``, the user cache) or downloaded and MD5-checked, decoded once into the
  same kind of cache. Raw 0–255 pixels by default, as in the book's exercise 8.
* ``synthetic``: a tiny deterministic stand-in for tests, quantized to uint8 so it goes through the very
  same split and scaling code as Fashion-MNIST.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import typing
from collections.abc import Sequence
from typing import Literal

import numpy as np

from deeprun.registry import (
    ConfigError,
    Registry,
    numeric_pytree,
    require,
)

log = logging.getLogger(__name__)

DATASETS: Registry = Registry("data")

Validation = Literal["last", "first"]
Scaling = Literal["raw", "unit", "standardize"]
Task = Literal["all", "A", "B"]
TaskEdition = Literal["3rd", "2nd"]


class DataError(ConfigError):
    """The dataset files are missing, unreadable or corrupt. The message says which file and how to fix it."""


# ``divisor`` is static structure, not a leaf: it stays a compile-time constant inside jit (as the literal
# 255 was before it existed), so the compiled division, and its results, are unchanged.
@numeric_pytree(data=["mean", "std"], meta=["divisor"])
@dataclasses.dataclass(frozen=True, eq=False)
class PixelScaling:
    """How uint8 pixels become model inputs: x = p/divisor, then (x − mean)/std per pixel if standardizing.

    ``divisor`` is 255 for inputs in [0, 1] and 1 for the raw 0–255 values (CIFAR-10's baseline).
    :meth:`apply` runs the same float32 operations on numpy arrays (host) and on JAX arrays (inside the
    compiled step), so the data can stay uint8 on the device, 4× smaller, and be scaled per batch.
    """

    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    divisor: float = 255.0

    def apply(self, pixels):
        # Dividing by 1 is exact in IEEE arithmetic, so raw pixels need no separate branch.
        x = pixels.astype(np.float32) / np.float32(self.divisor)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays has no single truth value
class Dataset:
    """Split and flattened uint8 pixels ``(N, n_features)``, int32 labels ``(N,)`` and the scaling that
    turns pixels into inputs; ``x_train``/``x_val``/``x_test`` are the scaled float32 inputs."""

    pixels_train: np.ndarray
    y_train: np.ndarray
    pixels_val: np.ndarray
    y_val: np.ndarray
    pixels_test: np.ndarray
    y_test: np.ndarray
    scaling: PixelScaling
    n_classes: int
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    name: str

    @property
    def n_features(self) -> int:
        """Length of one flattened input, e.g. 784 for 28×28 images."""
        return int(np.prod(self.input_shape))

    @functools.cached_property
    def fingerprint(self) -> str:
        """BLAKE2b of every split's inputs and labels, in order: which data a run saw, exactly."""
        digest = hashlib.blake2b(digest_size=16)
        for array in (self.pixels_train, self.y_train, self.pixels_val, self.y_val, self.pixels_test, self.y_test):
            digest.update(np.ascontiguousarray(array).data)
        return digest.hexdigest()

    @functools.cached_property
    def x_train(self) -> np.ndarray:
        return self.scaling.apply(self.pixels_train)

    @functools.cached_property
    def x_val(self) -> np.ndarray:
        return self.scaling.apply(self.pixels_val)

    @functools.cached_property
    def x_test(self) -> np.ndarray:
        return self.scaling.apply(self.pixels_test)


# --------------------------------------------------------------------------------------------------
# Shared split, task selection and scaling: every dataset goes through these, so the synthetic tests
# cover them.
# --------------------------------------------------------------------------------------------------


def split_validation(
    x: np.ndarray, y: np.ndarray, *, val_size: int, validation: Validation, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split the full training set into ``(x_train, y_train, x_val, y_val)``.

    ``"last"`` is the 3rd edition (``X_train = full[:-5000]``, valid = the last 5,000); ``"first"`` is the
    2nd edition and CIFAR-10 (valid = ``full[:5000]``, train = the rest). Order is kept, no shuffling.
    """
    require(0 < val_size < len(x), where, f"must be between 1 and {len(x) - 1}", val_size)
    cut = len(x) - val_size if validation == "last" else val_size
    head, tail = (x[:cut], y[:cut]), (x[cut:], y[cut:])
    (x_train, y_train), (x_val, y_val) = (head, tail) if validation == "last" else (tail, head)
    return x_train, y_train, x_val, y_val


def pixel_statistics(pixels: np.ndarray, chunk_rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and population std (``axis=0``) of uint8 ``pixels`` / 255, in float64.

    The notebooks compute these in float64. A float32 reduction over 55,000 rows is off by ~1e-4, which
    moves standardized values by up to ~0.2 on Fashion-MNIST's near-constant border pixels (std ~4e-4).
    Integer sums are exact in float64 (55,000 · 255² < 2⁵³), so summing chunk by chunk is exact too,
    without a float64 copy of the whole split.
    """
    total, total_squares = np.zeros(pixels.shape[1]), np.zeros(pixels.shape[1])
    for start in range(0, len(pixels), chunk_rows):
        chunk = pixels[start : start + chunk_rows].astype(np.float64)
        total += chunk.sum(axis=0)
        total_squares += np.square(chunk).sum(axis=0)
    mean = total / len(pixels)
    variance = np.maximum(total_squares / len(pixels) - mean**2, 0.0)  # clip rounding below zero
    return mean / 255, np.sqrt(variance) / 255


def pixel_scaling(pixels_train: np.ndarray, scaling: Scaling) -> PixelScaling:
    """``"raw"``: the 0–255 values as float32; ``"unit"``: /255; ``"standardize"``: /255, then the per-pixel
    mean and std of the *train* split (the /255 cancels out; it keeps Fashion-MNIST's results unchanged)."""
    if scaling == "raw":
        return PixelScaling(divisor=1.0)
    if scaling == "unit":
        return PixelScaling()
    mean, std = pixel_statistics(pixels_train)
    # The notebooks divide by std unguarded (Fashion-MNIST has no constant pixel, so no 0/0 there). A
    # constant train pixel (std exactly 0: the statistics are exact) would give NaN; dividing it by 1
    # maps it to 0 on train, where a tiny epsilon would blow up any val/test value that differs from it.
    std[std == 0] = 1
    return PixelScaling(mean.astype(np.float32), std.astype(np.float32))


# Fashion-MNIST's transfer-learning tasks (spec §2): the original class ids each task keeps, listed in the
# order of the new labels, so "keep these classes and relabel them by position" is the whole rule.
TASK_CLASSES: dict[tuple[TaskEdition, Task], tuple[int, ...]] = {
    ("3rd", "A"): (1, 3, 4, 5, 6, 7, 8, 9),  # all but T-shirt/top and Pullover, in ascending order
    ("3rd", "B"): (0, 2),  # "is it a Pullover?": T-shirt/top → 0, Pullover → 1
    ("2nd", "A"): (0, 1, 2, 3, 4, 7, 8, 9),  # all but Sandal and Shirt: y > 6 shifted down by 2
    ("2nd", "B"): (5, 6),  # "is it a Shirt?": Sandal → 0, Shirt → 1
}


def task_classes(task: Task, edition: TaskEdition) -> tuple[int, ...] | None:
    """The original class ids of ``task`` in new-label order; None for ``"all"`` (nothing to select)."""
    return None if task == "all" else TASK_CLASSES[edition, task]


def select_classes(x: np.ndarray, y: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Keep the examples whose label is in ``classes``, in order, relabelled ``classes[i]`` → ``i``."""
    keep = np.isin(y, classes)
    relabel = np.full(max(int(y.max(initial=0)), *classes) + 1, -1, dtype=np.int32)
    relabel[list(classes)] = np.arange(len(classes), dtype=np.int32)
    return x[keep], relabel[y[keep]]


def make_dataset(
    name: str,
    full: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    val_size: int,
    validation: Validation,
    scaling: Scaling,
    class_names: Sequence[str],
    where: str,
    classes: Sequence[int] | None = None,
    train_limit: int | None = None,
) -> Dataset:
    """Split the uint8 ``full`` training images ``(N, *shape)`` and their labels, flatten, scale, and pack.

    ``classes`` (see :func:`select_classes`) then filters and relabels every split; ``train_limit`` keeps
    only the first examples of the train split. Both happen before the scaling statistics are computed,
    so "standardize" uses the train split the model actually sees.
    """
    (x_full, y_full), (x_test, y_test) = full, test
    input_shape = tuple(int(n) for n in x_full.shape[1:])
    x_train, y_train, x_val, y_val = split_validation(
        x_full.reshape(len(x_full), -1), y_full, val_size=val_size, validation=validation, where=where
    )
    x_test = x_test.reshape(len(x_test), -1)
    if classes is not None:
        (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
            select_classes(x, y, classes) for x, y in ((x_train, y_train), (x_val, y_val), (x_test, y_test))
        )
        class_names = [class_names[c] for c in classes]
    if train_limit is not None:
        # Asking for more than there is is an error: silently training on fewer would mislead.
        limit_ok = 0 < train_limit <= len(x_train)
        require(limit_ok, "data.train_limit", f"must be between 1 and {len(x_train)} here", train_limit)
        x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    return Dataset(
        pixels_train=x_train,
        y_train=y_train.astype(np.int32),
        pixels_val=x_val,
        y_val=y_val.astype(np.int32),
        pixels_test=x_test,
        y_test=y_test.astype(np.int32),
        scaling=pixel_scaling(x_train, scaling),
        n_classes=len(class_names),
        input_shape=input_shape,
        class_names=tuple(class_names),
        name=name,
    )


def require_choice(where: str, value: str, choices: object) -> None:
    """Check a Literal field also when the dataclass is built directly rather than from a mapping."""
    options = typing.get_args(choices)
    require(value in options, where, f"must be one of {', '.join(options)}", value)


def require_file_options(root: str | None, val_size: int, n_full: int, train_limit: int | None) -> None:
    """The range checks that every file-backed dataset option shares."""
    require(root is None or root.strip() != "", "data.root", "must be a path or null", root)
    require(0 < val_size < n_full, "data.val_size", f"must be between 1 and {n_full - 1}", val_size)
    require(train_limit is None or train_limit > 0, "data.train_limit", "must be > 0 or null", train_limit)
