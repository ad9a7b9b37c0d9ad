"""Validated settings: the one place a plain config mapping becomes typed, checked objects.

``settings_from_config`` takes the composed config as a plain ``dict`` (the CLI converts Hydra's
DictConfig; tests pass dicts), resolves each group through its module's registry and checks the
combinations no single group can see. Every error is a :class:`ConfigError` with one line that names
the field, raised before any data is loaded or anything is compiled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from deeprun.data import DATASETS
from deeprun.loggers import LOGGERS, Loggers, build_loggers, complete_loggers
from deeprun.models import MODELS, ModelSpec
from deeprun.monitor import Monitor
from deeprun.plugins import Plugin, load_plugins
from deeprun.registry import (
    ConfigError,
    Registry,
    complete_fields,
    from_mapping,
    plain_mapping,
    require,
    require_non_negative,
    require_positive,
)
from deeprun.techniques.activations import ACTIVATIONS, ActivationSpec
from deeprun.techniques.initializers import INITIALIZERS, Initializer
from deeprun.techniques.normalization import NORMALIZATIONS, Normalization
from deeprun.techniques.optimizers import OPTIMIZERS, OptimizerSpec
from deeprun.techniques.precision import LossScaling, Precision
from deeprun.techniques.regularizers import REGULARIZERS, Regularization, build_regularization
from deeprun.techniques.schedules import SCHEDULES

#: The packaged configs: ``config.yaml`` (the defaults list) and one folder per group.
CONFIG_DIR = Path(__file__).resolve().parent / "conf"


@dataclass(frozen=True)
class EarlyStopping:
    """Keras ``EarlyStopping``; ``restore_best`` restores the best weights when it stops the run."""

    enabled: bool = True
    monitor: Monitor = "val/loss"
    mode: Literal["min", "max", "auto"] = "auto"
    patience: int = 10
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self) -> None:
        require_non_negative("trainer.early_stopping.patience", self.patience)
        require_non_negative("trainer.early_stopping.min_delta", self.min_delta)


@dataclass(frozen=True)
class Phase:
    """A stretch of training: ``freeze: reused`` keeps the layers taken from ``model.init_from`` fixed;
    ``learning_rate`` (if set) becomes the optimizer's rate when the phase starts. A later phase starts
    with a fresh optimizer state (moments and step count at zero, as Keras's ``compile`` between the
    book's frozen and unfrozen phases); ``keep_optimizer_state: true`` carries the previous phase's on."""

    epochs: int
    freeze: Literal["none", "reused"] = "none"
    learning_rate: float | None = None
    keep_optimizer_state: bool = False

    def __post_init__(self) -> None:
        require_positive("trainer.phases.epochs", self.epochs)
        if self.learning_rate is not None:
            require_positive("trainer.phases.learning_rate", self.learning_rate)


@dataclass(frozen=True)
class TrainerSettings:
    epochs: int = 10
    batch_size: int = 32
    seed: int = 42
    shuffle: bool = True
    drop_remainder: bool = False
    eval_batch_size: int = 1000
    checkpoint: bool = True
    plots: bool = True
    compilation_cache: bool = True
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    phases: tuple[Phase, ...] = ()
    resume: str | None = None  # an unfinished run's folder: continue it from its last complete epoch
    devices: int | Literal["all"] = 1  # data parallelism: each batch split over this many devices
    precision: Precision = "float32"  # compute dtype (parameters and optimizer state stay float32)
    loss_scale: LossScaling = field(default_factory=LossScaling)  # float16's dynamic loss scaling
    diagnostics: bool = False  # per-layer activation statistics and gradient norms each epoch
    diagnostics_batch: int = 256  # the first N validation examples: the fixed batch of the statistics
    # On a terminal, a bar within each epoch too (a host callback every 1/5 epoch); JAX's persistent cache
    # keeps no program with a host callback, so there each new process compiles its epoch program.
    step_progress: bool = True

    def __post_init__(self) -> None:
        require_positive("trainer.epochs", self.epochs)
        require_positive("trainer.batch_size", self.batch_size)
        require_positive("trainer.eval_batch_size", self.eval_batch_size)
        require_positive("trainer.diagnostics_batch", self.diagnostics_batch)
        require_non_negative("trainer.seed", self.seed)
        if self.devices != "all":
            require_positive("trainer.devices", self.devices)
        if self.phases:
            total = sum(phase.epochs for phase in self.phases)
            require(total == self.epochs, "trainer.epochs", f"must equal the phases' total ({total})", self.epochs)

    def phase_at(self, epoch: int) -> tuple[int, Phase] | None:
        """The index and phase of 0-based ``epoch`` (None without phases)."""
        start = 0
        for index, phase in enumerate(self.phases):
            if epoch < start + phase.epochs:
                return index, phase
            start += phase.epochs
        return None


@dataclass(frozen=True)
class Settings:
    """Everything one run needs, validated."""

    data: Any
    model: ModelSpec
    initializer: Initializer
    activation: ActivationSpec
    normalization: Normalization
    regularization: Regularization
    optimizer: OptimizerSpec
    schedule: Any
    trainer: TrainerSettings
    name: str = "run"
    logger: Loggers = field(default_factory=Loggers)  # host-side only: see deeprun.loggers
    plugins: tuple[Plugin, ...] = ()  # every plugin loaded (entry points and the config's ``plugins``)


@dataclass(frozen=True)
class Group:
    """A config group: its key in the composed config, the :class:`Settings` field it becomes, the
    registry of its options (None: ``trainer``, a single schema), how its entry is validated and
    completed (every field the entry leaves out at its option's default).
    ``absent``: what a config without the group (an older run's) means; None: the group is required.
    ``several``: the group selects several options at once, its entry ``{option: fields}``."""

    key: str
    field: str
    registry: Registry | None
    build: Callable[[Any], Any]
    complete: Callable[[Any], Any]
    absent: Mapping[str, Any] | None = None
    several: bool = False


#: The one table of config groups, in the order of ``conf/config.yaml``'s defaults list.
def _option_group(key: str, registry: Registry, absent: Mapping[str, Any] | None = None) -> Group:
    return Group(key, key, registry, registry.build, registry.complete, absent)


GROUPS = (
    _option_group("data", DATASETS),
    _option_group("model", MODELS),
    _option_group("initializer", INITIALIZERS),
    _option_group("activation", ACTIVATIONS),
    _option_group("normalization", NORMALIZATIONS),
    # A list of options at once ({name: fields}), merged into one Regularization.
    Group("regularizer", "regularization", REGULARIZERS, build_regularization, REGULARIZERS.complete_each, {}, True),
    _option_group("optimizer", OPTIMIZERS),
    _option_group("schedule", SCHEDULES),
    Group(
        "trainer",
        "trainer",
        None,
        lambda entry: from_mapping(TrainerSettings, entry, "trainer"),
        lambda entry: complete_fields(TrainerSettings, entry) if isinstance(entry, Mapping) else entry,
    ),
    # A list of options at once ({name: fields}), each its own tracking.
    Group("logger", "logger", LOGGERS, build_loggers, complete_loggers, absent={}, several=True),
)
GROUP_KEYS = tuple(group.key for group in GROUPS)
#: Top-level keys of a composed config that are not groups.
TOP_LEVEL_FIELDS = ("name", "plugins")


def config_groups() -> dict[str, str | None]:
    """Every config group of ``conf/config.yaml``'s defaults list (Hydra's own excluded: :data:`GROUPS`
    plus ``preset`` and ``experiment``) and the option it selects."""

    entries = plain_mapping(CONFIG_DIR / "config.yaml", resolve=False)["defaults"]
    return {
        group: option
        for entry in entries
        if isinstance(entry, dict)
        for group, option in entry.items()
        if not group.startswith("override ")
    }


def is_option_field(dotted: str) -> bool:
    """Whether ``group.field[.field...]`` names a field of one of the group's options (``trainer.*``: of
    the trainer's schema; ``regularizer.<option>.field``, ``logger.<option>.field``), registered plugins'
    options included.

    >>> is_option_field("optimizer.beta_1"), is_option_field("optimizer.beta")
    (True, False)
    """
    key, _, path = dotted.partition(".")
    group = next((group for group in GROUPS if group.key == key), None)
    if group is None or not path:
        return False
    if group.registry is None:
        return _has_field(TrainerSettings, path.split("."))
    if group.several:  # {option: fields}: group.option.field
        option, _, path = path.partition(".")
        return option in group.registry and (not path or _has_field(group.registry.get(option), path.split(".")))
    return any(_has_field(group.registry.get(name), path.split(".")) for name in group.registry.names())


def _has_field(cls: Any, parts: list[str]) -> bool:
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    if parts[0] not in {f.name for f in dataclasses.fields(cls) if f.init}:
        return False
    nested = hints[parts[0]]
    if len(parts) == 1:
        return True
    return dataclasses.is_dataclass(nested) and _has_field(nested, parts[1:])


def settings_from_config(config: Mapping[str, Any]) -> Settings:
    """Validate a composed config (a plain mapping) into :class:`Settings`, importing its plugins first."""
    plugins = load_plugins(config.get("plugins") or ())
    unknown = sorted(set(config) - set(GROUP_KEYS) - set(TOP_LEVEL_FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown top-level key {unknown[0]!r}; valid keys: {', '.join((*GROUP_KEYS, *TOP_LEVEL_FIELDS))}"
        )
    missing = [group.key for group in GROUPS if group.key not in config and group.absent is None]
    if missing:
        raise ConfigError(f"missing config group {missing[0]!r}")
    values = {group.field: group.build(config.get(group.key) or group.absent) for group in GROUPS}
    settings = Settings(**values, name=str(config.get("name", "run")), plugins=tuple(plugins))
    _check_combinations(settings)
    return settings


def complete_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The composed config with every field of every selected option, a partial YAML's omissions at the
    option's defaults: the config that runs, in full (what ``.hydra/config.yaml`` records). Plugins are
    imported first, so their options are completed too."""
    load_plugins(config.get("plugins") or ())
    completed = dict(config)
    for group in GROUPS:
        entry = completed.get(group.key)
        if entry is None and group.absent is not None:  # a deleted group (~logger) means its absent value
            entry = dict(group.absent)
        if entry is not None:
            completed[group.key] = group.complete(entry)
    return completed


def _check_combinations(settings: Settings) -> None:
    """Rules that span groups."""
    if getattr(settings.schedule, "cycle_momentum", False):
        require(
            settings.optimizer.momentum_hyperparam is not None,
            "schedule.cycle_momentum",
            f"needs an optimizer with momentum; {type(settings.optimizer).__name__} has none",
            True,
        )
    if any(phase.freeze == "reused" for phase in settings.trainer.phases):
        require(settings.model.init_from is not None, "trainer.phases.freeze", "reused needs model.init_from", "reused")
    if any(phase.learning_rate is not None for phase in settings.trainer.phases):
        resolved = settings.schedule.resolve(settings.optimizer.learning_rate, 1, settings.trainer.epochs)
        require(
            not resolved.sets_learning_rate,
            "trainer.phases.learning_rate",
            "needs a schedule that leaves the rate to the optimizer (constant or performance)",
            type(settings.schedule).__name__,
        )
    if settings.regularization.l2 is not None and getattr(settings.optimizer, "weight_decay", None):
        raise ConfigError(
            "regularizer: l2 together with adamw's weight_decay penalizes the weights twice; "
            "use one of them (the book: prefer AdamW's weight decay to l2 with Adam)"
        )


def advisories(settings: Settings) -> list[str]:
    """Valid but doubtful combinations, printed as warnings before training (the chapter's advice)."""
    from deeprun.techniques.regularizers import AlphaDropout

    notes = []
    if isinstance(settings.regularization.dropout, AlphaDropout) and settings.normalization.placement != "none":
        notes.append(
            "alpha dropout with batch norm: alpha dropout keeps a self-normalizing (SELU) net's "
            "mean and variance, which batch norm already fixes; the book pairs it with SELU and no BN"
        )
    return notes
