"""The search space of a sweep: ``--set FIELD=DIST`` over `TrainConfig` fields (``ppo.gamma``, or
the bare field name ``gamma``), ``--env KEY=DIST``
over env options, and ``--seeds 0-7``.

A distribution is ``loguniform:A:B`` / ``uniform:A:B`` (floats), ``int:A:B`` (whole numbers, both
ends included) or ``choice:X,Y,...`` (values of the field's own type). The fields that may be swept
are read from `TrainConfig` with `dataclasses.fields`, so new config fields are sweepable as they
are added.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from kartsim.errors import ConfigError

KINDS = ("loguniform", "uniform", "int", "choice")
# Fields a sweep sets itself (trial names, folders, seeds) or that make no sense per trial.
NOT_SWEPT = {"save_name", "resume", "trust_model", "force", "runs_dir", "models_dir", "seed", "env_options",
             "progress_bar", "verbose", "device"}


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: `name` is the TrainConfig field, or ``env.<option>`` for env options."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    @property
    def env_key(self) -> str | None:
        return self.name[4:] if self.name.startswith("env.") else None

    def grid_values(self) -> list[Any]:
        """The values a grid search visits (choices, or every whole number of an int range)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))
        raise ConfigError(f"--sampler grid needs choice: or int: dimensions, but {self.name} is {self.kind}:"
                          f"{self.low:g}:{self.high:g}; use --sampler tpe or random, or give choice:a,b,c")

    def suggest(self, trial: Any) -> Any:
        """The value of this dimension in an Optuna trial."""
        if self.kind == "loguniform":
            return trial.suggest_float(self.name, self.low, self.high, log=True)
        if self.kind == "uniform":
            return trial.suggest_float(self.name, self.low, self.high)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        return trial.suggest_categorical(self.name, list(self.choices))

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        return self.low <= value <= self.high and (self.kind != "int" or value == int(value))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "low": self.low, "high": self.high, "choices": list(self.choices)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dimension:
        return cls(data["name"], data["kind"], data.get("low"), data.get("high"), tuple(data.get("choices") or ()))


def _field_types() -> dict[str, Any]:
    """{dotted path (``ppo.gamma``): type} of every TrainConfig field, and the same under the bare
    field names of the layout before the parts (``gamma``), which ``--set`` still accepts."""
    from kartsim.rl.config import PARTS

    out: dict[str, Any] = {}
    for part, cls in PARTS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            out[f"{part}.{f.name}"] = out[f.name] = hints[f.name]
    return out


def _base_type(tp: Any) -> Any:
    """``int | None`` -> int; ``list[str]`` stays a list type."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{what}: {text!r} is not a finite number")
    return value


def _convert(value: str, tp: Any, what: str) -> Any:
    """A choice value as the field's type."""
    if tp is bool:
        low = value.strip().lower()
        if low not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{what}: {value!r} is not true or false")
        return low in ("true", "1", "yes")
    if tp is int:
        number = _number(value, what)
        if number != int(number):
            raise ConfigError(f"{what}: {value!r} is not a whole number")
        return int(number)
    if tp is float:
        return _number(value, what)
    if typing.get_origin(tp) is list:  # a track list: one choice = one track
        return value
    return value


def parse_distribution(name: str, text: str, tp: Any, flag: str) -> Dimension:
    """`text` like ``loguniform:1e-4:3e-3`` for the parameter `name` of type `tp`; ConfigError (one
    line naming the flag and the fix) when it cannot be a distribution of that parameter."""
    what = f"{flag} {name}={text}"
    kind, _, rest = text.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ConfigError(f"{what}: unknown distribution {kind!r}; use loguniform:A:B, uniform:A:B, int:A:B or "
                          "choice:X,Y")
    if kind == "choice":
        values = [v.strip() for v in rest.split(",") if v.strip()]
        if not values:
            raise ConfigError(f"{what}: choice needs at least one value, e.g. choice:2,3,4")
        choices = tuple(dict.fromkeys(_convert(v, tp, what) for v in values))
        return Dimension(name, kind, choices=choices)
    parts = rest.split(":")
    if len(parts) != 2:
        raise ConfigError(f"{what}: {kind} needs two bounds, e.g. {kind}:{'1e-4:3e-3' if kind != 'int' else '2:8'}")
    low, high = (_number(p, what) for p in parts)
    if low >= high:
        raise ConfigError(f"{what}: the lower bound must be below the upper bound")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{what}: loguniform bounds must be > 0 (it samples log(x)); use uniform for ranges "
                          "that reach 0 or below")
    if kind == "int":
        if low != int(low) or high != int(high):
            raise ConfigError(f"{what}: int bounds must be whole numbers")
        if tp not in (int, float, typing.Any):
            raise ConfigError(f"{what}: {name} is not a number; use choice:X,Y")
    elif tp is int:
        raise ConfigError(f"{what}: {name} is a whole number; use int:A:B or choice:X,Y")
    elif tp not in (float, typing.Any):
        raise ConfigError(f"{what}: {name} is not a number; use choice:X,Y")
    return Dimension(name, kind, low=low, high=high)


