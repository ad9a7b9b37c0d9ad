"""``deeprun-list [GROUP ...]``: every config group of ``deeprun``, its options and each option's fields
with their defaults.

The groups are those of ``conf/config.yaml``'s defaults list (the option it selects is marked ``*``). A
group backed by a registry (``registry.Registry``) lists every registered option with the fields of its
dataclass, valued as in ``conf/<group>/<option>.yaml`` (what a user gets; the dataclass default where the
YAML leaves a field out); ``trainer`` lists its one YAML with ``TrainerSettings``'s fields; ``preset`` and
``experiment`` list the groups and values each one sets. Descriptions are the YAML files' first comment.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeprun.commands.common import fail
from deeprun.exit_codes import ExitCode
from deeprun.registry import plain_mapping
from deeprun.settings import CONFIG_DIR, GROUPS, Group, config_groups


@dataclass(frozen=True)
class Option:
    name: str
    description: str
    fields: dict[str, Any]
    default: bool = False  # the option conf/config.yaml selects


def description(path: Path) -> str:
    """The YAML's leading comment (without Hydra's ``# @package`` line)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line.lstrip("# ").rstrip())
    return " ".join(lines)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (``early_stopping.patience``); lists stay values."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def dataclass_defaults(cls: type) -> dict[str, Any]:
    """The init fields of a dataclass and their defaults (nested dataclasses flattened)."""
    values = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
            is_instance = dataclasses.is_dataclass(default) and not isinstance(default, type)
            values[field.name] = dataclasses.asdict(default) if is_instance else default
        else:
            values[field.name] = None if field.default is dataclasses.MISSING else field.default
    return flatten(values)


def registry_options(group: Group, conf: Path) -> list[Option]:
    """Every registered option (and any YAML without one, like ``regularizer=none``) with YAML values."""
    registry = group.registry
    assert registry is not None

    names = sorted(set(registry.names()) | {path.stem for path in (conf / group.key).glob("*.yaml")})
    options = []
    for name in names:
        path = conf / group.key / f"{name}.yaml"
        values = plain_mapping(path, resolve=False) if path.is_file() else {}
        if group.several:  # its YAML is {option: fields}
            values = values.get(name) or {}
        values = flatten({k: v for k, v in values.items() if k != "name"})
        fields = {**dataclass_defaults(registry.get(name)), **values} if name in registry else values
        options.append(Option(name, description(path) if path.is_file() else "", fields))
    return options


def yaml_options(group: str, conf: Path) -> list[Option]:
    """A group without a registry: each YAML's values; a preset's ``override /g: o`` lines as ``g: o``."""

    options = []
    for path in sorted((conf / group).glob("*.yaml")):
        values = plain_mapping(path, resolve=False)
        overrides = {
            key.removeprefix("override /"): option
            for entry in values.pop("defaults", [])
            if isinstance(entry, dict)
            for key, option in entry.items()
        }
        fields = {**overrides, **flatten({k: v for k, v in values.items() if k != "name"})}
        if group == "trainer":
            from deeprun.settings import TrainerSettings

            fields = {**dataclass_defaults(TrainerSettings), **fields}
        options.append(Option(path.stem, description(path), fields))
    return options


def catalog(selected: list[str] | None = None) -> dict[str, list[Option]]:
    """Group → its options, for ``selected`` groups (all by default); ConfigError for an unknown group."""
    from deeprun.registry import ConfigError

    conf = CONFIG_DIR
    defaults = config_groups()
    unknown = [group for group in selected or [] if group not in defaults]
    if unknown:
        raise ConfigError(f"unknown group {unknown[0]!r}; valid groups: {', '.join(defaults)}")
    backed = {group.key: group for group in GROUPS if group.registry is not None}
    result = {}
    for group in selected or list(defaults):
        options = registry_options(backed[group], conf) if group in backed else yaml_options(group, conf)
        result[group] = [dataclasses.replace(option, default=option.name == defaults[group]) for option in options]
    return result


def format_value(value: Any) -> str:
    """YAML-like: null, true/false, lists in brackets."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def group_table(group: str, options: list[Option]):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{group} ({group}=OPTION; * the default)", title_justify="left", show_lines=True)
    table.add_column("option", no_wrap=True)
    table.add_column("fields (defaults)", no_wrap=True)
    table.add_column("description")
    for option in options:
        fields = "\n".join(f"{key} = {format_value(value)}" for key, value in option.fields.items())
        # Text, not markup: descriptions say logger=[tensorboard,mlflow] and deeprun[mlflow]
        table.add_row(
            escape(f"{option.name}{' *' if option.default else ''}"), escape(fields or "-"), escape(option.description)
        )
    return table


def main(argv: list[str] | None = None) -> None:
    from deeprun.registry import ConfigError

    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(ExitCode.OK)
    from deeprun.plugins import load_plugins

    try:
        load_plugins()  # the installed plugins' options are listed too
        listing = catalog(args)
    except ConfigError as error:
        fail(str(error), program="deeprun-list")
    from deeprun.commands.console import console

    for group, options in listing.items():
        console.print(group_table(group, options))


if __name__ == "__main__":
    main()
