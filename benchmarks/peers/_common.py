"""What every peer shares: the command line, the data, and the one JSON line it prints at the end.

Each peer is run by ``benchmarks/bench.py`` as a fresh Python process (so cold start and peak memory are its
own) and prints exactly one JSON object as its last stdout line::

    {"epoch_times": [...], "first_epoch_s": ..., "val_accuracy": ..., "train_loss": ...}

The data are deeprun's own arrays (``deeprun.data``): ``bench.py`` exports them once per invocation with
``python benchmarks/peers/_common.py --export DIR`` and passes ``--data DIR``; without it a peer loads them
through ``deeprun.data`` itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

# The model and training setup every implementation uses (see benchmarks/README.md).
HIDDEN = (300, 100)
N_CLASSES = 10
LEARNING_RATE = 0.01
MOMENTUM = 0.9
SEED = 42
# Keras' he_normal / VarianceScaling(truncated_normal): a normal truncated at ±2σ, σ = sqrt(2/fan_in) / this
# constant (the std of a unit normal truncated at ±2), so the truncated samples have variance 2/fan_in.
TRUNCATED_NORMAL_STD_CORRECTION = 0.87962566103423978


ARRAYS = ("x_train", "y_train", "x_val", "y_val")


@dataclasses.dataclass(frozen=True)
class Data:
    x_train: np.ndarray  # float32 (55000, 784), pixels / 255
    y_train: np.ndarray  # int32 (55000,)
    x_val: np.ndarray  # float32 (5000, 784): the last 5,000 training images
    y_val: np.ndarray
    input_shape: tuple[int, ...]  # (28, 28)

    @property
    def n_features(self) -> int:
        return int(np.prod(self.input_shape))


def parse_args(description: str, extra=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder written by `_common.py --export` (default: load with deeprun.data)",
    )
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def load_deeprun_data() -> Data:
    """Fashion-MNIST exactly as deeprun sees it: 55,000 train / last 5,000 val, float32 pixels / 255."""
    from deeprun.data import DATASETS

    dataset = DATASETS.build({"name": "fashion_mnist"}).load()
    return Data(*(np.asarray(getattr(dataset, name)) for name in ARRAYS), tuple(dataset.input_shape))


def load_data(folder: Path | None) -> Data:
    """The arrays ``bench.py`` exported with deeprun.data (so a peer need not import deeprun, which imports
    JAX: that would add to PyTorch's start-up time and memory), or deeprun.data itself without ``--data``."""
    if folder is None:
        return load_deeprun_data()
    meta = json.loads((folder / "meta.json").read_text())
    return Data(*(np.load(folder / f"{name}.npy") for name in ARRAYS), tuple(meta["input_shape"]))


def export(folder: Path) -> None:
    data = load_deeprun_data()
    folder.mkdir(parents=True, exist_ok=True)
    for name in ARRAYS:
        np.save(folder / f"{name}.npy", getattr(data, name))
    (folder / "meta.json").write_text(json.dumps({"input_shape": list(data.input_shape)}))


def emit(epoch_times: list[float], val_accuracy: float, train_loss: float, **extra) -> None:
    """Print the result line the harness reads (the last line of stdout)."""
    result = {
        "epoch_times": [float(t) for t in epoch_times],
        "first_epoch_s": float(epoch_times[0]) if epoch_times else None,
        "val_accuracy": float(val_accuracy),
        "train_loss": float(train_loss),
        **extra,
    }
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


class Clock:
    """perf_counter based stopwatch."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self.start = now - self.start, now
        return elapsed


if __name__ == "__main__":
    # python benchmarks/peers/_common.py --export DIR: write deeprun's arrays for the peers (bench.py does).
    cli = argparse.ArgumentParser(description="export deeprun's Fashion-MNIST arrays for the peers")
    cli.add_argument("--export", type=Path, required=True)
    export(cli.parse_args().export)
