"""Comparing runs: histories without their wall-clock times, states leaf by leaf (bit for bit)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def without_times(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in record.items() if k != "epoch_time_s"} for record in history]


def assert_same_leaves(a: Any, b: Any) -> None:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
