"""Your own data, with no code: ``data=arrays data.path=FILE_OR_FOLDER``.

An ``.npz`` file, or a folder of ``.npy`` files, holding ``x_train``, ``y_train``, ``x_test``, ``y_test`` and
optionally ``x_val``, ``y_val`` (else ``val_size`` training examples validate, as for Fashion-MNIST).
Inputs are uint8 or floating point, of any shape (flattened for the model); labels are integers
``0..K-1``, K inferred from ``y_train``. Every problem with the files is one :class:`DataError` line that
names the array.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np

from deeprun.data.base import DATASETS, DataError, Dataset, Validation, make_dataset, require_choice
from deeprun.registry import require

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("x_val", "y_val")
ArraysScaling = Literal["auto", "raw", "unit", "standardize"]


@DATASETS.register("arrays")
@dataclasses.dataclass(frozen=True)
class Arrays:
    """``scaling``: ``auto`` is ``unit`` (/255) for uint8 inputs and ``raw`` for floats; ``standardize``
    uses the train split's per-feature mean and std. ``val_size`` (when the files hold no ``x_val``): null
    is a tenth of the training examples."""

    path: str | None = None
    validation: Validation = "last"
    val_size: int | None = None
    scaling: ArraysScaling = "auto"
    train_limit: int | None = None

    def __post_init__(self) -> None:
        require(
            self.path is not None and str(self.path).strip() != "",
            "data.path",
            "must name an .npz file or a folder of .npy files",
            self.path,
        )
        require_choice("data.validation", self.validation, Validation)
        require_choice("data.scaling", self.scaling, ArraysScaling)
        require(self.val_size is None or self.val_size > 0, "data.val_size", "must be > 0 or null", self.val_size)
        require(
            self.train_limit is None or self.train_limit > 0,
            "data.train_limit",
            "must be > 0 or null",
            self.train_limit,
        )

    def load(self) -> Dataset:
        arrays = read_arrays(Path(str(self.path)))
        x_train, y_train = arrays["x_train"], arrays["y_train"]
        n_classes = int(y_train.max()) + 1
        for split in ("val", "test"):
            if f"y_{split}" in arrays and len(arrays[f"y_{split}"]) and int(arrays[f"y_{split}"].max()) >= n_classes:
                raise DataError(
                    f"data.path: y_{split} holds label {int(arrays[f'y_{split}'].max())}, but y_train's classes "
                    f"are 0..{n_classes - 1}"
                )
        validation: Validation
        if "x_val" in arrays:  # the files' own validation split: appended, then split off again exactly
            full = (np.concatenate([x_train, arrays["x_val"]]), np.concatenate([y_train, arrays["y_val"]]))
            val_size, validation = len(arrays["y_val"]), "last"
        else:
            full, validation = (x_train, y_train), self.validation
            val_size = self.val_size or max(1, len(y_train) // 10)
        floating = np.issubdtype(x_train.dtype, np.floating)
        scaling = ("raw" if floating else "unit") if self.scaling == "auto" else self.scaling
        return make_dataset(
            f"arrays:{Path(str(self.path)).name}",
            full,
            (arrays["x_test"], arrays["y_test"]),
            val_size=val_size,
            validation=validation,
            scaling=scaling,
            class_names=[str(label) for label in range(n_classes)],
            where="data.val_size",
            train_limit=self.train_limit,
        )


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of ``path`` (``.npz`` or a folder of ``.npy``), checked: present, consistent, finite."""
    if path.is_dir():
        names = {file.stem: file for file in path.glob("*.npy")}
        arrays = {name: _load_npy(names[name]) for name in (*REQUIRED, *OPTIONAL) if name in names}
        held = sorted(names)
    elif path.is_file():
        try:
            with np.load(path, allow_pickle=False) as npz:
                held = sorted(npz.files)
                arrays = {name: npz[name] for name in (*REQUIRED, *OPTIONAL) if name in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise DataError(f"data.path: {path} is not a readable .npz file ({error})") from None
    else:
        raise DataError(f"data.path: {path} does not exist (an .npz file or a folder of .npy files)")
    missing = [name for name in REQUIRED if name not in arrays]
    if missing:
        raise DataError(f"data.path: {path} has no {missing[0]} (it holds: {', '.join(held) or 'nothing'})")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise DataError(f"data.path: {path} holds {'x_val' if 'x_val' in arrays else 'y_val'} without its partner")
    return _checked(arrays)


def _load_npy(file: Path) -> np.ndarray:
    try:
        return np.load(file, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"data.path: {file} is not a readable .npy file ({error})") from None


def _checked(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    shape = arrays["x_train"].shape[1:]
    checked = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" not in arrays:
            continue
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim < 2 or len(x) == 0:
            raise DataError(
                f"data.path: x_{split} must hold at least one example of at least one feature (shape {x.shape})"
            )
        if x.shape[1:] != shape:
            raise DataError(f"data.path: x_{split} has examples of shape {x.shape[1:]}, x_train {shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"data.path: y_{split} has shape {y.shape}; x_{split} has {len(x)} examples")
        if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise DataError(f"data.path: y_{split} must hold integer labels 0..K-1 (dtype {y.dtype})")
        if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
            raise DataError(f"data.path: x_{split} must be uint8 or floating point (dtype {x.dtype})")
        if np.issubdtype(x.dtype, np.floating):
            if not np.isfinite(x).all():
                raise DataError(f"data.path: x_{split} holds NaN or infinite values")
            x = x.astype(np.float32)
        checked[f"x_{split}"], checked[f"y_{split}"] = x, y.astype(np.int64)
    dtypes = {checked[f"x_{s}"].dtype for s in ("train", "val", "test") if f"x_{s}" in checked}
    if len(dtypes) > 1:
        raise DataError(f"data.path: the inputs mix dtypes ({', '.join(sorted(map(str, dtypes)))})")
    return checked
