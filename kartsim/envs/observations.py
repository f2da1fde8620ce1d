"""Observations of a race, batched over karts: rays (MLP agents) or camera image + telemetry (vision).

One observer serves the single env (N = 1) and the batched env (N karts), so both see exactly the
same numbers. Each observation is a strategy behind the :class:`Observer` interface (``space``,
``reset``, ``observe``, ``single``, ``batch_copy``): :class:`RayObserver`, :class:`RichRayObserver`,
:class:`VisionObserver`, picked by :func:`make_observer` from the ``EnvConfig``. Sensor noise comes from a counter-based generator keyed per kart at
reset, so it is reproducible from the seed and identical in single and batched envs.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import OrderedDict

import numpy as np
from gymnasium import spaces
from numba import njit

from kartsim.envs.config import EnvConfig
from kartsim.errors import ConfigError
from kartsim.sim.race import Race
from kartsim.sim.sensors import CameraConfig, CameraRenderer, cast_rays, compact_ray_field

TELEMETRY_FIELDS = (
    "speed",  # m/s ÷ 10
    "longitudinal_g",  # g
    "lateral_g",  # g, positive = towards the right
    "yaw_rate",  # rad/s, positive = turning right
    "steering",  # front wheel angle ÷ maximum, [-1, 1]
    "throttle",  # applied throttle, [-1, 1] (negative = braking / reverse)
    "heading_error",  # rad, kart heading minus track direction, positive = pointing right of it
    "lateral_offset",  # distance right of the centerline ÷ half the road width (±1 = road edge)
    "curvature_ahead",  # mean curvature of the next 25 m × 10 (1/m; positive = right-hand bend)
)
TELEMETRY_LIMIT = 10.0
CURVATURE_LOOKAHEAD_M = 25.0
TOP_SPEED_NORM = 25.0
# The rich rays observation (``ray_observation="rich"``): the rays ÷ range, then these values.
RICH_FIELDS = (
    "speed",  # forward speed ÷ 25 m/s
    "slip_speed",  # sideways speed ÷ 10 m/s, positive = sliding right
    "yaw_rate",  # rad/s ÷ 3
    "steering",  # front wheel angle ÷ maximum
    "heading_error",  # rad ÷ pi
    "lateral_offset",  # distance right of the centerline ÷ half the road width
    "curvature_0_10m", "curvature_10_20m", "curvature_20_35m", "curvature_35_55m", "curvature_55_80m",
)  # mean track curvature over each window ahead × 10 (1/m; a 10 m radius bend = 1)
CURVATURE_WINDOWS_M = ((0.0, 10.0), (10.0, 20.0), (20.0, 35.0), (35.0, 55.0), (55.0, 80.0))
RICH_LIMIT = 5.0


def _wrap_angle(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True)
def _counter_normal(keys: np.ndarray, counters: np.ndarray, width: int) -> np.ndarray:
    """Standard normal noise (len(keys), width) from a splitmix64 hash of (key, counter, column).

    Box-Muller on two hashed uniforms per value; stateless, so a kart's noise depends only on its
    key and step counter, whatever else is in the batch.
    """
    n = keys.shape[0]
    out = np.empty((n, width))
    for k in range(n):
        base = keys[k] + (np.uint64(counters[k]) << np.uint64(20))
        for j in range(width):
            u1 = _hash_uniform(base + np.uint64(j) * _GOLDEN)
            u2 = _hash_uniform(base + np.uint64(j + width) * _GOLDEN)
            out[k, j] = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    return out


@njit(cache=True, inline="always")
def _hash_uniform(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return (float(z >> np.uint64(11)) + 0.5) / 9007199254740992.0  # 2**53


class Observer(ABC):
    """The interface of every observation strategy: a space, and the observations of every kart of a race
    built into preallocated buffers. ``make_observer`` picks the strategy of an ``EnvConfig``."""

    space: spaces.Space

    def __init__(self, cfg: EnvConfig, race: Race) -> None:
        self.cfg = cfg
        self.race = race
        self.noise_keys = np.zeros(race.n, dtype=np.uint64)
        if race.stack.pool is not None:
            race.stack.listeners.append(self._track_loaded)

    def _track_loaded(self, slot: int) -> None:
        """A streamed stack put a new track into `slot`: refresh what is kept per track."""

    def reset(self, idx: np.ndarray, rngs: list[np.random.Generator]) -> None:
        """New noise keys for karts ``idx`` (after ``race.reset_karts``) and their first observation."""
        for k, i in enumerate(idx):
            self.noise_keys[i] = np.uint64(rngs[k].integers(0, 2**63, dtype=np.int64))
        self.observe(np.asarray(idx), fresh=True)

    @abstractmethod
    def observe(self, idx: np.ndarray | None = None, fresh: bool = False) -> np.ndarray | dict[str, np.ndarray]:
        """Compute observations for karts ``idx`` (all when None) and return the full batch buffers;
        ``fresh``: just reset (a vision frame stack is refilled with the new frame)."""

    @abstractmethod
    def single(self, i: int) -> np.ndarray | dict[str, np.ndarray]:
        """A copy of kart ``i``'s observation (safe to keep while the race steps on)."""

    @abstractmethod
    def batch_copy(self) -> np.ndarray | dict[str, np.ndarray]:
        """A copy of every kart's observation."""

    def camera_frame(self, i: int) -> np.ndarray | None:
        """Kart ``i``'s newest camera frame (S, S, C) as last rendered for the whole batch; None without a camera."""
        return None

    def _noise(self, sel, width: int) -> np.ndarray:
        """Sensor noise (karts ``sel``, width): keyed per kart and step, whatever else is in the batch."""
        return self.cfg.sensor_noise * _counter_normal(self.noise_keys[sel], self.race.steps[sel], width)


