"""`EnvConfig`: everything that defines an env, serialised into every saved model."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kartsim.config import coerce_nested, from_dict
from kartsim.errors import ConfigError
from kartsim.sim.config import KartConfig, RaceConfig, RewardConfig
from kartsim.validation import check_config

CAMERAS = ("chase", "driver")
RAY_TARGETS = ("road_edge", "wall")
RAY_OBSERVATIONS = ("basic", "rich")
# The rich observation's default fan: denser straight ahead, where braking points are seen.
RICH_RAY_ANGLES_DEG = (-90.0, -60.0, -40.0, -25.0, -15.0, -8.0, -3.0, 0.0, 3.0, 8.0, 15.0, 25.0, 40.0, 60.0, 90.0)
VEC_BACKENDS = ("batched", "subproc")
"""How the SB3 VecEnv of a training run steps its karts (:func:`kartsim.rl.vec_env.make_vec_env`)."""


@dataclass
class EnvConfig:
    """One kartsim env. Defaults work; ``to_dict``/``from_dict`` round-trip it through JSON."""

    track: str | list[str] = "circuit.png"
    """A bundled track name, a PNG path, a list of them, a folder of PNGs, or ``"random"``
    (a pool of generated tracks). With several tracks one is drawn per episode."""
    vision: bool = False
    """Camera image + telemetry observation (``KartVision-v0``) instead of rays (``Kart-v0``)."""
    camera: str = "chase"
    """``chase``: top-down view ahead, rotated with the kart; ``driver``: first-person perspective."""
    image_size: int = 84
    """Side of the square camera image in pixels."""
    grayscale: bool = False
    """One luma channel instead of RGB."""
    frame_stack: int = 1
    """Number of most recent camera frames stacked on the channel axis (oldest first)."""
    ray_angles_deg: tuple[float, ...] = (-90.0, -50.0, -25.0, -8.0, 8.0, 25.0, 50.0, 90.0)
    """Directions of the distance rays relative to the kart's heading (positive = right); the rays observation
    has one distance per angle, then forward speed and heading error (default: 8 rays, Box(10,))."""
    ray_observation: str = "basic"
    """Rays agents: ``basic`` (``kartsim/Kart-v0``: the rays, forward speed, heading error: 10 values
    with the default 8 rays) or ``rich`` (the rays plus slip speed, yaw rate, steering, lateral offset
    and the track's curvature in five windows up to 80 m ahead; `kartsim.envs.observations.RICH_FIELDS`)."""
    ray_range_m: float = 50.0
    """Rays report at most this distance; observations divide by it."""
    ray_target: str = "road_edge"
    """What the rays measure the distance to: ``road_edge`` (the first grass or wall: the track
    limits) or ``wall`` (the first wall, seeing across grass run-off)."""
    sensor_noise: float = 0.01
    """Standard deviation of Gaussian noise on every normalised ray and telemetry value."""
    random_pool_size: int = 8
    """With ``track="random"``: how many generated tracks the pool holds."""
    resident_tracks: int = 32
    """The most tracks of a pool held in memory at once (~13 MB each at 1024 px). A larger pool is
    streamed: each episode still draws from the whole pool, and a track not in memory is loaded
    into a slot no kart is on (at least one slot per kart)."""
    race: RaceConfig = field(default_factory=RaceConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    kart: KartConfig = field(default_factory=KartConfig)

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "image_size": (16, 512), "frame_stack": (1, 16), "ray_range_m": (1.0, 1000.0), "sensor_noise": (0.0, 1.0),
        "random_pool_size": (1, 10_000), "resident_tracks": (1, 10_000)}
    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {
        "camera": CAMERAS, "ray_target": RAY_TARGETS, "ray_observation": RAY_OBSERVATIONS}

    def __post_init__(self) -> None:
        coerce_nested(self)  # race / reward / kart given as dicts
        if isinstance(self.track, tuple):
            self.track = list(self.track)
        check_config(self)
        if not self.track:
            raise ConfigError("track needs at least one track name")
        if not 1 <= len(self.ray_angles_deg) <= 64:
            raise ConfigError(f"ray_angles_deg needs 1 to 64 angles (one ray each), got {len(self.ray_angles_deg)}")
        if self.race.action_repeat < 1 or self.race.max_episode_steps < 1:
            raise ConfigError("race.action_repeat and race.max_episode_steps must be at least 1")
        self.ray_angles_deg = tuple(float(a) for a in self.ray_angles_deg)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ray_angles_deg"] = list(self.ray_angles_deg)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EnvConfig":
        """From `to_dict`'s output (or any subset of it); unknown keys raise ConfigError naming them."""
        return from_dict(cls, data)

    def replace(self, **changes: Any) -> "EnvConfig":
        """A copy with some fields changed. Besides the fields, a nested field is named as
        ``--env-option`` names it: dotted (``**{"race.weather": "wet"}``) or, when only one section
        has it, bare (``weather="wet"``); see `apply_env_options`. Unknown names raise ConfigError."""
        names = {f.name for f in dataclasses.fields(self)}
        cfg = dataclasses.replace(self, **{k: v for k, v in changes.items() if k in names})
        nested = {k: v for k, v in changes.items() if k not in names}
        return EnvConfig.from_dict(apply_env_options(cfg.to_dict(), nested)) if nested else cfg


def apply_env_options(env_dict: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Set EnvConfig fields in a ``to_dict()`` dict (in place; returned). Keys are top-level fields
    (``frame_stack``), dotted nested fields (``race.max_episode_steps``), or a nested field's bare
    name when only one sub-config has it (``max_episode_steps``). Unknown keys raise ConfigError."""
    for key, value in options.items():
        if "." in key:
            section, name = key.split(".", 1)
            if not isinstance(env_dict.get(section), dict) or name not in env_dict[section]:
                sub = env_dict.get(section)
                known = (f"{section}.{k}" for k in sub) if isinstance(sub, dict) else (
                    f"{k}." for k, v in env_dict.items() if isinstance(v, dict))
                raise ConfigError(f"unknown env option {key!r}; known: {', '.join(sorted(known))}")
            env_dict[section][name] = value
        elif key in env_dict and not isinstance(env_dict[key], dict):
            env_dict[key] = value
        else:
            owners = [sec for sec, sub in env_dict.items() if isinstance(sub, dict) and key in sub]
            if len(owners) > 1:
                raise ConfigError(f"ambiguous env option {key!r}; write one of {', '.join(f'{o}.{key}' for o in owners)}")
            if not owners:
                raise _unknown_bare_option(key, env_dict)
            env_dict[owners[0]][key] = value
    return env_dict


def nested_option_names(env_dict: dict[str, Any]) -> list[str]:
    """The dotted names (``race.weather``) of the nested fields of an EnvConfig ``to_dict()``."""
    return [f"{sec}.{k}" for sec, sub in env_dict.items() if isinstance(sub, dict) for k in sub]


def _unknown_bare_option(key: str, env_dict: dict[str, Any]) -> ConfigError:
    known = [k for k, v in env_dict.items() if not isinstance(v, dict)] + nested_option_names(env_dict)
    return unknown_option(key, known, "the fields of kartsim.envs.EnvConfig and of its kart, race and reward sections")


def unknown_option(key: str, known: list[str], where: str, what: str = "env option") -> ConfigError:
    """The closest few of the `known` names (dotted ones matched by their bare name; a full list of
    ~90 would fill the screen) and `where` all of them are, on one line."""
    by_leaf = {k.rsplit(".", 1)[-1]: k for k in known}
    close = [by_leaf[m] for m in difflib.get_close_matches(key.rsplit(".", 1)[-1], list(by_leaf), 3)]
    hint = f"did you mean {' or '.join(close)}?" if close else "no option is named like it;"
    return ConfigError(f"unknown {what} {key!r}; {hint} all options: {where} (README, Environments: Options)")
