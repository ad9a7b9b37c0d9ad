"""What a run's process was: versions, device, CPUs and the resource variables set, for ``summary.json``."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

#: Environment variables that decide a job's CPU threads and GPU memory, recorded in its summary.
RESOURCE_ENV = (
    "PJRT_NPROC",
    "XLA_FLAGS",
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
)


#: XLA's CPU threads per training process unless ``PJRT_NPROC`` says otherwise. XLA's CPU matmuls sum in
#: blocks sized by the thread count, so a run's numbers depend on it: one fixed count makes them the same
#: alone, in a sweep's worker process or anywhere else on the machine. One, because at the chapter's
#: batch sizes one thread trains as fast as two (batch 32 on 2 cores: 1.31 s vs 1.46 s per epoch), and a
#: sweep then runs one worker per core (``hydra.launcher.workers``).
DEFAULT_CPU_THREADS = 1


def pin_cpu_threads() -> int:
    """Give this process's XLA CPU client :data:`DEFAULT_CPU_THREADS` threads unless ``PJRT_NPROC`` is
    set (read when JAX starts its CPU backend, so call this first); returns the count."""
    os.environ.setdefault("PJRT_NPROC", str(DEFAULT_CPU_THREADS))
    return int(os.environ["PJRT_NPROC"])


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def process_environment() -> dict[str, Any]:
    """This process as a job sees it: pid, host, usable CPUs and the :data:`RESOURCE_ENV` that are set."""
    return {
        "pid": os.getpid(),
        "host": platform.node(),
        "cpus": usable_cpus(),
        "env": {name: os.environ[name] for name in RESOURCE_ENV if name in os.environ},
    }


def dependency_versions() -> dict[str, str]:
    """deeprun's, Python's and those of every installed dependency of deeprun (from its metadata)."""
    from deeprun.version import __version__

    versions = {"deeprun": __version__, "python": platform.python_version()}
    try:
        requirements = metadata.requires("deeprun") or []
    except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
        requirements = []
    for requirement in requirements:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def source_revision() -> dict[str, Any] | None:
    """The git commit of the checkout deeprun runs from and whether it has uncommitted changes (None
    for an installed wheel, or without git)."""
    package = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(package), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        top = Path(git("rev-parse", "--show-toplevel"))
        if not package.is_relative_to(top):
            return None
        return {
            "git_commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        }
    except (OSError, subprocess.SubprocessError):
        return None


_COMMAND_LINE: list[str] = []


def record_command_line(argv: list[str]) -> None:
    """The command line as the user typed it (before deeprun rewrote its overrides for Hydra)."""
    _COMMAND_LINE[:] = argv


def command_line() -> list[str]:
    """The command line :func:`record_command_line` recorded (empty: none)."""
    return list(_COMMAND_LINE)


def environment() -> dict[str, Any]:
    """Versions of deeprun and every dependency, the source revision (a checkout's commit and dirty
    flag), the plugins loaded, the command line, device and process (pid, host, CPUs, the XLA/CUDA variables set)."""
    import jax

    from deeprun.plugins import loaded

    device = jax.devices()[0]
    return {
        "versions": dependency_versions(),
        "plugins": loaded(),
        "source": source_revision(),
        "command": list(_COMMAND_LINE or sys.argv),
        "device": {"platform": device.platform, "kind": device.device_kind, "count": jax.device_count()},
        "process": process_environment(),
    }
