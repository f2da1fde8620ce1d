"""The simulation's configuration dataclasses: the kart's physical figures, an episode's rules and rewards
(`RaceConfig`, `RewardConfig`) and the rules of a multi-kart race (`RaceRules`).

Light on purpose (no numba, no numpy): ``from kartsim.envs import EnvConfig`` reads these without
loading the simulator. The kernels that use them live in :mod:`kartsim.sim.physics` and
:mod:`kartsim.sim.race`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import ClassVar

from kartsim.errors import ConfigError
from kartsim.validation import check_config

__all__ = ["KartConfig", "RaceConfig", "RaceRules", "RewardConfig", "WEATHER", "WEATHERS"]

# Weather: wetness of the track under a kart (KartState.wetness).
WEATHER = {"dry": 0.0, "damp": 0.5, "wet": 1.0}
WEATHERS = ("dry", "damp", "wet", "random")
# `kartsim.sim.trackgen`'s layout styles, here so that the CLI can offer them without loading the
# generator (cv2, scipy, numba: about a second).
TRACK_STYLES = ("circuit", "oval", "technical", "grandprix", "drawn", "random")
"""What ``RaceConfig.weather`` accepts: a wetness of `WEATHER`, or ``random`` (one drawn per episode)."""


@dataclass
class KartConfig:
    """Physical figures of the kart. Defaults: a ~160 kg rental/sprint kart with its driver."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "dt": (1e-4, 0.1), "mass_kg": (1.0, 1e4), "yaw_inertia_kgm2": (0.01, 1e5), "wheelbase_m": (0.1, 10.0)}

    dt: float = 0.02
    """Fixed physics time step (s); ``KartPhysics.step`` advances ``substeps * dt``."""
    mass_kg: float = 160.0
    """Kart plus driver mass (kg)."""
    yaw_inertia_kgm2: float = 30.0
    """Moment of inertia about the vertical axis (kg m^2)."""
    wheelbase_m: float = 1.05
    """Distance between front and rear axles (m)."""
    cg_to_front_m: float = 0.63
    """Centre of gravity to front axle (m); 0.63 of 1.05 gives a 40/60 front/rear weight split."""
    cg_height_m: float = 0.2
    """Centre of gravity height (m), used for longitudinal load transfer (0 disables it)."""
    radius_m: float = 0.7
    """Radius of the collision circle around the kart centre (m)."""
    length_m: float = 1.8
    """Overall length (m); informative (sprites), not used by the dynamics."""
    width_m: float = 1.3
    """Overall width (m); informative (sprites), not used by the dynamics."""
    max_steer_rad: float = 0.4
    """Front wheel angle at full steering input (rad)."""
    steer_rate_rad_s: float = 3.0
    """Maximum rate of change of the front wheel angle (rad/s): full lock to lock in ~0.27 s."""
    engine_power_w: float = 8000.0
    """Engine power at the wheels (W); with the drag below it gives a top speed of ~25 m/s."""
    max_drive_force_n: float = 800.0
    """Drive force cap at low speed (N), ~0.5 g of acceleration."""
    brake_force_n: float = 3000.0
    """Total brake force requested at full brake (N); with grip limits the kart decelerates ~1.6 g."""
    brake_front_share: float = 0.65
    """Share of the brake force on the front axle (each axle is limited by its grip; front-biased
    braking keeps the kart stable when braking in a turn)."""
    reverse_force_n: float = 500.0
    """Drive force in reverse (N): enough to back out of the grass (rolling resistance ~235 N)."""
    max_reverse_speed: float = 3.0
    """Reverse speed cap (m/s)."""
    reverse_threshold_speed: float = 0.5
    """Below this forward speed, negative throttle drives backwards instead of braking (m/s)."""
    drag_coeff: float = 0.45
    """Aerodynamic drag 0.5 * rho * Cd * A (N s^2/m^2)."""
    mu_asphalt: float = 2.2
    """Peak rear-tyre friction coefficient on asphalt (front = x front_grip_factor: ~1.95 g of
    steady lateral grip on kart slicks)."""
    front_grip_factor: float = 0.9
    """Front axle friction relative to the rear (< 1: stable understeer at the limit)."""
    load_sensitivity: float = 0.5
    """Tyre load sensitivity: an axle's friction falls by this fraction per 100 % load above its static
    load (and rises when unloaded), which tempers the effect of load transfer on the balance."""
    mu_kerb: float = 2.1
    """Peak tyre friction coefficient on kerbs."""
    mu_grass: float = 0.5
    """Peak tyre friction coefficient on grass."""
    rolling_asphalt: float = 0.015
    """Rolling resistance coefficient on asphalt (force = coeff * m * g)."""
    rolling_kerb: float = 0.04
    """Rolling resistance coefficient on kerbs (slight extra drag)."""
    rolling_grass: float = 0.15
    """Rolling resistance coefficient on grass (much more drag)."""
    tyre_peak_slip_rad: float = 0.12
    """Slip angle at which the lateral tyre force peaks (rad)."""
    tyre_sliding_ratio: float = 0.89
    """Lateral force when fully sliding as a fraction of the peak (< 1: the force falls after the peak)."""
    wall_restitution: float = 0.2
    """Fraction of the normal speed returned after hitting a wall."""
    wall_friction: float = 0.3
    """Coulomb friction coefficient between kart and wall (tangential speed lost per normal impulse)."""
    max_travel_fraction: float = 0.4
    """At most this fraction of ``radius_m`` travelled between two wall checks (anti-tunnelling)."""
    slip_min_speed: float = 1.0
    """Below this speed the reported slip_angle is 0 (m/s)."""
    # --- tyre wear
    tyre_wear_per_mj: float = 0.15
    """Tyre condition lost per megajoule of tyre work (lateral force x sliding speed, plus the
    longitudinal force x a nominal 3 % slip): ~1 % per fast lap of the bundled circuit."""
    tyre_slide_wear_factor: float = 3.0
    """Work done past the tyre's peak slip angle (sliding) wears this many times faster."""
    tyre_worn_grip_loss: float = 0.35
    """Fraction of the grip lost when the tyre condition reaches 0 (linear in the condition)."""
    tyre_start_condition: float = 1.0
    """Tyre condition at a reset (1.0 = new; e.g. 0.5 starts on worn tyres)."""
    # --- weather
    damp_grip: float = 0.8
    """Grip multiplier on a damp track (``KartState.wetness`` 0.5; interpolated linearly in wetness)."""
    wet_grip: float = 0.6
    """Grip multiplier on a wet track (``KartState.wetness`` 1.0)."""
    wet_brake_factor: float = 0.85
    """Extra multiplier of the brake-force grip at full wetness (brakes lock up sooner in the wet)."""
    # --- damage
    damage_threshold_mps: float = 4.0
    """Impacts (into walls or other karts) below this speed do no damage (m/s)."""
    damage_per_mps: float = 0.03
    """Damage per m/s of impact speed above the threshold (damage is in [0, 1])."""
    damage_power_loss: float = 0.5
    """Fraction of the engine power (and drive force) lost at damage 1."""
    damage_steer_pull_rad: float = 0.05
    """Front wheel angle of the bent steering at damage 1 (rad); the pull is towards the side hit."""
    # --- kart-to-kart contact
    kart_restitution: float = 0.3
    """Fraction of the closing speed returned after a kart-to-kart contact."""
    kart_friction: float = 0.2
    """Tangential friction of kart-to-kart contacts (fraction of the normal impulse)."""

    def __post_init__(self) -> None:
        check_config(self, "kart")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "KartConfig":
        from kartsim.config import from_dict

        return from_dict(cls, d)

    def validate(self) -> None:
        positive = ["dt", "mass_kg", "yaw_inertia_kgm2", "wheelbase_m", "radius_m", "max_steer_rad",
                    "steer_rate_rad_s", "engine_power_w", "max_drive_force_n", "brake_force_n",
                    "tyre_peak_slip_rad", "max_travel_fraction"]
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"KartConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.cg_to_front_m < self.wheelbase_m:
            raise ConfigError(
                f"KartConfig.cg_to_front_m must be between 0 and wheelbase_m ({self.wheelbase_m}), "
                f"got {self.cg_to_front_m}")
        if not 0.5 <= self.tyre_sliding_ratio <= 0.99:
            raise ConfigError(f"KartConfig.tyre_sliding_ratio must be in [0.5, 0.99], got {self.tyre_sliding_ratio}")
        if not 0.0 <= self.wall_restitution <= 1.0:
            raise ConfigError(f"KartConfig.wall_restitution must be in [0, 1], got {self.wall_restitution}")
        for name in ("tyre_worn_grip_loss", "tyre_start_condition", "damage_power_loss", "kart_restitution",
                     "kart_friction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"KartConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("damp_grip", "wet_grip", "wet_brake_factor"):
            if not 0.05 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"KartConfig.{name} must be in [0.05, 1], got {getattr(self, name)}")
        for name in ("tyre_wear_per_mj", "tyre_slide_wear_factor", "damage_threshold_mps", "damage_per_mps",
                     "damage_steer_pull_rad"):
            if getattr(self, name) < 0:
                raise ConfigError(f"KartConfig.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class RewardConfig:
    """Weights of the named reward terms; the reward is the sum of weight × term.

    Each term is computed by :func:`reward_terms` under the same name and logged in ``info``.
    """

    progress: float = 0.1
    """Per metre of *new* forward progress along the centerline (a lap of 1 km pays 100)."""
    lap: float = 10.0
    """Per completed lap (all gates crossed in order)."""
    off_track: float = -1.0
    """Per second spent on grass."""
    wall: float = -0.2
    """Per m/s of impact speed into a wall."""
    termination: float = -10.0
    """Once, when the episode ends early (wrong way, stuck, off the track for good)."""
    steer_change: float = -0.02
    """Per unit change of the steering command from one decision to the next (a flick from full
    left to full right is 2): a cost on weaving. Without it PPO's deterministic policy steers
    bang-bang on the straights (the command moving ~10 units a second) and scrubs ~10 % of its speed there;
    with it the rays agent's best lap on circuit.png at 1.5M steps is 1.06 instead of 1.16 × the
    reference (benchmarks/RESULTS.md; -0.05 did no better). 0: off."""
    lap_pace: float = 0.0
    """Per m/s of a completed lap's mean speed (lap length ÷ lap time), paid when the lap completes: a
    faster lap pays more, so it rewards speed itself rather than only distance (0: off). Paid only for
    a real lap (every gate in order), so it opens no farming hole the progress term closes."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        name: (-1e6, 1e6) for name in ("progress", "lap", "off_track", "wall", "termination", "steer_change", "lap_pace")}

    def __post_init__(self) -> None:
        check_config(self, "reward")

    def weights(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class RaceConfig:
    """How a race runs: time step grouping, starts and the rules that end an episode."""

    action_repeat: int = 5
    """Physics steps per env step (physics dt 0.02 s × 5 = an agent decision every 0.1 s)."""
    max_episode_steps: int = 2000
    """Env steps before the episode is truncated (time limit)."""
    random_start: bool = True
    """Start at a random place along the lap (training) or just behind the start line (evaluation)."""
    start_behind_line_m: float = 6.0
    """With ``random_start=False``: how far behind the start/finish line the kart is placed."""
    start_lateral_jitter_m: float = 1.0
    """Random sideways offset of a random start (capped at a quarter of the road width)."""
    start_heading_jitter_rad: float = 0.15
    """Random heading offset of a random start."""
    start_corner_share: float = 0.0
    """Share of random starts placed on the approach to a bend instead of uniformly along the lap: a
    start curriculum toward the hard corners. Such a start is drawn with a density ∝ (the sharpest
    curvature within `start_corner_lookahead_m` ahead)², so hairpins get most of them (0: uniform)."""
    start_corner_lookahead_m: float = 60.0
    """How far ahead of a corner start the bend may lie (the braking zone is included)."""
    stuck_time_s: float = 6.0
    """The episode ends when no new forward progress was made for this long."""
    wrong_way_m: float = 20.0
    """The episode ends when the kart is this far behind its best progress."""
    off_track_time_s: float = 4.0
    """The episode ends after this long continuously on grass."""
    weather: str = "dry"
    """Track wetness set at every reset: ``dry``, ``damp``, ``wet`` or ``random`` (one drawn per episode:
    domain randomisation). It changes grip and braking (physics) and darkens the camera."""
    max_damage: float | None = None
    """End the episode (termination ``damage``) when the kart's impact damage reaches this (None: never)."""

    # action_repeat beyond 100 (2 s per decision) only hangs the step; the episode limits may be
    # practically endless (1e9: "never", as drive and the tests use them)
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "action_repeat": (1, 100), "max_episode_steps": (1, 1e12), "start_behind_line_m": (0.0, 100.0),
        "start_lateral_jitter_m": (0.0, 20.0), "start_heading_jitter_rad": (0.0, math.pi),
        "start_corner_share": (0.0, 1.0), "start_corner_lookahead_m": (0.0, 1000.0), "stuck_time_s": (0.1, 1e12),
        "wrong_way_m": (0.0, 1e12), "off_track_time_s": (0.0, 1e12), "max_damage": (0.0, 1e12)}

    def __post_init__(self) -> None:
        check_config(self, "race")
        if self.weather not in WEATHERS:
            raise ConfigError(f"race.weather must be one of {', '.join(WEATHERS)}, not {self.weather!r}")