class RayObserver(Observer):
    """``ray_observation="basic"``: one distance per ray (÷ range, in [0, 1]), then forward speed and heading
    error. The ray count is the number of ``ray_angles_deg``."""

    def __init__(self, cfg: EnvConfig, race: Race) -> None:
        super().__init__(cfg, race)
        self.ray_angles = np.deg2rad(np.asarray(cfg.ray_angles_deg, dtype=np.float64))
        stack = race.stack
        field = stack.road_distance if cfg.ray_target == "road_edge" else stack.wall_distance
        self.ray_field = compact_ray_field(field, stack.scale)
        self._field = field
        low, high = self._extra_bounds()
        r = len(self.ray_angles)
        self.space = spaces.Box(np.array([0.0] * r + low, dtype=np.float32),
                                np.array([1.0] * r + high, dtype=np.float32), dtype=np.float32)
        self.rays = np.zeros((race.n,) + self.space.shape, dtype=np.float32)

    def _track_loaded(self, slot: int) -> None:
        stack = self.race.stack
        self.ray_field[slot] = compact_ray_field(self._field[slot], stack.scale[slot])[0]

    def _extra_bounds(self) -> tuple[list[float], list[float]]:
        """Bounds of the values after the rays: forward speed, heading error."""
        return [-1.0, -1.0], [2.0, 1.0]

    def _extra_values(self, out: np.ndarray, sel, tid: np.ndarray, heading_error: np.ndarray) -> None:
        """The values after the rays and the speed (already in ``out[:, 0]``) into ``out``."""
        out[:, 1] = heading_error / np.pi

    def observe(self, idx: np.ndarray | None = None, fresh: bool = False) -> np.ndarray:
        sel = slice(None) if idx is None else np.asarray(idx)
        st, race = self.race.state, self.race
        x, y, yaw, tid = st.x[sel], st.y[sel], st.yaw[sel], st.track_idx[sel]
        heading_error = _wrap_angle(yaw - race.track_heading[sel])
        others, self_rows = _other_karts(race, sel)
        n_rays = len(self.ray_angles)
        rays = np.empty((len(x), n_rays), dtype=np.float32)
        cast_rays(self.ray_field, race.stack.scale, tid, x, y, yaw, self.ray_angles,
                  self.cfg.ray_range_m, rays, others=others, self_rows=self_rows)
        obs = np.empty((len(x), self.rays.shape[1]), dtype=np.float64)
        obs[:, :n_rays] = rays / self.cfg.ray_range_m
        obs[:, n_rays] = st.vx[sel] / TOP_SPEED_NORM
        self._extra_values(obs[:, n_rays:], sel, tid, heading_error)
        if self.cfg.sensor_noise > 0:
            obs += self._noise(sel, obs.shape[1])
        self.rays[sel] = np.clip(obs, self.space.low, self.space.high)
        return self.rays

    def single(self, i: int) -> np.ndarray:
        return self.rays[i].copy()

    def batch_copy(self) -> np.ndarray:
        return self.rays.copy()


