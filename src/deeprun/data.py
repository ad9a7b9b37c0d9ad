"""Datasets and their train/validation/test splits (spec chapter 11, §2).

The ``data`` config group picks one option of :data:`DATASETS`; its ``load()`` returns a :class:`Dataset`
of flattened float32 inputs, already split and scaled the way the book's notebooks do it:

* ``fashion_mnist``: the real Fashion-MNIST, found on disk (``data.root``, ``$DEEPRUN_DATA``, the user
  cache, the Debian package ``dataset-fashion-mnist``) or downloaded, verified, and decoded once into a
  fast ``.npy`` cache.
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
import typing
import urllib.request
import warnings
import zlib
from collections.abc import Iterator, Sequence
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
Scaling = Literal["unit", "standardize"]


class DataError(ConfigError):
    """The dataset files are missing, unreadable or corrupt. The message says which file and how to fix it."""


@numeric_pytree(data=["mean", "std"])
@dataclasses.dataclass(frozen=True, eq=False)
class PixelScaling:
    """How uint8 pixels become model inputs: x = p/255, then (x − mean)/std per pixel when standardizing.

    :meth:`apply` runs the same float32 operations on numpy arrays (host) and on JAX arrays (inside the
    compiled step), so the data can stay uint8 on the device, 4× smaller, and be scaled per batch.
    """

    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def apply(self, pixels):
        x = pixels.astype(np.float32) / np.float32(255)
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
# Shared split and scaling: both datasets go through these, so the synthetic tests cover them.
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
    """``"unit"``: /255; ``"standardize"``: also the per-pixel mean and std of the *train* split."""
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
) -> Dataset:
    """Split the uint8 ``full`` training images ``(N, *shape)`` and their labels, flatten, scale, and pack."""
    (x_full, y_full), (x_test, y_test) = full, test
    input_shape = tuple(int(n) for n in x_full.shape[1:])
    x_train, y_train, x_val, y_val = split_validation(
        x_full.reshape(len(x_full), -1), y_full, val_size=val_size, validation=validation, where=where
    )
    return Dataset(
        pixels_train=x_train,
        y_train=y_train.astype(np.int32),
        pixels_val=x_val,
        y_val=y_val.astype(np.int32),
        pixels_test=x_test.reshape(len(x_test), -1),
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


# --------------------------------------------------------------------------------------------------
# Fashion-MNIST files: where to find them, how to download, decode and cache them.
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
DOWNLOAD_TIMEOUT_S = 60


def cache_dir() -> Path:
    """deeprun's cache root: ``$DEEPRUN_CACHE_DIR``, else ``$XDG_CACHE_HOME/deeprun``, else
    ``~/.cache/deeprun``."""
    if explicit := os.environ.get("DEEPRUN_CACHE_DIR"):
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "deeprun"


def fashion_mnist_cache_dir() -> Path:
    """Where downloads and the decoded ``.npy`` arrays of Fashion-MNIST go."""
    return cache_dir() / "fashion-mnist"


def fashion_mnist_error(problem: str) -> DataError:
    """A :class:`DataError` that states ``problem`` and then every way to get the data."""
    return DataError(
        f"{problem}. To get Fashion-MNIST: set data.root=/path to a directory holding the four IDX files "
        f"({', '.join(_fashion_mnist_files())}, .gz or uncompressed); or set DEEPRUN_DATA=/path (that "
        f"directory or its fashion-mnist/ subfolder); or put the files in {fashion_mnist_cache_dir()}; or "
        f"run `sudo apt-get install dataset-fashion-mnist` (installs to {FASHION_MNIST_SYSTEM_DIR}); or "
        "allow the download with data.download=true and network access."
    )


def _fashion_mnist_files() -> list[str]:
    return [name for split in FASHION_MNIST_SPLITS for name in (split.images_file, split.labels_file)]


def fashion_mnist_search_path(root: str | None) -> list[Path]:
    """Directories that may hold the IDX files, in lookup order.

    A set ``root`` is the only place searched: silently using another copy would hide a typo.
    """
    if root is not None:
        return [Path(root).expanduser()]
    dirs = []
    if env := os.environ.get("DEEPRUN_DATA"):
        dirs += [Path(env).expanduser(), Path(env).expanduser() / "fashion-mnist"]
    return [*dirs, fashion_mnist_cache_dir(), FASHION_MNIST_SYSTEM_DIR]


def find_file(directory: Path, gz_name: str) -> Path | None:
    """``directory/gz_name``, else its uncompressed form (name without ``.gz``), else None."""
    for candidate in (directory / gz_name, directory / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def find_all_files(directory: Path, gz_names: Sequence[str]) -> dict[str, Path] | None:
    """Each name's path in ``directory`` (see :func:`find_file`), or None unless all are there: the
    four files are used together, never mixed from different copies."""
    paths = [find_file(directory, name) for name in gz_names]
    return None if None in paths else dict(zip(gz_names, typing.cast(list[Path], paths)))


def locate_fashion_mnist(root: str | None, download: bool) -> dict[str, Path]:
    """Map each IDX file name to its path in the first directory holding all four, downloading if allowed."""
    names = _fashion_mnist_files()
    search = fashion_mnist_search_path(root)
    for directory in search:
        if (found := find_all_files(directory, names)) is not None:
            return found
    if root is not None and not search[0].is_dir():
        raise fashion_mnist_error(f"data.root={root} is not a directory")
    if root is not None:
        missing = next(name for name in names if find_file(search[0], name) is None)
        raise fashion_mnist_error(f"data.root={root} has no {missing}")
    if not download:
        raise fashion_mnist_error(
            f"Fashion-MNIST not found: no directory holds all of {', '.join(names)} "
            f"(searched {', '.join(map(str, search))}) and data.download=false"
        )
    return download_fashion_mnist(fashion_mnist_cache_dir())


def download_fashion_mnist(directory: Path) -> dict[str, Path]:
    """Fetch the files ``directory`` still lacks from ``$DEEPRUN_FASHION_MNIST_URL`` (default: the
    official mirror), each checked against its official MD5."""
    base_url = (os.environ.get("DEEPRUN_FASHION_MNIST_URL") or FASHION_MNIST_URL).rstrip("/")
    paths = {}
    for name in _fashion_mnist_files():
        paths[name] = find_file(directory, name) or _download(f"{base_url}/{name}", directory / name)
    return paths


def _download(url: str, destination: Path, chunk_bytes: int = 1 << 20) -> Path:
    """Download ``url`` to ``destination`` atomically; a wrong MD5 leaves nothing behind."""
    expected_md5 = FASHION_MNIST_MD5[destination.name]
    log.info("downloading %s to %s", url, destination)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            with _atomic_file(destination) as out:
                digest = hashlib.md5()
                while chunk := response.read(chunk_bytes):
                    digest.update(chunk)
                    out.write(chunk)
                if digest.hexdigest() != expected_md5:
                    raise fashion_mnist_error(
                        f"the download {url} has MD5 {digest.hexdigest()}, expected {expected_md5}"
                    )
    except DataError:
        raise
    # URLError and timeouts are OSErrors; a malformed URL is a ValueError.
    except (OSError, ValueError) as err:
        raise fashion_mnist_error(f"could not download {url} to {destination} ({err})") from err
    return destination


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Yield a temporary file next to ``path`` that replaces ``path`` only if the block succeeds, so an
    interrupted download or cache write never leaves a partial file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temp.open("wb") as out:
            yield out
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


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


def _decoded_cache_paths(directory: Path, split: IdxSplit) -> tuple[Path, Path]:
    """Cache files named after the expected content, so changed constants never read stale arrays."""
    stem = f"decoded-{split.name}-{split.sha256[:16]}"
    return directory / f"{stem}-images.npy", directory / f"{stem}-labels.npy"


def _read_decoded_cache(
    directory: Path, split: IdxSplit, image_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays if present with the right dtype and shapes, else None.

    The checksum is not recomputed: it was checked before the cache was written, and skipping it is what
    makes this path fast. A broken cache file is a miss, not an error: the raw files can rebuild it.
    """
    images_path, labels_path = _decoded_cache_paths(directory, split)
    try:
        images, labels = np.load(images_path), np.load(labels_path)
    except (OSError, ValueError):
        return None
    shapes_ok = images.shape == (split.count, *image_shape) and labels.shape == (split.count,)
    dtypes_ok = images.dtype == np.uint8 and labels.dtype == np.uint8
    return (images, labels) if shapes_ok and dtypes_ok else None


