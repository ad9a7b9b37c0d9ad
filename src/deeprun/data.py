"""Datasets and their train/validation/test splits (spec chapter 11, §2).

The ``data`` config group picks one option of :data:`DATASETS`; its ``load()`` returns a :class:`Dataset`
of flattened uint8 pixels and the scaling that turns them into inputs, split the way the book's notebooks
do it:

* ``fashion_mnist``: the real Fashion-MNIST, found on disk (``data.root``, ``$DEEPRUN_DATA``, the user
  cache, the Debian package ``dataset-fashion-mnist``) or downloaded, verified, and decoded once into a
  fast ``.npy`` cache. ``task`` selects the transfer-learning tasks A (8 classes) and B (2 classes).
* ``cifar10``: CIFAR-10 from its official *binary* distribution (never Python pickles), found on disk
  (``data.root``, ``$DEEPRUN_DATA``, the user cache) or downloaded and MD5-checked, decoded once into the
  same kind of cache. Raw 0–255 pixels by default, as in the book's exercise 8.
* ``synthetic``: a tiny deterministic stand-in for tests, quantized to uint8 so it goes through the very
  same split and scaling code as Fashion-MNIST.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import logging
import os
import shutil
import tarfile
import typing
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from deeprun.registry import (
    ConfigError,
    Registry,
    numeric_pytree,
    require,
    require_non_negative,
    require_positive,
)

log = logging.getLogger(__name__)

DATASETS: Registry = Registry("data")

Validation = Literal["last", "first"]
Scaling = Literal["raw", "unit", "standardize"]
Task = Literal["all", "A", "B"]
TaskEdition = Literal["3rd", "2nd"]


class DataError(ConfigError):
    """The dataset files are missing, unreadable or corrupt. The message says which file and how to fix it."""


# ``divisor`` is static structure, not a leaf: it stays a compile-time constant inside jit (as the literal
# 255 was before it existed), so the compiled division, and its results, are unchanged.
@numeric_pytree(data=["mean", "std"], meta=["divisor"])
@dataclasses.dataclass(frozen=True, eq=False)
class PixelScaling:
    """How uint8 pixels become model inputs: x = p/divisor, then (x − mean)/std per pixel if standardizing.

    ``divisor`` is 255 for inputs in [0, 1] and 1 for the raw 0–255 values (CIFAR-10's baseline).
    :meth:`apply` runs the same float32 operations on numpy arrays (host) and on JAX arrays (inside the
    compiled step), so the data can stay uint8 on the device, 4× smaller, and be scaled per batch.
    """

    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    divisor: float = 255.0

    def apply(self, pixels):
        # Dividing by 1 is exact in IEEE arithmetic, so raw pixels need no separate branch.
        x = pixels.astype(np.float32) / np.float32(self.divisor)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays has no single truth value
class Dataset:
    """Split and flattened uint8 pixels ``(N, n_features)``, int32 labels ``(N,)`` and the scaling that
    turns pixels into inputs; ``x_train``/``x_val``/``x_test`` are the scaled float32 inputs."""

    pixels_train: np.ndarray
    y_train: np.ndarray
    pixels_val: np.ndarray
    y_val: np.ndarray
    pixels_test: np.ndarray
    y_test: np.ndarray
    scaling: PixelScaling
    n_classes: int
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    name: str

    @property
    def n_features(self) -> int:
        """Length of one flattened input, e.g. 784 for 28×28 images."""
        return int(np.prod(self.input_shape))

    @functools.cached_property
    def x_train(self) -> np.ndarray:
        return self.scaling.apply(self.pixels_train)

    @functools.cached_property
    def x_val(self) -> np.ndarray:
        return self.scaling.apply(self.pixels_val)

    @functools.cached_property
    def x_test(self) -> np.ndarray:
        return self.scaling.apply(self.pixels_test)


# --------------------------------------------------------------------------------------------------
# Shared split, task selection and scaling: every dataset goes through these, so the synthetic tests
# cover them.
# --------------------------------------------------------------------------------------------------


def split_validation(
    x: np.ndarray, y: np.ndarray, *, val_size: int, validation: Validation, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split the full training set into ``(x_train, y_train, x_val, y_val)``.

    ``"last"`` is the 3rd edition (``X_train = full[:-5000]``, valid = the last 5,000); ``"first"`` is the
    2nd edition and CIFAR-10 (valid = ``full[:5000]``, train = the rest). Order is kept, no shuffling.
    """
    require(0 < val_size < len(x), where, f"must be between 1 and {len(x) - 1}", val_size)
    cut = len(x) - val_size if validation == "last" else val_size
    head, tail = (x[:cut], y[:cut]), (x[cut:], y[cut:])
    (x_train, y_train), (x_val, y_val) = (head, tail) if validation == "last" else (tail, head)
    return x_train, y_train, x_val, y_val


def pixel_statistics(pixels: np.ndarray, chunk_rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and population std (``axis=0``) of uint8 ``pixels`` / 255, in float64.

    The notebooks compute these in float64. A float32 reduction over 55,000 rows is off by ~1e-4, which
    moves standardized values by up to ~0.2 on Fashion-MNIST's near-constant border pixels (std ~4e-4).
    Integer sums are exact in float64 (55,000 · 255² < 2⁵³), so summing chunk by chunk is exact too,
    without a float64 copy of the whole split.
    """
    total, total_squares = np.zeros(pixels.shape[1]), np.zeros(pixels.shape[1])
    for start in range(0, len(pixels), chunk_rows):
        chunk = pixels[start : start + chunk_rows].astype(np.float64)
        total += chunk.sum(axis=0)
        total_squares += np.square(chunk).sum(axis=0)
    mean = total / len(pixels)
    variance = np.maximum(total_squares / len(pixels) - mean**2, 0.0)  # clip rounding below zero
    return mean / 255, np.sqrt(variance) / 255


def pixel_scaling(pixels_train: np.ndarray, scaling: Scaling) -> PixelScaling:
    """``"raw"``: the 0–255 values as float32; ``"unit"``: /255; ``"standardize"``: /255, then the per-pixel
    mean and std of the *train* split (the /255 cancels out; it keeps Fashion-MNIST's results unchanged)."""
    if scaling == "raw":
        return PixelScaling(divisor=1.0)
    if scaling == "unit":
        return PixelScaling()
    mean, std = pixel_statistics(pixels_train)
    # The notebooks divide by std unguarded (Fashion-MNIST has no constant pixel, so no 0/0 there). A
    # constant train pixel (std exactly 0: the statistics are exact) would give NaN; dividing it by 1
    # maps it to 0 on train, where a tiny epsilon would blow up any val/test value that differs from it.
    std[std == 0] = 1
    return PixelScaling(mean.astype(np.float32), std.astype(np.float32))


def scale(
    x_train: np.ndarray, x_val: np.ndarray, x_test: np.ndarray, scaling: Scaling
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn uint8 pixels ``(N, D)`` into float32 with the train split's :func:`pixel_scaling`."""
    # float32(x) / 255 equals the notebooks' float32(x / 255.) exactly for every uint8 value.
    scaler = pixel_scaling(x_train, scaling)
    return scaler.apply(x_train), scaler.apply(x_val), scaler.apply(x_test)


# Fashion-MNIST's transfer-learning tasks (spec §2): the original class ids each task keeps, listed in the
# order of the new labels, so "keep these classes and relabel them by position" is the whole rule.
TASK_CLASSES: dict[tuple[TaskEdition, Task], tuple[int, ...]] = {
    ("3rd", "A"): (1, 3, 4, 5, 6, 7, 8, 9),  # all but T-shirt/top and Pullover, in ascending order
    ("3rd", "B"): (0, 2),  # "is it a Pullover?": T-shirt/top → 0, Pullover → 1
    ("2nd", "A"): (0, 1, 2, 3, 4, 7, 8, 9),  # all but Sandal and Shirt: y > 6 shifted down by 2
    ("2nd", "B"): (5, 6),  # "is it a Shirt?": Sandal → 0, Shirt → 1
}


def task_classes(task: Task, edition: TaskEdition) -> tuple[int, ...] | None:
    """The original class ids of ``task`` in new-label order; None for ``"all"`` (nothing to select)."""
    return None if task == "all" else TASK_CLASSES[edition, task]


def select_classes(x: np.ndarray, y: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Keep the examples whose label is in ``classes``, in order, relabelled ``classes[i]`` → ``i``."""
    keep = np.isin(y, classes)
    relabel = np.full(max(int(y.max(initial=0)), *classes) + 1, -1, dtype=np.int32)
    relabel[list(classes)] = np.arange(len(classes), dtype=np.int32)
    return x[keep], relabel[y[keep]]


def select_task(
    x: np.ndarray, y: np.ndarray, task: Task, edition: TaskEdition
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images and labels of a transfer-learning task (the book's ``split_dataset``)."""
    classes = task_classes(task, edition)
    return (x, y.astype(np.int32)) if classes is None else select_classes(x, y, classes)


def make_dataset(
    name: str,
    full: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    val_size: int,
    validation: Validation,
    scaling: Scaling,
    class_names: Sequence[str],
    where: str,
    classes: Sequence[int] | None = None,
    train_limit: int | None = None,
) -> Dataset:
    """Split the uint8 ``full`` training images ``(N, *shape)`` and their labels, flatten, scale, and pack.

    ``classes`` (see :func:`select_classes`) then filters and relabels every split; ``train_limit`` keeps
    only the first examples of the train split. Both happen before the scaling statistics are computed,
    so "standardize" uses the train split the model actually sees.
    """
    (x_full, y_full), (x_test, y_test) = full, test
    input_shape = tuple(int(n) for n in x_full.shape[1:])
    x_train, y_train, x_val, y_val = split_validation(
        x_full.reshape(len(x_full), -1), y_full, val_size=val_size, validation=validation, where=where
    )
    x_test = x_test.reshape(len(x_test), -1)
    if classes is not None:
        (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
            select_classes(x, y, classes) for x, y in ((x_train, y_train), (x_val, y_val), (x_test, y_test))
        )
        class_names = [class_names[c] for c in classes]
    if train_limit is not None:
        # Asking for more than there is is an error: silently training on fewer would mislead.
        limit_ok = 0 < train_limit <= len(x_train)
        require(limit_ok, "data.train_limit", f"must be between 1 and {len(x_train)} here", train_limit)
        x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    return Dataset(
        pixels_train=x_train,
        y_train=y_train.astype(np.int32),
        pixels_val=x_val,
        y_val=y_val.astype(np.int32),
        pixels_test=x_test,
        y_test=y_test.astype(np.int32),
        scaling=pixel_scaling(x_train, scaling),
        n_classes=len(class_names),
        input_shape=input_shape,
        class_names=tuple(class_names),
        name=name,
    )


def _require_choice(where: str, value: str, choices: object) -> None:
    """Check a Literal field also when the dataclass is built directly rather than from a mapping."""
    options = typing.get_args(choices)
    require(value in options, where, f"must be one of {', '.join(options)}", value)


def _require_file_options(root: str | None, val_size: int, n_full: int, train_limit: int | None) -> None:
    """The range checks that every file-backed dataset option shares."""
    require(root is None or root.strip() != "", "data.root", "must be a path or null", root)
    require(0 < val_size < n_full, "data.val_size", f"must be between 1 and {n_full - 1}", val_size)
    require(train_limit is None or train_limit > 0, "data.train_limit", "must be > 0 or null", train_limit)


# --------------------------------------------------------------------------------------------------
# Dataset files, whatever the dataset: where to find them, how to download them, the decoded cache.
# --------------------------------------------------------------------------------------------------

DOWNLOAD_TIMEOUT_S = 60

ErrorFactory = Callable[[str], DataError]  # states a problem, then every way to get that dataset


def cache_dir() -> Path:
    """deeprun's cache root: ``$DEEPRUN_CACHE_DIR``, else ``$XDG_CACHE_HOME/deeprun``, else
    ``~/.cache/deeprun``."""
    if explicit := os.environ.get("DEEPRUN_CACHE_DIR"):
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "deeprun"


def search_path(
    root: str | None, folder: str, *, nested: Sequence[str] = (), system: Sequence[Path] = ()
) -> list[Path]:
    """Directories that may hold a dataset's files, in lookup order.

    A set ``root`` is the only place searched: silently using another copy would hide a typo. Otherwise:
    ``$DEEPRUN_DATA``, its ``folder`` subfolder, the cache ``cache_dir()/folder``, then ``system``. Each
    directory is followed by its ``nested`` subfolders (e.g. the folder an archive extracts to).
    """
    if root is not None:
        bases = [Path(root).expanduser()]
    else:
        env = os.environ.get("DEEPRUN_DATA")
        bases = [Path(env).expanduser(), Path(env).expanduser() / folder] if env else []
        bases += [cache_dir() / folder, *system]
    return [directory for base in bases for directory in (base, *(base / sub for sub in nested))]


def find_file(directory: Path, gz_name: str) -> Path | None:
    """``directory/gz_name``, else its uncompressed form (name without ``.gz``), else None."""
    for candidate in (directory / gz_name, directory / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def find_all_files(directory: Path, gz_names: Sequence[str]) -> dict[str, Path] | None:
    """Each name's path in ``directory`` (see :func:`find_file`), or None unless all are there: a
    dataset's files are used together, never mixed from different copies."""
    paths = [find_file(directory, name) for name in gz_names]
    return None if None in paths else dict(zip(gz_names, typing.cast(list[Path], paths)))


def locate_files(
    names: Sequence[str],
    search: Sequence[Path],
    *,
    root: str | None,
    download: Callable[[], dict[str, Path]] | None,
    error: ErrorFactory,
    label: str,
) -> dict[str, Path]:
    """Map each file name to its path in the first directory of ``search`` holding all of them; else
    call ``download`` (None: downloading is not allowed). ``search`` comes from :func:`search_path`."""
    for directory in search:
        if (found := find_all_files(directory, names)) is not None:
            return found
    if root is not None:
        if not search[0].is_dir():
            raise error(f"data.root={root} is not a directory")
        # Name a file missing from the candidate holding the most of them: the likeliest intended one.
        best = max(search, key=lambda directory: len([n for n in names if find_file(directory, n)]))
        missing = next(name for name in names if find_file(best, name) is None)
        raise error(f"data.root={root} has no {missing} (looked in {', '.join(map(str, search))})")
    if download is None:
        raise error(
            f"{label} not found: no directory holds all of {', '.join(names)} "
            f"(searched {', '.join(map(str, search))}) and data.download=false"
        )
    return download()


def _md5_copy(source: BinaryIO, out: BinaryIO | None = None, chunk_bytes: int = 1 << 20) -> str:
    """MD5 of everything ``source`` still holds, copying it to ``out`` on the way (unless None)."""
    digest = hashlib.md5()
    while chunk := source.read(chunk_bytes):
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
    return digest.hexdigest()


def _download(url: str, destination: Path, expected_md5: str, error: ErrorFactory) -> Path:
    """Download ``url`` to ``destination`` atomically; a wrong MD5 leaves nothing behind."""
    log.info("downloading %s to %s", url, destination)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            with _atomic_file(destination) as out:
                if (md5 := _md5_copy(response, out)) != expected_md5:
                    raise error(f"the download {url} has MD5 {md5}, expected {expected_md5}")
    except DataError:
        raise
    # URLError and timeouts are OSErrors; a malformed URL is a ValueError.
    except (OSError, ValueError) as err:
        raise error(f"could not download {url} to {destination} ({err})") from err
    return destination


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Yield a temporary file next to ``path`` that replaces ``path`` only if the block succeeds, so an
    interrupted download, extraction or cache write never leaves a partial file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temp.open("wb") as out:
            yield out
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _decoded_cache_paths(directory: Path, stem: str) -> tuple[Path, Path]:
    """The images and labels files of one cached split. ``stem`` names the content it must hold (see the
    callers), so changed constants or source files never read stale arrays."""
    return directory / f"{stem}-images.npy", directory / f"{stem}-labels.npy"


def _read_decoded_cache(
    directory: Path, stem: str, count: int, image_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays if present with the right dtype and shapes, else None.

    The content is not checked again: it was checked before the cache was written, and skipping that is
    what makes this path fast. A broken cache file is a miss, not an error: the raw files can rebuild it.
    """
    images_path, labels_path = _decoded_cache_paths(directory, stem)
    try:
        images, labels = np.load(images_path), np.load(labels_path)
    except (OSError, ValueError):
        return None
    shapes_ok = images.shape == (count, *image_shape) and labels.shape == (count,)
    dtypes_ok = images.dtype == np.uint8 and labels.dtype == np.uint8
    return (images, labels) if shapes_ok and dtypes_ok else None


def _write_decoded_cache(directory: Path, stem: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Save the decoded arrays; failing to (e.g. a read-only home) only costs speed, so it only warns."""
    try:
        for path, array in zip(_decoded_cache_paths(directory, stem), (images, labels)):
            with _atomic_file(path) as out:
                np.save(out, array)
    except OSError as err:
        warnings.warn(f"could not write the decoded dataset cache in {directory}: {err}", stacklevel=3)


def load_decoded(
    decode: Callable[[], tuple[np.ndarray, np.ndarray]],
    cache_directory: Path | None,
    stem: str,
    count: int,
    image_shape: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """One split's uint8 ``(images, labels)``: from the decoded cache when possible (None disables it),
    else from ``decode()``, whose result is then cached."""
    if cache_directory is not None:
        cached = _read_decoded_cache(cache_directory, stem, count, image_shape)
        if cached is not None:
            return cached
    images, labels = decode()
    if cache_directory is not None:
        _write_decoded_cache(cache_directory, stem, images, labels)
    return images, labels


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
        paths[name] = find_file(directory, name) or _download(
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
        raise fashion_mnist_error(
            f"{path} is {state}: {len(raw)} bytes for shape {shape}, expected {expected_bytes}"
        )
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
        _require_file_options(self.root, self.val_size, FASHION_MNIST_SPLITS[0].count, self.train_limit)
        _require_choice("data.validation", self.validation, Validation)
        _require_choice("data.scaling", self.scaling, Scaling)
        _require_choice("data.task", self.task, Task)
        _require_choice("data.task_edition", self.task_edition, TaskEdition)

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
            if (md5 := _md5_copy(stream)) != CIFAR10_MD5:
                raise cifar10_error(f"{archive} has MD5 {md5}, expected {CIFAR10_MD5}; delete it")
    else:
        _download(os.environ.get("DEEPRUN_CIFAR10_URL") or CIFAR10_URL, archive, CIFAR10_MD5, cifar10_error)
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
                if source is None:
                    continue
                with _atomic_file(destination / name) as out:
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
        _require_file_options(self.root, self.val_size, n_full, self.train_limit)
        _require_choice("data.scaling", self.scaling, Scaling)

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
        _require_choice("data.scaling", self.scaling, Scaling)

    def load(self) -> Dataset:
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
