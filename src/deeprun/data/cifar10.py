"""CIFAR-10 from its official binary distribution (never Python pickles)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deeprun.data.base import DATASETS, DataError, Dataset, Scaling, make_dataset, require_choice, require_file_options
from deeprun.data.storage import ErrorFactory, cache_dir, download, load_decoded, locate_files, md5_copy, search_path
from deeprun.files import atomic_open

# --------------------------------------------------------------------------------------------------
# CIFAR-10 files: the official binary version (https://www.cs.toronto.edu/~kriz/cifar.html).
# --------------------------------------------------------------------------------------------------

CIFAR10_CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_IMAGE_SHAPE = (32, 32, 3)  # height, width, channel: Keras's cifar10.load_data() layout
CIFAR10_RECORD_BYTES = 1 + 32 * 32 * 3  # a label byte, then the red, green and blue 32×32 planes
CIFAR10_BATCH_RECORDS = 10_000  # records in every .bin file (read at call time: tests shrink it)
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch.bin",)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # of the archive, published with it
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_ARCHIVE_FOLDER = "cifar-10-batches-bin"  # the archive's only folder, holding the .bin files
CIFAR10_FOLDER = "cifar-10"  # its folder in the cache and under $DEEPRUN_DATA


def cifar10_cache_dir() -> Path:
    """Where the downloaded archive, the extracted batches and the decoded ``.npy`` arrays go."""
    return cache_dir() / CIFAR10_FOLDER


def cifar10_error(problem: str) -> DataError:
    """A :class:`DataError` that states ``problem`` and then every way to get the data."""
    return DataError(
        f"{problem}. To get CIFAR-10 (binary version): set data.root=/path to a directory holding "
        f"{', '.join(_cifar10_files())} (or their {CIFAR10_ARCHIVE_FOLDER}/ folder); or set "
        f"DEEPRUN_DATA=/path (that directory, or its {CIFAR10_ARCHIVE_FOLDER}/ or {CIFAR10_FOLDER}/ "
        f"subfolder); or extract {CIFAR10_ARCHIVE} into {cifar10_cache_dir()}; or allow the download of "
        f"{CIFAR10_URL} with data.download=true and network access."
    )


def _cifar10_files() -> list[str]:
    return [*CIFAR10_TRAIN_FILES, *CIFAR10_TEST_FILES]


def cifar10_search_path(root: str | None) -> list[Path]:
    """Directories that may hold the ``.bin`` files, each followed by its ``cifar-10-batches-bin/``."""
    return search_path(root, CIFAR10_FOLDER, nested=[CIFAR10_ARCHIVE_FOLDER])


def locate_cifar10(root: str | None, download: bool) -> dict[str, Path]:
    """Map each ``.bin`` file name to its path in the first directory holding all six, downloading if
    allowed."""
    return locate_files(
        _cifar10_files(),
        cifar10_search_path(root),
        root=root,
        download=(lambda: download_cifar10(cifar10_cache_dir())) if download else None,
        error=cifar10_error,
        label="CIFAR-10",
    )


def download_cifar10(directory: Path) -> dict[str, Path]:
    """Fetch the archive from ``$DEEPRUN_CIFAR10_URL`` (default: the official one) into ``directory``
    unless it is there already, check its MD5, and extract the ``.bin`` files."""
    archive = directory / CIFAR10_ARCHIVE
    if archive.is_file():  # left by an earlier run whose extraction failed: check it like a download
        with archive.open("rb") as stream:
            if (md5 := md5_copy(stream)) != CIFAR10_MD5:
                raise cifar10_error(f"{archive} has MD5 {md5}, expected {CIFAR10_MD5}; delete it")
    else:
        download(os.environ.get("DEEPRUN_CIFAR10_URL") or CIFAR10_URL, archive, CIFAR10_MD5, cifar10_error)
    return extract_members(
        archive, CIFAR10_ARCHIVE_FOLDER, _cifar10_files(), directory / CIFAR10_ARCHIVE_FOLDER, cifar10_error
    )


def extract_members(
    archive: Path, folder: str, names: Sequence[str], destination: Path, error: ErrorFactory
) -> dict[str, Path]:
    """Extract the regular files ``folder/<name>`` of the tar ``archive`` to ``destination/<name>``.

    Only these members are read, each written under a name chosen here, so an archive can neither write
    outside ``destination`` (``..``, absolute names, links) nor add files. Streaming mode reads the
    compressed data once.
    """
    wanted = {f"{folder}/{name}": name for name in names}
    paths = {}
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                source = tar.extractfile(member) if name is not None and member.isfile() else None
                if name is None or source is None:
                    continue
                with atomic_open(destination / name, "wb") as out:
                    shutil.copyfileobj(source, out)
                paths[name] = destination / name
    except (OSError, EOFError, tarfile.TarError, zlib.error) as err:
        raise error(f"{archive} is corrupt or unreadable ({err})") from err
    if missing := [name for name in names if name not in paths]:
        raise error(f"{archive} has no {folder}/{missing[0]}")
    return {name: paths[name] for name in names}


def read_cifar10_batch(path: Path, records: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode one binary batch of ``records`` records into uint8 images ``(records, 32, 32, 3)`` and labels.

    A record is a label byte and 3,072 pixel bytes: the red, then green, then blue 32×32 plane, each row
    by row. Moving the channel last gives Keras's layout, so a flattened image matches Keras's Flatten.
    """
    expected_bytes = records * CIFAR10_RECORD_BYTES
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise cifar10_error(f"{path} is unreadable ({err})") from err
    if len(raw) != expected_bytes:
        state = "truncated" if len(raw) < expected_bytes else "corrupt (too long)"
        raise cifar10_error(
            f"{path} is {state}: {len(raw)} bytes, expected {expected_bytes} "
            f"({records} records of {CIFAR10_RECORD_BYTES} bytes)"
        )
    table = np.frombuffer(raw, dtype=np.uint8).reshape(records, CIFAR10_RECORD_BYTES)
    labels = table[:, 0].copy()
    if labels.max(initial=0) >= len(CIFAR10_CLASS_NAMES):
        raise cifar10_error(f"{path} has label {labels.max()}, expected 0..{len(CIFAR10_CLASS_NAMES) - 1}")
    height, width, channels = CIFAR10_IMAGE_SHAPE
    planes = table[:, 1:].reshape(records, channels, height, width)
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1)), labels