def _write_decoded_cache(directory: Path, split: IdxSplit, images: np.ndarray, labels: np.ndarray) -> None:
    """Save the decoded arrays; failing to (e.g. a read-only home) only costs speed, so it only warns."""
    try:
        for path, array in zip(_decoded_cache_paths(directory, split), (images, labels)):
            with _atomic_file(path) as out:
                np.save(out, array)
    except OSError as err:
        warnings.warn(f"could not write the decoded dataset cache in {directory}: {err}", stacklevel=2)


def load_idx_split(
    files: dict[str, Path],
    split: IdxSplit,
    image_shape: tuple[int, ...],
    n_classes: int,
    cache_directory: Path | None,
) -> tuple[np.ndarray, np.ndarray]:
    """One split's uint8 ``(images, labels)``, from the decoded cache when possible (None disables it)."""
    if cache_directory is not None:
        cached = _read_decoded_cache(cache_directory, split, image_shape)
        if cached is not None:
            return cached
    images, labels = decode_idx_split(files, split, image_shape, n_classes)
    if cache_directory is not None:
        _write_decoded_cache(cache_directory, split, images, labels)
    return images, labels


@DATASETS.register("fashion_mnist")
@dataclasses.dataclass(frozen=True)
class FashionMNIST:
    """Fashion-MNIST: 60k train + 10k test 28×28 grayscale images of 10 clothing classes.

    Defaults follow the 3rd edition: validation = the last 5,000 training images, pixels /255. The 2nd
    edition is ``validation="first"``; the SELU experiments use ``scaling="standardize"``.
    """

    root: str | None = None
    validation: Validation = "last"
    val_size: int = 5000
    scaling: Scaling = "unit"
    download: bool = True
    cache: bool = True

    def __post_init__(self) -> None:
        root_ok = self.root is None or self.root.strip() != ""
        require(root_ok, "data.root", "must be a path or null", self.root)
        _require_choice("data.validation", self.validation, Validation)
        n_train = FASHION_MNIST_SPLITS[0].count
        val_ok = 0 < self.val_size < n_train
        require(val_ok, "data.val_size", f"must be between 1 and {n_train - 1}", self.val_size)
        _require_choice("data.scaling", self.scaling, Scaling)

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
