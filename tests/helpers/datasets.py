"""Stand-in dataset files in the real formats, and whether the real Fashion-MNIST is installed."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from deeprun.data import DataError
from deeprun.data.fashion_mnist import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, locate_fashion_mnist


def fashion_mnist_available() -> bool:
    """True where the real data can be found without a download (e.g. Debian's package)."""
    try:
        locate_fashion_mnist(None, download=False)
        return True
    except DataError:
        return False


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    """Write ``array`` (uint8) as an IDX file, gzipped when ``path`` ends in .gz; magic defaults by ndim."""
    if magic is None:
        magic = IDX_IMAGES_MAGIC if array.ndim == 3 else IDX_LABELS_MAGIC
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    content = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)
    return path
