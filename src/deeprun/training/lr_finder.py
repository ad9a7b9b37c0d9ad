"""The book's learning-rate finder as a training config: one epoch with an exponentially growing rate."""

from __future__ import annotations

from typing import Any

import numpy as np

from deeprun.registry import require, require_positive


def finder_config(config: dict[str, Any], n_train: int) -> dict[str, Any]:
    """The training config of the sweep: one epoch, exponential per-step schedule, no extras."""
    import math

    options = config.pop("lr_finder")
    min_rate, max_rate, batch_size = options["min_rate"], options["max_rate"], options["batch_size"]
    require_positive("lr_finder.min_rate", min_rate)
    require(max_rate > min_rate, "lr_finder.max_rate", "must be > lr_finder.min_rate", max_rate)
    require_positive("lr_finder.batch_size", batch_size)
    iterations = math.ceil(n_train / batch_size)
    config["schedule"] = {
        "name": "exponential",
        "initial_lr": min_rate,
        "decay_rate": max_rate / min_rate,
        # Steps 0 … iterations-1: the last batch trains at max_rate itself.
        "decay_steps": max(iterations - 1, 1),
        "staircase": False,
        "unit": "step",
    }
    config["trainer"] = {
        **config["trainer"],
        "epochs": 1,
        "batch_size": batch_size,
        "phases": [],
        "checkpoint": False,
        "plots": False,
        "early_stopping": {**config["trainer"]["early_stopping"], "enabled": False},
    }
    return config


def suggest_max_rate(rates: np.ndarray, losses: np.ndarray) -> float:
    """The rate at the lowest (finite) batch loss: the bottom of the loss-vs-rate curve."""
    finite = np.isfinite(losses)
    return float(rates[finite][np.argmin(losses[finite])])
