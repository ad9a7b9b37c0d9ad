"""The monitor rule that early stopping, ReduceLROnPlateau and ``deeprun-tune`` share (Keras's).

``mode: auto`` maximizes accuracies and minimizes everything else; a value improves on the best so far
when it beats it by more than ``min_delta``:

    min:  value < best − min_delta        max:  value > best + min_delta

>>> monitor_mode("val/accuracy", "auto"), improved(0.30, 0.31, "min", 0.0)
('max', True)
"""

from __future__ import annotations

import math
from typing import Literal

Monitor = Literal["val/loss", "val/accuracy", "train/loss", "train/accuracy"]
Mode = Literal["min", "max"]


def monitor_mode(monitor: str, mode: str) -> Mode:
    """Resolve ``mode`` (``min``, ``max`` or ``auto``) for the metric ``monitor``."""
    if mode == "auto":
        return "max" if monitor.endswith("accuracy") else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be min, max or auto (got {mode!r})")
    return mode  # type: ignore[return-value]


def initial_best(mode: Mode) -> float:
    """The best value before the first epoch: every finite value improves on it."""
    return math.inf if mode == "min" else -math.inf


def improved(value: float, best: float, mode: Mode, min_delta: float) -> bool:
    if mode == "min":
        return value < best - min_delta
    return value > best + min_delta