def decode_cifar10_files(paths: Sequence[Path], records: int) -> tuple[np.ndarray, np.ndarray]:
    """The batches of ``paths``, decoded and concatenated in order."""
    images, labels = zip(*(read_cifar10_batch(path, records) for path in paths))
    return np.concatenate(images), np.concatenate(labels)


def files_fingerprint(paths: Sequence[Path]) -> str:
    """A short digest of the files' resolved paths, sizes and modification times.

    It names CIFAR-10's decoded cache: unlike Fashion-MNIST, there is no published checksum of the decoded
    content to name it after, and hashing 180 MB on every load would cost as much as decoding. Replacing or
    editing the files, or using another copy, is then a cache miss rather than stale data.
    """
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def load_cifar10_split(
    files: dict[str, Path], split: str, names: Sequence[str], cache_directory: Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """One split's uint8 ``(images, labels)`` from the batch files ``names``, through the decoded cache."""
    paths = [files[name] for name in names]
    records = CIFAR10_BATCH_RECORDS
    return load_decoded(
        lambda: decode_cifar10_files(paths, records),
        cache_directory,
        f"decoded-{split}-{files_fingerprint(paths)}",
        records * len(paths),
        CIFAR10_IMAGE_SHAPE,
    )


@DATASETS.register("cifar10")
@dataclasses.dataclass(frozen=True)
class CIFAR10:
    """CIFAR-10: 50k train + 10k test 32×32 RGB images of 10 classes (the book's exercise 8).

    Validation = the FIRST ``val_size`` (5,000) training images, train = the remaining 45,000, as in both
    editions. ``scaling="raw"`` keeps the 0–255 values (baseline and BN models); ``"standardize"`` is the
    per-pixel standardization over the train split (SELU, alpha dropout, 1cycle); ``"unit"`` is /255.
    """

    root: str | None = None
    val_size: int = 5000
    scaling: Scaling = "raw"
    download: bool = True
    cache: bool = True
    train_limit: int | None = None

    def __post_init__(self) -> None:
        n_full = len(CIFAR10_TRAIN_FILES) * CIFAR10_BATCH_RECORDS
        require_file_options(self.root, self.val_size, n_full, self.train_limit)
        require_choice("data.scaling", self.scaling, Scaling)

    def load(self) -> Dataset:
        files = locate_cifar10(self.root, self.download)
        cache_directory = cifar10_cache_dir() if self.cache else None
        train, test = (
            load_cifar10_split(files, split, names, cache_directory)
            for split, names in (("train", CIFAR10_TRAIN_FILES), ("test", CIFAR10_TEST_FILES))
        )
        return make_dataset(
            "cifar10",
            train,
            test,
            val_size=self.val_size,
            validation="first",
            scaling=self.scaling,
            class_names=CIFAR10_CLASS_NAMES,
            where="data.val_size",
            train_limit=self.train_limit,
        )