class RichRayObserver(RayObserver):
    """``ray_observation="rich"``: the rays ÷ range, then the `RICH_FIELDS` (speed, slip, yaw rate, steering,
    heading error, lateral offset, curvature in five windows ahead)."""

    def __init__(self, cfg: EnvConfig, race: Race) -> None:
        # per track: (points, windows) curvature over each window ahead
        self.curvature_windows = [_curvature_windows(t) for t in race.stack.tracks]
        super().__init__(cfg, race)

    def _track_loaded(self, slot: int) -> None:
        super()._track_loaded(slot)
        self.curvature_windows[slot] = _curvature_windows(self.race.stack.tracks[slot])

    def _extra_bounds(self) -> tuple[list[float], list[float]]:
        return [-RICH_LIMIT] * len(RICH_FIELDS), [RICH_LIMIT] * len(RICH_FIELDS)

    def _extra_values(self, out: np.ndarray, sel, tid: np.ndarray, heading_error: np.ndarray) -> None:
        st, race = self.race.state, self.race
        out[:, 1] = st.vy[sel] / 10.0
        out[:, 2] = st.yaw_rate[sel] / 3.0
        out[:, 3] = st.steer[sel] / race.kart_cfg.max_steer_rad
        out[:, 4] = heading_error / np.pi
        ci = race.centerline_idx[sel]
        for t, track in enumerate(race.stack.tracks):
            m = tid == t
            if m.any():
                out[m, 5] = race.lateral[sel][m] / np.maximum(0.5 * track.width[ci[m]], 0.5)
                out[m, 6:] = self.curvature_windows[t][ci[m]] * 10.0


