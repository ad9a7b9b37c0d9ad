"""Plugins: a user's module or package that registers new options in deeprun's groups.

A plugin registers with the decorators deeprun's own options use (``ACTIVATIONS.register("name")`` on a
frozen dataclass, and so on for every group's registry) and may ship YAMLs in a ``conf/`` folder beside its
module (``conf/<group>/<option>.yaml``). deeprun imports it

* from the Python entry point group ``deeprun.plugins`` of any installed distribution (its ``conf/`` joins
  Hydra's config search path automatically, see ``hydra_plugins.deeprun_launcher.plugin_configs``), or
* from the config field ``plugins`` (``deeprun plugins=[my_project.deeprun_ext]``), for a plain module
  on ``PYTHONPATH`` or under the current folder (its YAMLs: ``--config-dir``).

The run's saved config keeps ``plugins``, and its ``summary.json`` lists every plugin loaded (module, how,
version), so ``trainer.resume``, ``deeprun-eval``/``-prune``/``-export``/``-report`` and sweep workers
import the same ones before they read the config.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deeprun.registry import ConfigError

ENTRY_POINT_GROUP = "deeprun.plugins"


@dataclass(frozen=True)
class Plugin:
    """A loaded plugin: its module, how it was found (``entry point`` or ``config``) and the version of
    the distribution that provides it (None for a plain module)."""

    module: str
    source: str
    version: str | None = None


_LOADED: dict[str, Plugin] = {}


@functools.cache  # the installed distributions do not change while a process runs; every validation asks
def entry_points() -> tuple[importlib.metadata.EntryPoint, ...]:
    return tuple(sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda point: point.name))


def config_dirs() -> list[Path]:
    """The ``conf/`` folders of the entry point plugins, found without importing them."""
    folders = []
    for point in entry_points():
        try:
            spec = importlib.util.find_spec(point.module)
        except (ImportError, ValueError):
            continue  # reported, as one line, when the plugin is imported
        if spec is not None and spec.origin:
            folder = Path(spec.origin).parent / "conf"
            if folder.is_dir():
                folders.append(folder)
    return folders


def load_plugins(modules: Sequence[str] = ()) -> list[Plugin]:
    """Import every entry point plugin and ``modules`` (each once per process); the plugins loaded, in
    order. ConfigError naming the plugin when one cannot be imported."""
    if isinstance(modules, str) or not all(isinstance(name, str) and name for name in modules):
        raise ConfigError(f"plugins must be a list of module names (got {modules!r})")
    for point in entry_points():
        if point.module not in _LOADED:
            version = point.dist.version if point.dist is not None else None
            _import(point.module, f"plugins: the entry point {point.name!r} of {ENTRY_POINT_GROUP}")
            _LOADED[point.module] = Plugin(point.module, "entry point", version)
    for name in modules:
        if name not in _LOADED:
            _import(name, f"plugins: {name!r}")
            _LOADED[name] = Plugin(name, "config")
    wanted = {point.module for point in entry_points()} | set(modules)
    return [plugin for name, plugin in _LOADED.items() if name in wanted]


def loaded() -> list[dict[str, str | None]]:
    """The plugins this process has imported (for ``summary.json``)."""
    return [{"module": p.module, "source": p.source, "version": p.version} for p in _LOADED.values()]


def _import(module: str, where: str) -> None:
    try:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            # A plain local module, as `python -m` finds it: console scripts leave the current folder
            # off sys.path.
            if error.name != module.partition(".")[0] or os.getcwd() in sys.path:
                raise
            sys.path.append(os.getcwd())
            importlib.import_module(module)
    except Exception as error:
        raise ConfigError(f"{where} cannot be imported ({type(error).__name__}: {error})") from error
