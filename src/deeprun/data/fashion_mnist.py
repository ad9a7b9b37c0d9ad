"""Fashion-MNIST: IDX files, split checksums, the Debian package ``dataset-fashion-mnist``."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np

from deeprun.data.base import (
    DATASETS,
    DataError,
    Dataset,
    Scaling,
    Task,
    TaskEdition,
    Validation,
    make_dataset,
    require_choice,
    require_file_options,
    task_classes,
)
from deeprun.data.storage import cache_dir, download, find_file, load_decoded, locate_files, search_path

# --------------------------------------------------------------------------------------------------
# Fashion-MNIST files: IDX format, split checksums, the Debian package.
# --------------------------------------------------------------------------------------------------

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


@dataclasses.dataclass(frozen=True)
class IdxSplit:
    """One split stored as two IDX files, and the decoded content they must hold.

    ``sha256`` is over the decoded image bytes followed by the decoded label bytes (see
    :func:`decoded_sha256`), so it holds for any compression of the same files.
    """

    name: str
    images_file: str
    labels_file: str
    count: int
    sha256: str


FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_IMAGE_SHAPE = (28, 28)
# Computed once from the Debian copy in /usr/share/datasets/fashion-mnist. Debian recompressed the .gz
# files (so their MD5s differ from the official ones below), but the decoded bytes are the same, so
# these digests check a copy from any source, whatever its compression.
FASHION_MNIST_SPLITS = (
    IdxSplit(
        "train",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        60_000,
        "16d82e2b505296aa2b78bd5ea0992634f30419a4c97def7c907d154a35ac6157",
    ),
    IdxSplit(
        "test",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        10_000,
        "9f1ec356a747bfe4ebab3cfb722d3694c9ca737e2570f6f90cf31d7b6fd689d4",
    ),
)
# MD5s of the official .gz files (github.com/zalandoresearch/fashion-mnist), checked on download.
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian: dataset-fashion-mnist
FASHION_MNIST_FOLDER = "fashion-mnist"  # its folder in the cache and under $DEEPRUN_DATA


def fashion_mnist_cache_dir() -> Path:
    """Where downloads and the decoded ``.npy`` arrays of Fashion-MNIST go."""
    return cache_dir() / FASHION_MNIST_FOLDER


def fashion_mnist_error(problem: str) -> DataError:
    """A :class:`DataError` that states ``problem`` and then every way to get the data."""
    return DataError(
        f"{problem}. To get Fashion-MNIST: set data.root=/path to a directory holding the four IDX files "
        f"({', '.join(_fashion_mnist_files())}, .gz or uncompressed); or set DEEPRUN_DATA=/path (that "
        f"directory or its {FASHION_MNIST_FOLDER}/ subfolder); or put the files in "
        f"{fashion_mnist_cache_dir()}; or run `sudo apt-get install dataset-fashion-mnist` (installs to "
        f"{FASHION_MNIST_SYSTEM_DIR}); or allow the download with data.download=true and network access."
    )


def _fashion_mnist_files() -> list[str]:
    return [name for split in FASHION_MNIST_SPLITS for name in (split.images_file, split.labels_file)]


def fashion_mnist_search_path(root: str | None) -> list[Path]:
    """Directories that may hold the IDX files, in lookup order (see :func:`search_path`)."""
    return search_path(root, FASHION_MNIST_FOLDER, system=[FASHION_MNIST_SYSTEM_DIR])


def locate_fashion_mnist(root: str | None, download: bool) -> dict[str, Path]:
    """Map each IDX file name to its path in the first directory holding all four, downloading if allowed."""
    return locate_files(
        _fashion_mnist_files(),
        fashion_mnist_search_path(root),
        root=root,
        download=(lambda: download_fashion_mnist(fashion_mnist_cache_dir())) if download else None,
        error=fashion_mnist_error,
        label="Fashion-MNIST",
    )


def download_fashion_mnist(directory: Path) -> dict[str, Path]:
    """Fetch the files ``directory`` still lacks from ``$DEEPRUN_FASHION_MNIST_URL`` (default: the
    official mirror), each checked against its official MD5."""
    base_url = (os.environ.get("DEEPRUN_FASHION_MNIST_URL") or FASHION_MNIST_URL).rstrip("/")
    paths = {}
    for name in _fashion_mnist_files():
        paths[name] = find_file(directory, name) or download(
            f"{base_url}/{name}", directory / name, FASHION_MNIST_MD5[name], fashion_mnist_error
        )
    return paths


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Decode an IDX file of unsigned bytes into a uint8 array; ``.gz`` names are gunzipped."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as stream:
            raw = stream.read()
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError; a cut-off stream, EOFError
        raise fashion_mnist_error(f"{path} is corrupt or unreadable ({err})") from err
    magic = int.from_bytes(raw[:4], "big")
    if len(raw) < 4 or magic != expected_magic:
        raise fashion_mnist_error(f"{path} is corrupt: IDX magic number {magic}, expected {expected_magic}")
    n_dims = magic & 0xFF
    header_bytes = 4 + 4 * n_dims
    if len(raw) < header_bytes:
        raise fashion_mnist_error(f"{path} is truncated: its header is cut off")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    expected_bytes = header_bytes + int(np.prod(shape))
    if len(raw) != expected_bytes:
        state = "truncated" if len(raw) < expected_bytes else "corrupt (trailing bytes)"
        raise fashion_mnist_error(f"{path} is {state}: {len(raw)} bytes for shape {shape}, expected {expected_bytes}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(shape)


def decoded_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of the decoded image bytes followed by the label bytes (the IdxSplit checksum)."""
    digest = hashlib.sha256(np.ascontiguousarray(images).data)
    digest.update(np.ascontiguousarray(labels).data)
    return digest.hexdigest()


