"""The one atomic writer: every file deeprun writes appears whole under its name, with the umask's mode.

A file is written to a temporary sibling (``.<name>.<random>.tmp``), flushed, given the mode a plain
``open()`` would have given it (``0666 & ~umask``; ``mkstemp`` alone would leave ``0600``) and renamed
over the target. An error or a kill before the rename leaves the old file (or none), never a partial one,
and no temporary file survives an error.

>>> path = write_json(Path(tmp) / "summary.json", {"status": "completed"})   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any


def umask_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` less the process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Yield a temporary file beside ``path`` (``"w"``: text, ``"wb"``: bytes) that replaces ``path``
    only when the block ends without an error; the folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, newline=None if "b" in mode else "") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> Path:
    with atomic_open(path) as file:
        file.write(text)
    return Path(path)


def write_lines(path: Path, lines: Iterable[str]) -> Path:
    with atomic_open(path) as file:
        file.writelines(lines)
    return Path(path)


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None: strict JSON has no NaN or Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def json_text(payload: Any, indent: int | None = 2) -> str:
    """Strict JSON (non-finite numbers as ``null``), ending in a newline."""
    return json.dumps(strict_json(payload), indent=indent, allow_nan=False) + "\n"


def write_json(path: Path, payload: Any) -> Path:
    return write_text(path, json_text(payload))


def write_figure(fig: Any, path: Path, **savefig_kwargs: Any) -> Path:
    """A matplotlib figure as PNG (``dpi`` 100 unless given)."""
    with atomic_open(path, "wb") as file:
        fig.savefig(file, format="png", **{"dpi": 100, **savefig_kwargs})
    return Path(path)


def append_line(path: Path, line: str) -> None:
    """Append one whole line to a log-like file (``metrics.jsonl``), flushed to disk before returning.
    The one write that is not a rename: readers ignore a truncated last line."""
    with open(path, "a") as file:
        file.write(line)
        file.flush()
        os.fsync(file.fileno())
