"""A run folder belongs to one process.

:func:`claim` takes an exclusive ``flock`` on the folder itself (no lock file: nothing is written) before
anything is written into it; a second process gets a ConfigError. The kernel drops a process's locks
when it ends, however it ends, so a lock never outlives its process: a folder whose owner was killed is
free at once, with nothing stale to detect or clean up. A sweep folder is claimed exclusively by the
sweep; a process that resumes one of its jobs claims the sweep folder shared (several such processes may
work side by side, never beside the sweep itself).

Claims are per process and last until :func:`release_all` (the commands call it on exit).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from deeprun.registry import ConfigError

#: What a folder deeprun made may hold and still count as empty (removed when its command fails).
SCAFFOLDING = frozenset({".hydra", "multirun.yaml"})


class FolderInUse(ConfigError):
    """Another process owns the folder."""


@dataclass
class _Claim:
    fd: int
    shared: bool
    created: list[Path] = field(default_factory=list)  # the folder and the parents this claim made


_claims: dict[Path, _Claim] = {}


def claim(folder: Path, shared: bool = False) -> Path:
    """Own ``folder`` (created with its missing parents) until :func:`release_all`; returns its
    absolute path. FolderInUse if another process holds it (exclusively, or at all for ``shared=False``)."""
    folder = Path(os.path.abspath(folder))
    held = _claims.get(folder)
    if held is not None and (shared or not held.shared):
        return folder
    created = [path for path in (folder, *folder.parents) if not path.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    fd = held.fd if held is not None else os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            # A file system without flock (some network mounts): the folder stays usable, unguarded.
            _claims[folder] = _Claim(fd, shared, created)
            return folder
        if held is None:
            os.close(fd)
        _remove_created(created)
        raise FolderInUse(
            f"{folder} is in use by another deeprun process (a run or sweep folder belongs to one process; "
            "wait for it to end)"
        ) from None
    _claims[folder] = _Claim(fd, shared, held.created if held is not None else created)
    return folder


def release_all(discard: bool = False) -> None:
    """Drop every claim of this process; ``discard``: also remove each claimed folder this process
    created that holds nothing but :data:`SCAFFOLDING` (and the parents made with it, when empty)."""
    while _claims:
        folder, held = _claims.popitem()
        os.close(held.fd)
        if discard and held.created and folder.is_dir() and {p.name for p in folder.iterdir()} <= SCAFFOLDING:
            shutil.rmtree(folder, ignore_errors=True)
            _remove_created(held.created[1:])


def _remove_created(created: list[Path]) -> None:
    """Remove the folders a claim made, innermost first, while they are empty."""
    for path in created:
        try:
            path.rmdir()
        except OSError:
            return


def holds_run(folder: Path) -> str | None:
    """What makes ``folder`` a run or sweep folder (a marker file's name), or None."""
    for marker in ("summary.json", "metrics.jsonl", "multirun.yaml", ".hydra"):
        if (folder / marker).exists():
            return marker
    return None
