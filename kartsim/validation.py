"""One check for every typed config dataclass (`EnvConfig`, `RaceConfig`, `RewardConfig`,
`KartConfig`, `TrainConfig`): each field holds its annotated type (``bool``, ``int``, ``float``,
``str``, optional, a list of strings), every number is finite, and the fields a class names in its
``LIMITS`` (``{field: (low, high)}``, inclusive) lie in range, and those in its ``CHOICES``
(``{field: (allowed, ...)}``) hold one of the allowed values. A wrong value is a ConfigError naming
the field, the allowed values and the value given, whatever way it came in (a CLI flag, an
``--env-option``, a saved JSON config, ``gym.make`` keywords)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from kartsim.errors import ConfigError


def _kinds(annotation: Any) -> set[str]:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    kinds = set()
    for part in text.replace(" ", "").split("|"):
        base = part.split("[", 1)[0]
        kinds.add(base if base in ("bool", "int", "float", "str", "None", "list", "tuple", "dict") else "other")
    return kinds


def _number(value: Any, whole: bool) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return None
    if whole:
        return int(value) if float(value).is_integer() else None
    return float(value)


def _checked(value: Any, kinds: set[str]) -> tuple[bool, Any]:
    """(ok, value converted to the field's type)."""
    if value is None:
        return "None" in kinds, value
    if "bool" in kinds and isinstance(value, bool):
        return True, value
    if "int" in kinds and (n := _number(value, whole=True)) is not None:
        return True, n
    if "float" in kinds and (n := _number(value, whole=False)) is not None:
        return True, n
    if "str" in kinds and isinstance(value, str):
        return True, value
    if kinds & {"list", "tuple"} and isinstance(value, (list, tuple)):
        return True, value
    if kinds & {"dict", "other"}:
        return True, value
    return False, value


def _expected(kinds: set[str]) -> str:
    words = {"bool": "true or false", "int": "a whole number", "float": "a finite number", "str": "a string",
             "list": "a list", "tuple": "a list"}
    return " or ".join(dict.fromkeys(words[k] for k in ("bool", "int", "float", "str", "list", "tuple")
                                     if k in kinds))


def _one_of(choices: tuple[Any, ...]) -> str:
    words = [str(c) for c in choices]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


# An upper limit this high means "no limit" (1e12: practically endless); the message leaves it out.
_ENDLESS = 1e9


def _readable(x: float) -> str:
    """1000000.0 -> "1,000,000", 0.0001 -> "0.0001" (":g" would write 1e+06)."""
    return f"{int(x):,}" if x == int(x) and abs(x) >= 1e4 else f"{x:g}"


def _range(low: float, high: float) -> str:
    return f"at least {_readable(low)}" if high >= _ENDLESS else f"between {_readable(low)} and {_readable(high)}"


def flag_name(f: dataclasses.Field) -> str:
    """The CLI flag of a config field: its ``metadata["cli"]["flag"]``, else ``--field-name``."""
    return f.metadata.get("cli", {}).get("flag") or f"--{f.name.replace('_', '-')}"


def check_config(obj: Any, section: str = "", flags: bool = False) -> None:
    """Check (and normalise: 3 -> 3.0 for a float, 2.0 -> 2 for an int) every field of the dataclass
    `obj` in place; ConfigError on the first bad one. `section` prefixes the names (``race.``);
    `flags` names them as CLI flags (``--clip-range``)."""
    limits: dict[str, tuple[float, float]] = getattr(type(obj), "LIMITS", {})
    choices: dict[str, tuple[Any, ...]] = getattr(type(obj), "CHOICES", {})
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = flag_name(f) if flags else (f"{section}.{f.name}" if section else f.name)
        kinds = _kinds(f.type)
        ok, value = _checked(value, kinds)
        if not ok:
            raise ConfigError(f"{name} must be {_expected(kinds)}, not {value!r}")
        if isinstance(value, (list, tuple)) and "str" in kinds and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name} must be a name or a list of names, not {value!r}")
        if isinstance(value, (list, tuple)) and "float" in f.type and not all(_number(v, False) is not None for v in value):
            raise ConfigError(f"{name} must be a list of finite numbers, not {value!r}")
        if f.name in limits and value is not None:
            low, high = limits[f.name]
            if not low <= value <= high:
                raise ConfigError(f"{name} must be {_range(low, high)}, not {value!r}")
        if f.name in choices and value is not None and value not in choices[f.name]:
            raise ConfigError(f"{name} must be {_one_of(choices[f.name])}, not {value!r}")
        object.__setattr__(obj, f.name, value)
