"""How much memory a run may use, checked before anything is allocated: a size that cannot fit is bad
input (one line, exit 2), not an out-of-memory crash after the run folder was made."""

from __future__ import annotations

import os

from deeprun.registry import ConfigError

GiB = 2**30


def available_host_bytes() -> int:
    """The memory the kernel can give this process now (``MemAvailable``; all physical memory where
    ``/proc/meminfo`` does not exist)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def require_fits(where: str, need_bytes: int, what: str, available_bytes: int | None = None) -> None:
    """ConfigError ``"<where>: <what> needs X GiB, but Y GiB are available"`` unless it fits."""
    have = available_host_bytes() if available_bytes is None else available_bytes
    if need_bytes > have:
        raise ConfigError(f"{where}: {what} needs {need_bytes / GiB:.1f} GiB, but {have / GiB:.1f} GiB are available")