def parse_set(text: str) -> Dimension:
    """``--set FIELD=DIST`` over a TrainConfig field."""
    name, sep, dist = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not dist.strip():
        raise ConfigError(f"--set {text!r}: expected FIELD=DISTRIBUTION, e.g. --set learning_rate=loguniform:1e-4:3e-3")
    types = _field_types()
    if name not in types:
        near = [n for n in types if "." in n and n.partition(".")[2] not in NOT_SWEPT]
        raise ConfigError(f"--set {name}: unknown TrainConfig field; sweepable fields: {', '.join(near)}")
    field_name = name.rpartition(".")[2]
    if field_name == "seed":
        raise ConfigError("--set seed: give seeds with --seeds 0-7 (every trial then runs each seed)")
    if field_name == "env_options":
        raise ConfigError("--set env_options: sweep env options with --env KEY=DISTRIBUTION")
    if field_name in NOT_SWEPT:
        raise ConfigError(f"--set {name}: the sweep sets {name} itself; it cannot be searched")
    return parse_distribution(name, dist.strip(), _base_type(types[name]), "--set")


def parse_env(text: str) -> Dimension:
    """``--env KEY=DIST`` over an EnvConfig option (as ``kartsim train --env-option`` names them)."""
    from kartsim.envs import EnvConfig
    from kartsim.envs.config import apply_env_options

    key, sep, dist = text.partition("=")
    key = key.strip()
    if not sep or not dist.strip():
        raise ConfigError(f"--env {text!r}: expected KEY=DISTRIBUTION, e.g. --env reward.progress=uniform:0.5:2")
    defaults = EnvConfig().to_dict()
    section, _, sub = key.partition(".")
    current = defaults[section][sub] if sub and isinstance(defaults.get(section), dict) and sub in defaults[section] \
        else defaults.get(key)
    apply_env_options(dict(defaults), {key: current})  # unknown / ambiguous keys: ConfigError naming the known ones
    if current is None or isinstance(current, dict):
        tp: Any = typing.Any
    else:
        tp = type(current)
    return parse_distribution(f"env.{key}", dist.strip(), tp, "--env")


def parse_seeds(text: str) -> list[int]:
    """``0-7``, ``0,3,5`` or ``4`` (one seed) -> the seeds, in order, without repeats."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            values = range(int(lo), int(hi) + 1) if dash else [int(part)]
        except ValueError:
            raise ConfigError(f"--seeds {text!r}: expected seeds like 0-7 or 0,3,5") from None
        if dash and int(hi) < int(lo):
            raise ConfigError(f"--seeds {text!r}: the range {part} runs backwards; write it as {hi}-{lo}")
        seeds.extend(values)
    if not seeds or any(not 0 <= s < 2**32 for s in seeds):
        raise ConfigError(f"--seeds {text!r}: seeds must be between 0 and 2**32 - 1")
    return list(dict.fromkeys(seeds))


def baseline_point(dims: list[Dimension], train: dict[str, Any]) -> dict[str, Any]:
    """The values the base config (resolved for its policy kind) has for each dimension: the point
    ``--baseline`` queues as the first trial. ConfigError when one lies outside its distribution."""
    from kartsim.rl.config import TrainConfig, env_config_for

    cfg = TrainConfig.from_dict(train).resolved()
    env = env_config_for(cfg).to_dict()
    point: dict[str, Any] = {}
    for d in dims:
        if d.env_key:
            section, _, sub = d.env_key.partition(".")
            value = env[section][sub] if sub else env.get(d.env_key)
            if value is None:  # a bare nested name (max_episode_steps): the one sub-config that has it
                value = next(v[d.env_key] for v in env.values() if isinstance(v, dict) and d.env_key in v)
        else:
            value = cfg.get(d.name)
            value = value[0] if d.name.endswith("track") and len(value) == 1 else value
        if not d.contains(value):
            raise ConfigError(f"--baseline: the base config has {d.name}={value!r}, outside the searched "
                              f"{d.kind} range; widen it or drop --baseline")
        point[d.name] = value
    return point