def decode_idx_split(
    files: dict[str, Path], split: IdxSplit, image_shape: tuple[int, ...], n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read one split's images and labels and check shapes, label range and content checksum."""
    images_path, labels_path = files[split.images_file], files[split.labels_file]
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    if images.shape != (split.count, *image_shape):
        raise fashion_mnist_error(
            f"{images_path} holds images of shape {images.shape}, expected {(split.count, *image_shape)}"
        )
    if labels.shape != (split.count,):
        raise fashion_mnist_error(f"{labels_path} holds {len(labels)} labels, expected {split.count}")
    if labels.max(initial=0) >= n_classes:
        raise fashion_mnist_error(f"{labels_path} has label {labels.max()}, expected 0..{n_classes - 1}")
    if decoded_sha256(images, labels) != split.sha256:
        raise fashion_mnist_error(
            f"{images_path} and {labels_path} decode to content whose SHA-256 "
            f"{decoded_sha256(images, labels)} is not the expected {split.sha256}"
        )
    return images, labels


def load_idx_split(
    files: dict[str, Path],
    split: IdxSplit,
    image_shape: tuple[int, ...],
    n_classes: int,
    cache_directory: Path | None,
) -> tuple[np.ndarray, np.ndarray]:
    """One split's uint8 ``(images, labels)``, from the decoded cache when possible (None disables it)."""
    # Named after the expected content: any verified copy of the files shares the one cache.
    stem = f"decoded-{split.name}-{split.sha256[:16]}"
    return load_decoded(
        lambda: decode_idx_split(files, split, image_shape, n_classes),
        cache_directory,
        stem,
        split.count,
        image_shape,
    )


@DATASETS.register("fashion_mnist")
@dataclasses.dataclass(frozen=True)
class FashionMNIST:
    """Fashion-MNIST: 60k train + 10k test 28×28 grayscale images of 10 clothing classes.

    Defaults follow the 3rd edition: validation = the last 5,000 training images, pixels /255. The 2nd
    edition is ``validation="first"``; the SELU experiments use ``scaling="standardize"``. ``task="A"`` or
    ``"B"`` selects a transfer-learning task of ``task_edition`` in every split (:data:`TASK_CLASSES`);
    the book's B task trains on ``train_limit=200`` images.
    """

    root: str | None = None
    validation: Validation = "last"
    val_size: int = 5000
    scaling: Scaling = "unit"
    download: bool = True
    cache: bool = True
    task: Task = "all"
    task_edition: TaskEdition = "3rd"
    train_limit: int | None = None

    def __post_init__(self) -> None:
        require_file_options(self.root, self.val_size, FASHION_MNIST_SPLITS[0].count, self.train_limit)
        require_choice("data.validation", self.validation, Validation)
        require_choice("data.scaling", self.scaling, Scaling)
        require_choice("data.task", self.task, Task)
        require_choice("data.task_edition", self.task_edition, TaskEdition)

    def load(self) -> Dataset:
        files = locate_fashion_mnist(self.root, self.download)
        cache_directory = fashion_mnist_cache_dir() if self.cache else None
        n_classes = len(FASHION_MNIST_CLASS_NAMES)
        train, test = (
            load_idx_split(files, split, FASHION_MNIST_IMAGE_SHAPE, n_classes, cache_directory)
            for split in FASHION_MNIST_SPLITS
        )
        return make_dataset(
            "fashion_mnist",
            train,
            test,
            val_size=self.val_size,
            validation=self.validation,
            scaling=self.scaling,
            class_names=FASHION_MNIST_CLASS_NAMES,
            where="data.val_size",
            classes=task_classes(self.task, self.task_edition),
            train_limit=self.train_limit,
        )
