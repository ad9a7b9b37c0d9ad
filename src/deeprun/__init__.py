"""deeprun: Hydra-driven experiment runner for chapter 11 of Hands-On ML, on JAX/Flax NNX/Optax.

The Python API (:mod:`deeprun.api`): ``deeprun.train``, ``load_run``, ``load_runs``, ``load_history``.
Importing the package does nothing else (the API is imported on first use; the commands,
``deeprun.commands``, set up their own process).
"""

from __future__ import annotations

from typing import Any

from deeprun.version import __version__

#: The API's names, imported from :mod:`deeprun.api` when first used.
API = ("train", "load_run", "load_runs", "load_history", "Run", "RunFailed")
__all__ = [*API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in API:
        from deeprun import api

        return getattr(api, name)
    raise AttributeError(f"module 'deeprun' has no attribute {name!r}")
