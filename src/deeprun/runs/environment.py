"""What a run's process was: versions, device, CPUs and the resource variables set, for ``summary.json``."""

from __future__ import annotations

import os
import platform
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


def environment() -> dict[str, Any]:
    """Versions, device and process (pid, host, CPUs, the XLA/CUDA variables set), for the summary."""
    import flax
    import jax
    import optax

    import deeprun

    device = jax.devices()[0]
    return {
        "versions": {
            "deeprun": deeprun.__version__,
            "python": platform.python_version(),
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
        },
        "device": {"platform": device.platform, "kind": device.device_kind, "count": jax.device_count()},
        "process": process_environment(),
    }