class VisionObserver(Observer):
    """``vision=True``: the camera image (``frame_stack`` frames, oldest first) and the `TELEMETRY_FIELDS`."""

    def __init__(self, cfg: EnvConfig, race: Race) -> None:
        if race.stack.pool is not None:
            raise ConfigError(f"the camera holds every track of its pool in memory; a vision agent trains on at most "
                              f"{len(race.stack)} tracks (resident_tracks), not {race.stack.pool_size}: use a smaller "
                              "--track-pool")
        super().__init__(cfg, race)
        n, s = race.n, cfg.image_size
        # Per track: mean curvature over the next CURVATURE_LOOKAHEAD_M metres at every centerline point.
        self.curvature_ahead = [_curvature_ahead(t) for t in race.stack.tracks]
        cam = CameraConfig(mode=cfg.camera, size=s, grayscale=cfg.grayscale)
        self.camera = CameraRenderer(race.stack.rgb, race.stack.scale, cam, surface=race.stack.surface)
        self.channels = 1 if cfg.grayscale else 3
        self.frame = np.zeros((n, s, s, self.channels), dtype=np.uint8)
        self.vision = np.zeros((n, s, s, self.channels * cfg.frame_stack), dtype=np.uint8)
        self.telemetry = np.zeros((n, len(TELEMETRY_FIELDS)), dtype=np.float32)
        # OrderedDict keeps "vision" first (a plain dict gets its keys sorted by gymnasium)
        self.space = spaces.Dict(OrderedDict(
            vision=spaces.Box(0, 255, self.vision.shape[1:], np.uint8),
            telemetry=spaces.Box(-TELEMETRY_LIMIT, TELEMETRY_LIMIT, (len(TELEMETRY_FIELDS),), np.float32),
        ))

    def observe(self, idx: np.ndarray | None = None, fresh: bool = False) -> dict[str, np.ndarray]:
        sel = slice(None) if idx is None else np.asarray(idx)
        st = self.race.state
        x, y, yaw, tid = st.x[sel], st.y[sel], st.yaw[sel], st.track_idx[sel]
        self.telemetry[sel] = self._telemetry(sel, tid)
        others, self_rows = _other_karts(self.race, sel)
        frame = self.frame if idx is None else np.empty((len(x),) + self.frame.shape[1:], np.uint8)
        self.camera.render(tid, x, y, yaw, frame, others=others, self_rows=self_rows, wetness=st.wetness[sel],
                           frame=self.race.steps[sel])
        c, k = self.channels, self.cfg.frame_stack
        if fresh:
            self.vision[sel] = np.tile(frame, (1, 1, 1, k))
        elif k == 1:
            self.vision[sel] = frame
        else:
            stacked = self.vision[sel]
            stacked[..., : -c] = stacked[..., c:]
            stacked[..., -c:] = frame
            self.vision[sel] = stacked
        return {"vision": self.vision, "telemetry": self.telemetry}

    def _telemetry(self, sel, tid: np.ndarray) -> np.ndarray:
        """The `TELEMETRY_FIELDS` of karts ``sel`` (with sensor noise), clipped to the space."""
        st, race = self.race.state, self.race
        tel = np.empty((len(tid), len(TELEMETRY_FIELDS)), dtype=np.float64)
        tel[:, 0] = st.speed[sel] / 10.0
        tel[:, 1] = st.ax[sel] / 9.81
        tel[:, 2] = st.ay[sel] / 9.81
        tel[:, 3] = st.yaw_rate[sel]
        tel[:, 4] = st.steer[sel] / race.kart_cfg.max_steer_rad
        tel[:, 5] = st.throttle[sel]
        tel[:, 6] = _wrap_angle(st.yaw[sel] - race.track_heading[sel])
        ci = race.centerline_idx[sel]
        half_width = np.empty(len(tid))
        curv = np.empty(len(tid))
        for t, track in enumerate(race.stack.tracks):
            m = tid == t
            half_width[m] = 0.5 * track.width[ci[m]]
            curv[m] = self.curvature_ahead[t][ci[m]]
        tel[:, 7] = race.lateral[sel] / np.maximum(half_width, 0.5)
        tel[:, 8] = curv * 10.0
        if self.cfg.sensor_noise > 0:
            tel += self._noise(sel, len(TELEMETRY_FIELDS))
        return np.clip(tel, -TELEMETRY_LIMIT, TELEMETRY_LIMIT)

    def single(self, i: int) -> dict[str, np.ndarray]:
        return {"vision": self.vision[i].copy(), "telemetry": self.telemetry[i].copy()}

    def batch_copy(self) -> dict[str, np.ndarray]:
        return {"vision": self.vision.copy(), "telemetry": self.telemetry.copy()}

    def camera_frame(self, i: int) -> np.ndarray:
        return self.frame[i]


def make_observer(cfg: EnvConfig, race: Race) -> Observer:
    """The observation strategy of ``cfg``: vision, rich rays or basic rays."""
    if cfg.vision:
        return VisionObserver(cfg, race)
    return RichRayObserver(cfg, race) if cfg.ray_observation == "rich" else RayObserver(cfg, race)


def _other_karts(race: Race, sel) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Opponents for the rays and the camera: in multi-kart races (``race.others()``, karts sharing a
    collision world) every other kart; (None, None) in time trials and the batched env."""
    others = getattr(race, "others", None)
    if others is None or not race.state.collisions_possible():
        return None, None
    return others(), np.arange(race.n)[sel]


def _curvature_windows(track) -> np.ndarray:
    """(points, windows): the mean curvature over each of `CURVATURE_WINDOWS_M` ahead of every point."""
    return np.stack([_curvature_ahead(track, a, b) for a, b in CURVATURE_WINDOWS_M], axis=1)


def _curvature_ahead(track, start_m: float = 0.0, end_m: float = CURVATURE_LOOKAHEAD_M) -> np.ndarray:
    """Mean centerline curvature from `start_m` to `end_m` ahead of every centerline point."""
    n = len(track.s)
    spacing = track.length / n
    a = int(round(start_m / spacing))
    b = max(a + 1, int(round(end_m / spacing)))
    k = np.concatenate([track.curvature] * (b // n + 2))
    c = np.concatenate([[0.0], np.cumsum(k)])
    i = np.arange(n)
    return (c[i + b] - c[i + a]) / (b - a)
