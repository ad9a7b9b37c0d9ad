"""Registries of named, validated builders: the link between a config group and its module.

Every user-facing config group (``conf/<group>/*.yaml``) is a mapping of ``name:`` plus keyword
fields. The module of that group owns a :class:`Registry` whose entries are frozen dataclasses: the
dataclass *is* the schema (field names, types and Keras-faithful defaults) and its methods build the
JAX/Optax object. :meth:`Registry.build` turns a plain mapping into a validated instance, so a bad value
is rejected with one line naming the field before anything is compiled.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: Every integer field (a count, a size, a seed) is a 32-bit integer in the compiled program.
INT32_MAX = 2**31 - 1


class ConfigError(ValueError):
    """A user's configuration is invalid. The message is one line that names the field."""


def require(condition: bool, where: str, message: str, value: Any) -> None:
    """Raise :class:`ConfigError` ``"<where> <message> (got <value>)"`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{where} {message} (got {value!r})")


def require_positive(where: str, value: float | int) -> None:
    require(value > 0, where, "must be > 0", value)


def require_non_negative(where: str, value: float | int) -> None:
    require(value >= 0, where, "must be >= 0", value)


def require_in_unit_interval(where: str, value: float) -> None:
    """0 <= value < 1 (rates and momenta)."""
    require(0 <= value < 1, where, "must be in [0, 1)", value)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a (simple) type annotation, converting where YAML is loose (int → float)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if dataclasses.is_dataclass(annotation):
        require(isinstance(value, Mapping), where, "must be a mapping", value)
        return from_mapping(typing.cast(type, annotation), value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is typing.Literal:
        require(value in args, where, f"must be one of {', '.join(map(str, args))}", value)
        return value
    if origin in (tuple, list, Sequence) or annotation in (tuple, list):
        require(isinstance(value, Sequence) and not isinstance(value, str), where, "must be a list", value)
        item_type = args[0] if args else Any
        return tuple(_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if annotation is bool:
        require(isinstance(value, bool), where, "must be true or false", value)
        return value
    if annotation is int:
        require(isinstance(value, int) and not isinstance(value, bool), where, "must be an integer", value)
        require(-INT32_MAX <= value <= INT32_MAX, where, f"must fit in 32 bits (|value| <= {INT32_MAX})", value)
        return value
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        require(ok, where, "must be a number", value)
        require(math.isfinite(value), where, "must be a finite number", value)
        return float(value)
    if annotation is str:
        require(isinstance(value, str), where, "must be a string", value)
        return value
    return value


def from_mapping(cls: type[T], values: Mapping[str, Any], where: str) -> T:
    """Instantiate dataclass ``cls`` from ``values``, rejecting unknown fields and wrong types.

    ``where`` prefixes error messages (e.g. ``"optimizer.nadam"``; ``""`` for a command's top-level
    options, whose fields are named alone). Range checks live in each
    dataclass's ``__post_init__``.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(typing.cast(Any, cls)) if f.init}
    prefix = f"{where}: " if where else ""
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}unknown field {unknown[0]!r}; valid fields: {', '.join(sorted(fields))}")
    missing = [
        name
        for name, f in fields.items()
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{prefix}missing required field {missing[0]!r}")
    kwargs = {name: _coerce(value, hints[name], f"{where}.{name}" if where else name) for name, value in values.items()}
    return cls(**kwargs)


def field_defaults(cls: type) -> dict[str, Any]:
    """Every init field of dataclass ``cls`` with a default, as YAML-ready values (tuples as lists,
    nested dataclasses as mappings): the full form of a partial config entry."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            values[f.name] = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = _plain(f.default_factory())
    return values


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    return value


def complete_fields(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every field of ``cls`` it leaves out at its default, nested dataclass fields
    completed the same way. Unknown fields are kept (validation names them)."""
    hints = typing.get_type_hints(cls)
    completed = field_defaults(cls) | dict(values)
    for name, value in values.items():
        nested = hints.get(name)
        if dataclasses.is_dataclass(nested) and isinstance(value, Mapping):
            completed[name] = complete_fields(typing.cast(type, nested), value)
    return completed


def parse_value(text: str) -> Any:
    """A command-line value: JSON where it parses (``0.01``, ``1e-3``, ``true``, ``null``, ``[1, 32]``),
    otherwise the text itself (``float16``)."""
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def options_from_tokens(cls: type[T], tokens: Sequence[str]) -> T:
    """A command's ``key=value`` tokens into the validated dataclass ``cls``; errors name the bare field."""
    values: dict[str, Any] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {token!r}")
        values[key] = parse_value(value)
    return from_mapping(cls, values, "")


def numeric_pytree(data: Sequence[str], meta: Sequence[str] = ()) -> Callable[[type[T]], type[T]]:
    """Register a validated dataclass as a JAX pytree: ``data`` fields are leaves (so the numbers of
    several runs can be stacked and vmapped), ``meta`` fields are static structure.

    Unflattening bypasses ``__init__``: the leaves may be tracers or stacked arrays, which the
    range checks of ``__post_init__`` (already passed by the original values) cannot judge.
    """
    import jax

    def register(cls: type[T]) -> type[T]:
        def flatten(obj):
            return [getattr(obj, name) for name in data], tuple(getattr(obj, name) for name in meta)

        def unflatten(static, leaves):
            obj = object.__new__(cls)
            for name, value in (*zip(data, leaves, strict=True), *zip(meta, static, strict=True)):
                object.__setattr__(obj, name, value)
            return obj

        jax.tree_util.register_pytree_node(cls, flatten, unflatten)
        return cls

    return register


class Registry(Generic[T]):
    """Named dataclass builders for one config group.

    >>> OPTIMIZERS = Registry("optimizer")
    >>> @OPTIMIZERS.register("sgd")
    ... @dataclasses.dataclass(frozen=True)
    ... class SGD:
    ...     learning_rate: float = 0.01
    >>> OPTIMIZERS.build({"name": "sgd", "learning_rate": 0.1})
    SGD(learning_rate=0.1)
    """

    def __init__(self, group: str):
        self.group = group
        self._entries: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorate(cls: type[T]) -> type[T]:
            if name in self._entries:
                raise KeyError(f"{self.group}: {name!r} is registered twice")
            if not dataclasses.is_dataclass(cls):
                raise TypeError(f"{self.group}.{name}: register a dataclass")
            self._entries[name] = cls
            return cls

        return decorate

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> type[T]:
        if name not in self._entries:
            raise ConfigError(f"{self.group}: unknown option {name!r}; valid options: {', '.join(self.names())}")
        return self._entries[name]

    def build(self, config: Mapping[str, Any]) -> T:
        """Validate ``{"name": ..., **fields}`` and return the dataclass instance."""
        if not isinstance(config, Mapping) or "name" not in config:
            raise ConfigError(f"{self.group}: expected a mapping with a 'name' field (got {config!r})")
        fields = dict(config)
        name = fields.pop("name")
        return from_mapping(self.get(name), fields, f"{self.group}.{name}")

    def complete(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``{"name": ..., **fields}`` with every field of the option, defaults filled in (an unknown
        option is returned as it is, for :meth:`build` to report)."""
        name = config.get("name") if isinstance(config, Mapping) else None
        if not isinstance(name, str) or name not in self._entries:
            return dict(config) if isinstance(config, Mapping) else config
        fields = {key: value for key, value in config.items() if key != "name"}
        return {"name": name, **complete_fields(self._entries[name], fields)}

    def complete_each(self, entry: Any) -> Any:
        """A ``{option: fields}`` entry (a group that selects several options at once) with each known
        option's fields completed; unknown names and malformed fields are kept, for validation to name."""
        if not isinstance(entry, Mapping):
            return entry
        return {
            name: complete_fields(self._entries[name], fields or {})
            if name in self._entries and isinstance(fields, Mapping | None)
            else fields
            for name, fields in entry.items()
        }

    def default(self, name: str) -> T:
        """The option with all its defaults (handy in tests and plots)."""
        return self.build({"name": name})


def plain_mapping(config: Any, resolve: bool = True) -> dict[str, Any]:
    """A ``DictConfig`` or the path of a YAML file as a plain ``dict``; ``resolve=False`` keeps
    interpolations (``${now:...}``) as text."""
    from pathlib import Path

    from omegaconf import DictConfig, OmegaConf

    if isinstance(config, (str, Path)):
        config = OmegaConf.load(config)
    container = OmegaConf.to_container(config, resolve=resolve) if isinstance(config, DictConfig) else config
    if not isinstance(container, dict):
        raise ConfigError(f"expected a mapping, got {type(container).__name__}")
    return typing.cast(dict[str, Any], container)
