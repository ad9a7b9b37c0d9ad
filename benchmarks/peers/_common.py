"""What every peer shares: the command line, the data, and the one JSON line it prints at the end.

Each peer is run by ``benchmarks/bench.py`` as a fresh Python process (so cold start and peak memory are its
own) and prints exactly one JSON object as its last stdout line::

    {"epoch_times": [...], "first_epoch_s": ..., "val_accuracy": ..., "train_loss": ...}
"""

from __future__ import annotations

import argparse
import json
import sys
import time

# The model and training setup every implementation uses (see benchmarks/README.md).
HIDDEN = (300, 100)
N_CLASSES = 10
LEARNING_RATE = 0.01
MOMENTUM = 0.9
SEED = 42
# Keras' he_normal / VarianceScaling(truncated_normal): a normal truncated at ±2σ, σ = sqrt(2/fan_in) / this
# constant (the std of a unit normal truncated at ±2), so the truncated samples have variance 2/fan_in.
TRUNCATED_NORMAL_STD_CORRECTION = 0.87962566103423978


def parse_args(description: str, extra=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def load_data():
    """Fashion-MNIST exactly as deeprun sees it: 55,000 train / last 5,000 val, float32 pixels / 255."""
    from deeprun.data import DATASETS

    return DATASETS.build({"name": "fashion_mnist"}).load()


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
