"""A tiny deterministic dataset for tests."""

from __future__ import annotations

import dataclasses

import numpy as np

from deeprun.data.base import DATASETS, Dataset, Scaling, make_dataset, require_choice
from deeprun.memory import require_fits
from deeprun.registry import (
    require,
    require_non_negative,
    require_positive,
)

# --------------------------------------------------------------------------------------------------
# Synthetic data for tests.
# --------------------------------------------------------------------------------------------------


@DATASETS.register("synthetic")
@dataclasses.dataclass(frozen=True)
class Synthetic:
    """Tiny, deterministic, learnable images for tests: one fixed random prototype in [0, 1]^D per class,
    samples = prototype + noise·N(0, 1), clipped and quantized to uint8 like real pixels."""

    n_train: int = 512
    n_val: int = 128
    n_test: int = 128
    image_size: int = 8
    n_classes: int = 10
    seed: int = 0
    noise: float = 0.5
    scaling: Scaling = "unit"

    def __post_init__(self) -> None:
        for field in ("n_train", "n_val", "n_test", "image_size"):
            require_positive(f"data.{field}", getattr(self, field))
        require(self.n_classes >= 2, "data.n_classes", "must be >= 2", self.n_classes)
        require_non_negative("data.noise", self.noise)
        require_choice("data.scaling", self.scaling, Scaling)

    def load(self) -> Dataset:
        count = self.n_train + self.n_val + self.n_test
        # float64 values of the largest split while sampling, then the uint8 pixels of all of them.
        largest = max(self.n_train + self.n_val, self.n_test)
        need = self.image_size**2 * (8 * (largest + self.n_classes) + count)
        require_fits("data.image_size", need, f"{count:,} synthetic images of {self.image_size}x{self.image_size}")
        rng = np.random.default_rng(self.seed)
        prototypes = rng.uniform(0.0, 1.0, (self.n_classes, self.image_size**2))

        def sample(count: int) -> tuple[np.ndarray, np.ndarray]:
            # Balanced labels (class counts differ by at most one) in shuffled order.
            labels = rng.permutation(np.arange(count) % self.n_classes)
            values = prototypes[labels] + self.noise * rng.standard_normal((count, prototypes.shape[1]))
            pixels = np.rint(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)
            return pixels.reshape(count, self.image_size, self.image_size), labels

        return make_dataset(
            "synthetic",
            sample(self.n_train + self.n_val),
            sample(self.n_test),
            val_size=self.n_val,
            validation="last",
            scaling=self.scaling,
            class_names=[f"class {i}" for i in range(self.n_classes)],
            where="data.n_val",
        )