@dataclass
class RaceRules:
    """How a multi-kart race (:class:`kartsim.sim.multikart.GridRace`) is run: its distance, contacts and
    grid, and its weather and retirement unless the `RaceConfig` sets them. The race envs take every
    field as a keyword too (``gym.make("kartsim/KartRace-v0", laps=1, weather="wet")``)."""

    laps: int = 3
    """Race distance in laps: a kart finishes after this many."""
    collisions: bool = True
    """Karts collide with each other (one collision world); False = ghosts that drive through."""
    grid_front_m: float = 4.0
    """Distance of the pole position behind the start/finish line (m)."""
    grid_row_m: float = 6.0
    """Distance between grid rows of two karts (m)."""
    grid_stagger_m: float = 3.0
    """The second kart of a row starts this much further back (m)."""
    grid_lateral_m: float = 2.0
    """Sideways offset of the two grid columns from the centerline (m, capped at 30 % of the width)."""
    weather: str | None = None
    """dry, damp, wet or random (one per race: domain randomisation). None: the race config's
    ``weather`` (dry by default), so ``race=RaceConfig(weather="wet")`` works here too."""
    max_damage: float | None = None
    """Retire a kart whose damage reaches this, in (0, 1] (None: the race config's ``max_damage``,
    never by default)."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "laps": (1, 1e12), "grid_front_m": (0.0, 1000.0), "grid_row_m": (2.0, 1000.0), "grid_stagger_m": (0.0, 1000.0),
        "grid_lateral_m": (0.0, 100.0), "max_damage": (0.0, 1.0)}

    def __post_init__(self) -> None:
        check_config(self)
        if self.weather is not None and self.weather not in WEATHERS:
            raise ConfigError(f"weather must be one of {', '.join(WEATHERS)}, got {self.weather!r}")
        if self.max_damage == 0.0:
            raise ConfigError("max_damage must be in (0, 1] or None, got 0")

    def resolved(self, race: RaceConfig) -> "RaceRules":
        """These rules with ``weather`` and ``max_damage`` taken from `race` unless given here (both
        given and different: ConfigError, rather than one of them silently ignored)."""
        defaults = {f.name: f.default for f in fields(RaceConfig)}
        merged = {}
        for name in ("weather", "max_damage"):
            mine, theirs = getattr(self, name), getattr(race, name)
            if mine is not None and theirs != defaults[name] and mine != theirs:
                raise ConfigError(f"{name}={mine!r} conflicts with race.{name}={theirs!r}; give only one of them")
            merged[name] = theirs if mine is None else mine
        return replace(self, **merged)
