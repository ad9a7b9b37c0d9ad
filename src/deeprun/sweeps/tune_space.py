"""``deeprun-tune``'s search space and options (the ``tune`` config section)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from deeprun.monitor import Monitor, monitor_mode
from deeprun.registry import ConfigError, from_mapping, require, require_non_negative, require_positive
from deeprun.settings import CONFIG_DIR, config_groups

STUDY_DB = "study.db"
TRIALS_CSV = "trials.csv"
TRIALS_MD = "trials.md"

# A trial's `status` (a user attribute in the study): how its run ended. These two were cut off by the
# process ending, not by their parameters; they do not count towards n_trials and are tried again.
RETRIED = ("interrupted", "crashed")

# Composes the deeprun config (without the `tune` section) with extra group overrides ("optimizer=adam");
# raises ConfigError for an override Hydra rejects.
Compose = Callable[[Sequence[str]], dict[str, Any]]


# --------------------------------------------------------------------------------------------------
# The search space and the options
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    """One searched value: ``float``/``int`` in [low, high] (``log``: uniform in log space; ``step``:
    on the grid low + k·step), or one of ``choices``. In the space it belongs to a dotted config path,
    or to a config group's name, whose choices are the group's options (``conf/<group>/<choice>.yaml``)."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def check(self, where: str) -> None:
        """The checks across fields (``where``: ``tune.space.<path>``), one-line ConfigErrors."""
        if self.type == "categorical":
            require(len(self.choices) > 0, f"{where}.choices", "must not be empty", list(self.choices))
            for name in ("low", "high", "step"):
                require(getattr(self, name) is None, f"{where}.{name}", "is for float and int types", name)
            require(not self.log, f"{where}.log", "is for float and int types", self.log)
            return
        require(not self.choices, f"{where}.choices", "is for the categorical type", list(self.choices))
        low, high = self.low, self.high
        if low is None or high is None:
            raise ConfigError(f"{where} needs low and high (got {self.type!r})")
        require(low < high, f"{where}.low", f"must be < high ({high})", low)
        if self.log:
            require(low > 0, f"{where}.low", "must be > 0 with log: true", low)
            require(self.step is None, f"{where}.step", "cannot be combined with log: true", self.step)
        if self.step is not None:
            require_positive(f"{where}.step", self.step)
        if self.type == "int":
            for name in ("low", "high", "step"):
                value = getattr(self, name)
                require(value is None or float(value).is_integer(), f"{where}.{name}", "must be an integer", value)

    def suggest(self, trial, path: str) -> Any:
        """Sample this dimension as ``trial``'s parameter ``path``; returns the config value."""
        if self.type == "float":
            return trial.suggest_float(path, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(
                path, int(self.low or 0), int(self.high or 0), log=self.log, step=int(self.step or 1)
            )
        if all(_is_plain(choice) for choice in self.choices):
            return trial.suggest_categorical(path, list(self.choices))
        # Optuna stores only plain values as choices: lists (layer sizes) go in as their JSON text.
        return json.loads(trial.suggest_categorical(path, [json.dumps(c) for c in self.choices]))


def is_group(path: str) -> bool:
    """A space path without a dot names a config group (its choices are the group's options)."""
    return "." not in path


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


@dataclass(frozen=True)
class TuneOptions:
    """The ``tune`` section (``dir`` is Hydra's run folder and is read from Hydra, not from here)."""

    n_trials: int = 20
    metric: Monitor = "val/accuracy"
    direction: Literal["auto", "minimize", "maximize"] = "auto"
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = 0
    pruner: Literal["median", "none"] = "median"
    pruner_startup_trials: int = 5
    pruner_warmup_epochs: int = 1
    space: Mapping[str, Dimension] = field(default_factory=dict)  # path -> dimension

    def __post_init__(self) -> None:
        require_positive("tune.n_trials", self.n_trials)
        require_non_negative("tune.seed", self.seed)
        require_non_negative("tune.pruner_startup_trials", self.pruner_startup_trials)
        require_non_negative("tune.pruner_warmup_epochs", self.pruner_warmup_epochs)

    @property
    def optuna_direction(self) -> str:
        if self.direction != "auto":
            return self.direction
        return "maximize" if monitor_mode(self.metric, "auto") == "max" else "minimize"


def parse_space(space: Any) -> dict[str, Dimension]:
    """``{path: {type: ..., ...}}`` → dimensions, each checked (one-line ConfigError)."""
    if not space:
        files = sorted(p.stem for p in Path(CONFIG_DIR, "tune", "space").glob("*.yaml"))
        raise ConfigError(
            "tune.space is empty: choose a space file (tune/space=NAME; available: "
            f"{', '.join(files)}) or give one, e.g. "
            "'tune.space={optimizer.learning_rate: {type: float, low: 1e-4, high: 1e-1, log: true}}'"
        )
    require(isinstance(space, Mapping), "tune.space", "must map config paths to distributions", space)
    dimensions = {}
    for path, spec in space.items():
        where = f"tune.space.{path}"
        require(isinstance(spec, Mapping), where, "must be a mapping with a type", spec)
        require("type" in spec, where, "needs a type: float, int or categorical", dict(spec))
        dimension = from_mapping(Dimension, spec, where)
        dimension.check(where)
        dimensions[str(path)] = dimension
    return dimensions


def tune_options(section: Mapping[str, Any]) -> TuneOptions:
    """Validate the ``tune`` config section (without ``dir``)."""
    values = {key: value for key, value in section.items() if key not in ("dir", "space")}
    return replace(from_mapping(TuneOptions, values, "tune"), space=parse_space(section.get("space")))


def check_space(space: Mapping[str, Dimension], config: Mapping[str, Any]) -> None:
    """Every path must name a config group (with its options as choices) or a field of the composed
    config. Fields under a group the space also switches are checked per trial (they depend on the
    option sampled)."""
    switched = {path for path in space if is_group(path)}
    for path, dimension in space.items():
        if is_group(path):
            options = group_options(path)
            require(
                bool(options),
                f"tune.space.{path}",
                f"is not a config group; groups: {', '.join(sorted(config_groups()))}",
                path,
            )
            require(
                dimension.type == "categorical",
                f"tune.space.{path}.type",
                "must be categorical for a config group",
                dimension.type,
            )
            for choice in dimension.choices:
                require(
                    choice in options,
                    f"tune.space.{path}.choices",
                    f"must be options of the group ({', '.join(options)})",
                    choice,
                )
        elif path.split(".")[0] not in switched:
            require_path(config, path)


def group_options(group: str) -> list[str]:
    """The options of config group ``group`` (empty if there is no such group)."""
    if group not in config_groups():
        return []
    return sorted(p.stem for p in Path(CONFIG_DIR, group).glob("*.yaml"))


def require_path(config: Mapping[str, Any], path: str) -> None:
    """ConfigError naming the valid keys unless the dotted ``path`` is a field of ``config``."""
    keys, node = path.split("."), config
    for depth, key in enumerate(keys):
        if not isinstance(node, Mapping) or key not in node:
            where = ".".join(keys[:depth]) or "the config"
            valid = ", ".join(sorted(node)) if isinstance(node, Mapping) else "nothing (not a mapping)"
            raise ConfigError(f"tune.space: {path!r} is not in the config; {where} has: {valid}")
        node = node[key]


def set_path(config: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``config`` with the existing field at dotted ``path`` set to ``value``."""
    require_path(config, path)
    head, _, rest = path.partition(".")
    return {**config, head: set_path(config[head], rest, value) if rest else value}
