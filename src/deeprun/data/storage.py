"""Dataset files, whatever the dataset: where to find them, how to download them, the decoded cache."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import typing
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np

from deeprun.data.base import DataError
from deeprun.files import atomic_open, write_text

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Dataset files, whatever the dataset: where to find them, how to download them, the decoded cache.
# --------------------------------------------------------------------------------------------------

DOWNLOAD_TIMEOUT_S = 60

ErrorFactory = Callable[[str], DataError]  # states a problem, then every way to get that dataset

#: How a download is shown: ``(description, total bytes or None)`` → a context whose value is called with
#: each chunk's size. The data layer knows no console: a command sets one (:func:`shown_downloads`).
TransferProgress = Callable[[str, int | None], AbstractContextManager[Callable[[int], None]]]
_DOWNLOAD_PROGRESS: ContextVar[TransferProgress | None] = ContextVar("download_progress", default=None)


@contextlib.contextmanager
def shown_downloads(progress: TransferProgress) -> Iterator[None]:
    """Downloads in this context report to ``progress`` (e.g. a progress bar with size and speed)."""
    token = _DOWNLOAD_PROGRESS.set(progress)
    try:
        yield
    finally:
        _DOWNLOAD_PROGRESS.reset(token)


@contextlib.contextmanager
def _silent(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    yield lambda size: None


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


def md5_copy(
    source: BinaryIO,
    out: IO[bytes] | None = None,
    chunk_bytes: int = 1 << 20,
    advance: Callable[[int], None] = lambda size: None,
) -> str:
    """MD5 of everything ``source`` still holds, copying it to ``out`` on the way (unless None);
    ``advance`` is called with each chunk's size."""
    digest = hashlib.md5()
    while chunk := source.read(chunk_bytes):
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
        advance(len(chunk))
    return digest.hexdigest()


def download(url: str, destination: Path, expected_md5: str, error: ErrorFactory) -> Path:
    """Download ``url`` to ``destination`` atomically; a wrong MD5 leaves nothing behind. The transfer is
    shown as :func:`shown_downloads` set it (silent otherwise)."""
    log.info("downloading %s to %s", url, destination)
    progress = _DOWNLOAD_PROGRESS.get() or _silent
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with atomic_open(destination, "wb") as out, progress(destination.name, total) as advance:
                if (md5 := md5_copy(response, out, advance=advance)) != expected_md5:
                    raise error(f"the download {url} has MD5 {md5}, expected {expected_md5}")
    except DataError:
        raise
    # URLError and timeouts are OSErrors; a malformed URL is a ValueError.
    except (OSError, ValueError) as err:
        raise error(f"could not download {url} to {destination} ({err})") from err
    return destination


def _decoded_cache_paths(directory: Path, stem: str) -> tuple[Path, Path, Path]:
    """The images, labels and fingerprint files of one cached split. ``stem`` names the content it must
    hold (see the callers), so changed constants or source files never read stale arrays."""
    return directory / f"{stem}-images.npy", directory / f"{stem}-labels.npy", directory / f"{stem}.blake2b"


def fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """BLAKE2b of the arrays' bytes (about 0.1 s for Fashion-MNIST's 70,000 images)."""
    digest = hashlib.blake2b(digest_size=16)
    for array in (images, labels):
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _read_decoded_cache(
    directory: Path, stem: str, count: int, image_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays if present with the right dtype and shapes and the fingerprint recorded when
    they were written, else None. The IDX files were checked (MD5) before the cache was written; the
    fingerprint catches a cache damaged or altered since. A broken or altered cache is a miss, not an
    error: the raw files rebuild it (with a warning when it was altered)."""
    images_path, labels_path, fingerprint_path = _decoded_cache_paths(directory, stem)
    try:
        images, labels = np.load(images_path), np.load(labels_path)
        recorded = fingerprint_path.read_text().strip()
    except (OSError, ValueError):
        return None
    shapes_ok = images.shape == (count, *image_shape) and labels.shape == (count,)
    dtypes_ok = images.dtype == np.uint8 and labels.dtype == np.uint8
    if not (shapes_ok and dtypes_ok):
        return None
    if fingerprint(images, labels) != recorded:
        warnings.warn(
            f"the decoded dataset cache {images_path.parent / stem}-* was altered; rebuilding it", stacklevel=3
        )
        return None
    return images, labels


def _write_decoded_cache(directory: Path, stem: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Save the decoded arrays, then their fingerprint (a kill in between leaves a miss, not a cache
    without one); failing to (e.g. a read-only home) only costs speed, so it only warns."""
    images_path, labels_path, fingerprint_path = _decoded_cache_paths(directory, stem)
    try:
        for path, array in ((images_path, images), (labels_path, labels)):
            with atomic_open(path, "wb") as out:
                np.save(out, array)
        write_text(fingerprint_path, fingerprint(images, labels) + "\n")
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
