"""The ``data`` config group: shared split, scaling and file handling (``base``, ``storage``), then one
module per dataset, each registering its option in :data:`DATASETS` (imported here, so the registry
holds every built-in dataset once ``deeprun.data`` is imported)."""

from deeprun.data import arrays, cifar10, fashion_mnist, synthetic
from deeprun.data.base import DATASETS, DataError, Dataset, PixelScaling

__all__ = ["DATASETS", "DataError", "Dataset", "PixelScaling", "arrays", "cifar10", "fashion_mnist", "synthetic"]
