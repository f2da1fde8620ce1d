"""Typed dataclass configs from plain data: one recursive ``from_dict`` for every config class.

Configs are dataclasses; users and files hand them over as dicts (JSON in a model zip, keyword
options of ``gym.make``, ``race={"weather": "wet"}``). `from_dict` builds the dataclass, nested
dataclass fields included, and names the offending key (``race.wether``) when one is unknown, so a
typo is a one-line error instead of a silently ignored option or an ``AttributeError`` deep inside.
A dotted key (``"ppo.gamma": 0.995``, as ``--set`` and overrides write it) sets one field of a nested
config and wins over the same field given inside that config's mapping.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from kartsim.errors import ConfigError

T = TypeVar("T")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def dataclass_type(hint: Any) -> type | None:
    """The dataclass a field annotation names (``KartConfig``, ``KartConfig | None``), else None."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(hint) if isinstance(a, type) and dataclasses.is_dataclass(a)]
        if len(found) == 1:
            return found[0]
    return None


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """`cls` built from the mapping `data`; nested dataclass fields may be mappings or instances.

    `prefix` is where `data` sits in a larger config (``"race"``) for the messages. An instance of
    `cls` is returned as it is. Raises ConfigError naming the key for unknown keys, for a nested
    config that is neither a mapping nor the dataclass, and for values the class rejects.
    """
    if isinstance(data, cls):
        return data
    what = prefix or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what} must be a {cls.__name__} or a dict of its fields, got {type(data).__name__}")
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in _undotted(cls, data, prefix).items():
        if key not in fields:
            raise ConfigError(f"unknown config key {_key(prefix, str(key))!r}; "
                              f"{cls.__name__} keys: {', '.join(sorted(fields))}")
        kwargs[key] = nested_value(cls, key, value, prefix)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {what}: {exc}") from None


def _undotted(cls: type, data: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """`data` with its dotted keys (``ppo.gamma``) moved into the mapping of their nested config."""
    out = {k: v for k, v in data.items() if not (isinstance(k, str) and "." in k)}
    for key, value in data.items():
        if key in out:
            continue
        head, rest = key.split(".", 1)
        sub = dataclass_type(_hints(cls).get(head))
        if sub is None:
            raise ConfigError(f"unknown config key {_key(prefix, key)!r}; {head!r} is not a nested config of "
                              f"{cls.__name__}")
        inner = out.get(head)
        if isinstance(inner, sub):
            inner = dataclasses.asdict(inner)  # from_dict rebuilds it, the override included
        elif inner is None:
            inner = {}
        elif not isinstance(inner, Mapping):
            raise ConfigError(f"{_key(prefix, head)} must be a {sub.__name__} or a dict of its fields")
        out[head] = {**inner, rest: value}
    return out


def nested_value(cls: type, name: str, value: Any, prefix: str = "") -> Any:
    """`value` for field `name` of `cls`: a mapping becomes the field's dataclass (recursively)."""
    sub = dataclass_type(_hints(cls).get(name))
    if sub is None or value is None or isinstance(value, sub):
        return value
    return from_dict(sub, value, _key(prefix, name))


def coerce_nested(obj: Any) -> None:
    """In a dataclass's ``__post_init__``: turn nested fields given as dicts into their dataclasses,
    so ``EnvConfig(race={"weather": "wet"})`` and ``dataclasses.replace(cfg, kart={...})`` work;
    anything else that is not the field's dataclass raises ConfigError naming the field."""
    for f in dataclasses.fields(obj):
        if dataclass_type(_hints(type(obj)).get(f.name)) is not None:
            setattr(obj, f.name, nested_value(type(obj), f.name, getattr(obj, f.name)))


__all__ = ["from_dict", "coerce_nested", "nested_value", "dataclass_type"]
