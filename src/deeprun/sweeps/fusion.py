"""Which runs of a sweep can train together as one vmapped program (see ``train.fit_many``).

Two runs fuse when their configs are equal except at *numeric* fields that the compiled program reads
as data rather than as constants:

- ``trainer.seed`` (the PRNG key) and the whole ``initializer`` group (it only sets initial values);
- the optimizer's injected hyperparameters: ``learning_rate`` and its momentum (``momentum`` or ``beta_1``);
- every number of the ``schedule`` and ``regularizer`` groups (rates, decay constants, factors, dropout
  rate, max-norm), and the early-stopping and plateau constants (handled per run on the host);
- ``name`` and the ``logger`` group (host-side only: it reads what training produces).

Everything else (data, model, activation, normalization, batch size, epochs, the optimizer's other
constants, choices and flags) must be equal, since it changes shapes or the program itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from deeprun.techniques.optimizers import OPTIMIZERS

_IGNORED_TOP_LEVEL = {"name", "initializer", "logger"}
_TRAINER_NUMBERS = {"seed", "resume"}  # resume: each run's own folder, host-side
_EARLY_STOPPING_NUMBERS = {"patience", "min_delta"}


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


# Integer fields that are structure, not data (max_norm's axis is a static argument).
_STRUCTURAL_NUMBERS = {"axis"}


def _without_numbers(group: Mapping[str, Any]) -> dict[str, Any]:
    """A group's fields without its numeric leaves (lists, strings and flags stay: they are structure)."""
    return {
        k: (_without_numbers(v) if isinstance(v, Mapping) else v)
        for k, v in group.items()
        if not _is_number(v) or k in _STRUCTURAL_NUMBERS
    }


def fusion_key(config: Mapping[str, Any]) -> str:
    """Runs with equal keys can be fused. ``config`` is a composed config as a plain mapping."""
    structure = {k: v for k, v in config.items() if k not in _IGNORED_TOP_LEVEL}
    optimizer = dict(config["optimizer"])
    injected = {"learning_rate", OPTIMIZERS.get(optimizer["name"]).momentum_hyperparam}
    structure["optimizer"] = {k: v for k, v in optimizer.items() if k not in injected}
    structure["schedule"] = _without_numbers(config["schedule"])
    structure["regularizer"] = _without_numbers(config.get("regularizer") or {})
    trainer = {k: v for k, v in config["trainer"].items() if k not in _TRAINER_NUMBERS}
    trainer["early_stopping"] = {k: v for k, v in trainer["early_stopping"].items() if k not in _EARLY_STOPPING_NUMBERS}
    structure["trainer"] = trainer
    return json.dumps(structure, sort_keys=True, default=str)


def group_runs(configs: Sequence[Mapping[str, Any]], max_members: int) -> list[list[int]]:
    """Partition run indices into fusable groups of at most ``max_members``, keeping sweep order."""
    by_key: dict[str, list[int]] = {}
    for index, config in enumerate(configs):
        by_key.setdefault(fusion_key(config), []).append(index)
    groups: list[list[int]] = []
    for indices in by_key.values():
        groups.extend(indices[i : i + max_members] for i in range(0, len(indices), max(max_members, 1)))
    return sorted(groups, key=lambda group: group[0])
