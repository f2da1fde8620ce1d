"""Racing line and reference lap time of a track for a kart.

* :func:`kart_limits` measures the kart's g-g-v envelope **on the simulated physics itself** (a batch
  of karts on an open asphalt field): the steady-state lateral grip as a function of speed, the
  straight-line braking and the drive acceleration as functions of speed, the cornering drag, and the
  g-g diagram (the lateral grip held at each longitudinal acceleration, from constant, random,
  bang-bang and weaving inputs, in the path frame). Measuring instead of assuming keeps the reference
  truthful for whatever :class:`~kartsim.sim.config.KartConfig` is used; tests/sim/test_physics_envelope.py
  checks that no input sequence beats it.
* :func:`racing_line` gives the **minimum-time line** by default (:func:`min_time_offsets`: lateral
  offsets and speeds at 2 m stations along the centerline, the lap time as the objective, the
  envelope as constraints, solved with CasADi + IPOPT from the minimum-curvature line; cached on
  disk) or the smoothed **minimum-curvature line** (:func:`optimise_offsets`, a bounded sparse
  least-squares problem on the line's second differences), both kept ``kart width / 2 + margin``
  inside the road edges (kerbs are road), with a speed profile on the line (:func:`speed_profile`:
  grip limit, forward pass with the drive and the g-g diagram, backward pass with the brakes and the
  g-g diagram). The minimum-time line's ``lap_time`` is the **reference lap time** (a flying lap: the
  kart crosses the line at the profile's speed).
* :func:`corners` lists the corners (apex position, radius, minimum speed, direction).

Coordinates follow docs/ARCHITECTURE.md (metres, y down, positive curvature = right-hand bend,
lateral offset > 0 = right of the centerline).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage, sparse
from scipy.interpolate import CubicSpline
from scipy.optimize import lsq_linear
from scipy.sparse.linalg import spsolve

from kartsim.errors import ConfigError, TrackError
from kartsim.sim.config import KartConfig
from kartsim.sim.physics import ASPHALT, KartPhysics, KartState
from kartsim.sim.track import closed_geometry

G = 9.81

__all__ = ["LINE_METHODS", "Corner", "KartLimits", "RacingLine", "corners", "kart_limits", "line_cache_dir",
           "line_from_offsets", "min_time_offsets", "path_accelerations", "racing_line", "reference_lap_time"]


# ---------------------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class KartLimits:
    """The kart's g-g envelope as tables over speed (m/s -> m/s^2), measured on the physics."""

    v: np.ndarray
    """Speed grid (m/s)."""
    lateral: np.ndarray
    """Largest steady-state lateral acceleration at each speed (m/s^2): the tyres' limit, or the
    steering lock's at low speed."""
    brake: np.ndarray
    """Straight-line full-brake deceleration at each speed (m/s^2, positive; drag included)."""
    drive: np.ndarray
    """Full-throttle acceleration at each speed on a straight (m/s^2; negative above the top speed)."""
    top_speed: float
    """Speed where drive force equals drag plus rolling resistance (m/s)."""
    induced: tuple[float, float] = (0.0, 0.0)
    """Cornering drag: deceleration (in g) = c2 * (a_lat/g)^2 + c4 * (a_lat/g)^4 from the tyres'
    lateral forces (the steered front wheels and the slip), measured in steady turns."""
    gg_ax: np.ndarray = field(default_factory=lambda: np.array([-20.0, 0.0, 20.0]))
    """g-g diagram: longitudinal accelerations (m/s^2, increasing) at which ``gg_lat`` was measured."""
    gg_lat: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0, 0.0]))
    """g-g diagram: the lateral acceleration the kart holds while accelerating at ``gg_ax``, as a
    fraction of ``lateral`` (rises above 1 under mild deceleration: the load moves onto the front
    tyres, which limit this understeering kart; falls when braking harder or driving)."""

    def lat_at(self, v, ax):
        """Lateral acceleration the kart holds at speed ``v`` while accelerating at ``ax`` (m/s^2)."""
        return self.lat(v) * np.interp(ax, self.gg_ax, self.gg_lat)

    @property
    def gg_peak(self) -> float:
        """Largest lateral fraction of the g-g diagram (>= 1)."""
        return float(self.gg_lat.max())

    def ax_range(self, frac):
        """(lowest, highest) longitudinal acceleration (m/s^2) at which the kart holds the lateral
        fraction ``frac`` of its grip (vectorised; both equal the peak's where ``frac`` is beyond it)."""
        frac = np.minimum(np.asarray(frac, np.float64), self.gg_peak)
        p = int(np.argmax(self.gg_lat))
        left = np.maximum.accumulate(self.gg_lat[: p + 1]) + np.arange(p + 1) * 1e-9
        right = np.maximum.accumulate(self.gg_lat[p:][::-1]) + np.arange(len(self.gg_lat) - p) * 1e-9
        return (np.interp(frac, left, self.gg_ax[: p + 1]),
                np.interp(frac, right, self.gg_ax[p:][::-1]))

    def lat(self, v):
        return np.interp(v, self.v, self.lateral)

    def brk(self, v):
        return np.interp(v, self.v, self.brake)

    def acc(self, v):
        return np.interp(v, self.v, self.drive)

    def cornering_drag(self, a_lat):
        q = (np.asarray(a_lat) / G) ** 2
        return G * (self.induced[0] * q + self.induced[1] * q * q)

    def scaled(self, grip: float = 1.0, brake: float | None = None) -> "KartLimits":
        """Limits with the tyre-limited figures scaled (lateral and braking; drive is engine-limited).
        ``brake`` scales the straight-line braking and the braking side of the g-g diagram."""
        brake = grip if brake is None else brake
        return KartLimits(self.v, self.lateral * grip, self.brake * brake,
                          np.minimum(self.drive, self.brake * brake), self.top_speed, self.induced,
                          self.gg_ax * np.where(self.gg_ax < 0.0, brake, grip), self.gg_lat)


def _open_field(cfg: KartConfig) -> KartPhysics:
    scale = 5.0
    n = 400  # 2 km x 2 km of asphalt
    surf = np.full((1, n, n), ASPHALT, np.uint8)
    ii = np.arange(n)
    edge = np.minimum(np.minimum(ii[:, None], ii[None, :]), np.minimum(n - 1 - ii[:, None], n - 1 - ii[None, :]))
    wd = ((edge + 0.5) * scale).astype(np.float32)[None]
    return KartPhysics(cfg, surf, wd, np.array([scale]))


def _drive_force(cfg: KartConfig, v: np.ndarray) -> np.ndarray:
    return np.where(v > 1.0, np.minimum(cfg.max_drive_force_n, cfg.engine_power_w / np.maximum(v, 1.0)),
                    cfg.max_drive_force_n)


def _drive_accel(cfg: KartConfig, v: np.ndarray) -> np.ndarray:
    return (_drive_force(cfg, v) - cfg.drag_coeff * v * v - cfg.rolling_asphalt * cfg.mass_kg * G) / cfg.mass_kg


def _cfg_key(cfg: KartConfig) -> tuple:
    return tuple(sorted((k, v if not isinstance(v, list) else tuple(v)) for k, v in cfg.to_dict().items()))


def kart_limits(cfg: KartConfig | None = None) -> KartLimits:
    """Measure (once per config and physics code; cached in memory and in :func:`line_cache_dir`) the
    kart's g-g-v envelope on dry asphalt."""
    cfg = cfg or KartConfig()
    return _kart_limits_cached(_cfg_key(cfg))


_LIMIT_ARRAYS = ("v", "lateral", "brake", "drive", "gg_ax", "gg_lat")


def _physics_hash() -> str:
    """Hash of the physics code: a changed model measures (and solves) afresh, not from the cache."""
    import kartsim.sim.physics

    return hashlib.sha256(Path(kartsim.sim.physics.__file__).read_bytes()).hexdigest()[:16]


@lru_cache(maxsize=16)
def _kart_limits_cached(key: tuple) -> KartLimits:
    """The measured limits from the disk cache (plain arrays, no pickle) or measured and stored."""
    h = hashlib.sha256(f"limits v{SOLVER_VERSION} {_physics_hash()} {key!r}".encode()).hexdigest()[:32]
    path = line_cache_dir() / f"limits-{h}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k], np.float64) for k in _LIMIT_ARRAYS}
            top, c2, c4 = (float(x) for x in z["scalars"])
        return KartLimits(arrays["v"], arrays["lateral"], arrays["brake"], arrays["drive"], top, (c2, c4),
                          arrays["gg_ax"], arrays["gg_lat"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        pass  # missing or corrupt: measure again
    lim = _measure_limits(KartConfig.from_dict(dict(key)))
    _store(path, scalars=np.array([lim.top_speed, *lim.induced]), **{k: getattr(lim, k) for k in _LIMIT_ARRAYS})
    return lim


def _store(path: Path, **arrays: np.ndarray) -> None:
    """Write a cache entry atomically; a read-only cache folder only costs a re-computation."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass


def _measure_limits(cfg: KartConfig) -> KartLimits:
    # new, dry tyres that do not wear while measuring; no damage
    cfg = dataclasses.replace(cfg, tyre_wear_per_mj=0.0, tyre_start_condition=1.0)
    ph = _open_field(cfg)
    v_grid = np.arange(2.0, 30.01, 1.0)
    cap, induced = _measure_lateral(ph, cfg)
    # below ~8 m/s the steering lock, not the tyres, limits the lateral acceleration
    lock = 0.97 * v_grid ** 2 * math.tan(cfg.max_steer_rad) / cfg.wheelbase_m
    lateral = np.minimum(cap, lock)
    brake = _measure_brake(ph, cfg, v_grid)
    drive = _drive_accel(cfg, v_grid)
    vv = np.linspace(1.0, 60.0, 6000)
    a = _drive_accel(cfg, vv)
    top = float(vv[np.argmax(a <= 0)]) if np.any(a <= 0) else float(vv[-1])
    gg_ax, gg_lat = _measure_gg(ph, lambda v: np.interp(v, v_grid, lateral), float(brake.max()))
    return KartLimits(v_grid, lateral, brake, drive, top, induced, gg_ax, gg_lat)


def _input_families(rng: np.random.Generator, n: int, steps: int, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """(steps, n) steering and throttle sequences: constant, random (held 0.1 s), bang-bang and
    sinusoidal weaving steering (periods 0.2-3 s), throttle/brake around a per-kart level."""
    kind = rng.integers(0, 4, n)
    period = rng.uniform(0.2, 3.0, n)
    amp = rng.uniform(0.05, 1.0, n)
    level = np.clip(rng.uniform(-1.5, 1.5, n), -1.0, 1.0)  # a sixth at full brake, a sixth at full throttle
    t = np.arange(steps)[:, None] * dt
    held = np.repeat(rng.uniform(-1.0, 1.0, (steps // 5 + 1, n)), 5, axis=0)[:steps]
    wave = np.sin(2 * np.pi * t / period)
    steer = np.where(kind == 0, amp, np.where(kind == 1, amp * held, np.where(kind == 2, amp * np.sign(wave),
                                                                               amp * wave)))
    jitter = np.repeat(rng.standard_normal((steps // 10 + 1, n)), 10, axis=0)[:steps]
    thr = np.clip(level + 0.3 * jitter * (kind > 0), -1.0, 1.0)
    return steer, thr


def path_accelerations(ph: KartPhysics, steer: np.ndarray, thr: np.ndarray, v0: np.ndarray, window: int):
    """Drive karts on the open field with the (steps, n) inputs from speed ``v0``; returns, per window
    of ``window`` steps (rows) and kart (columns): the mean acceleration normal to the path (speed x
    turn rate of the velocity's direction: a sliding kart's body-frame "lateral" acceleration is mostly
    sideways braking), the change of speed per second, the mean speed and the largest body slip."""
    steps, n = steer.shape
    dt = ph.cfg.dt
    st = KartState(n)
    st.reset(np.arange(n), np.full(n, 1000.0), np.full(n, 1000.0), np.zeros(n))
    st.vx[:] = v0
    st.speed[:] = v0
    an = np.zeros((steps, n))
    v = np.zeros((steps + 1, n))
    slip = np.zeros((steps, n))
    v[0] = st.speed
    for k in range(steps):
        course = st.yaw + np.arctan2(st.vy, st.vx)
        ph.step(st, thr[k], steer[k], 1)
        an[k] = st.speed * np.angle(np.exp(1j * (st.yaw + np.arctan2(st.vy, st.vx) - course))) / dt
        v[k + 1] = st.speed
        slip[k] = np.abs(st.slip_angle)
    c = np.cumsum(np.vstack([np.zeros((1, n)), np.abs(an)]), axis=0)
    cv = np.cumsum(v[1:], axis=0)
    cv = np.vstack([np.zeros((1, n)), cv])
    mean_an = (c[window:] - c[:-window]) / window
    at = (v[window:] - v[:-window]) / (window * dt)
    mean_v = (cv[window:] - cv[:-window]) / window
    max_slip = np.lib.stride_tricks.sliding_window_view(slip, window, axis=0).max(axis=-1)
    return mean_an, at, mean_v, max_slip


GG_WINDOW_S = 0.5
"""Averaging window of the g-g diagram (s): accelerations sustained this long."""
GG_MAX_SLIP = 0.25
"""Body slip (rad) beyond which a kart counts as spinning, not cornering (a spin decelerates at the
sliding grip in any direction)."""
GG_MIN_SPEED = 8.0
"""Lowest speed of the g-g diagram (m/s): below it the steering lock, not the tyres, limits."""


def _measure_gg(ph: KartPhysics, lat, brake_max: float) -> tuple[np.ndarray, np.ndarray]:
    """The g-g diagram: 2,400 karts from 8-24 m/s driving constant, random, bang-bang and weaving
    steering with throttle/brake at a per-kart level for 4 s; every 0.5 s window without a spin gives
    a mean acceleration along and across the path. The diagram is the largest lateral acceleration
    (as a fraction of the steady-turn limit ``lat(v)``) seen in each 0.1 g bin of longitudinal
    acceleration, made unimodal (what a kart holds at a harsher deceleration it holds at a milder one)."""
    rng = np.random.default_rng(2024)
    n, steps, window = 2400, 200, round(GG_WINDOW_S / ph.cfg.dt)
    steer, thr = _input_families(rng, n, steps, ph.cfg.dt)
    an, at, v, slip = path_accelerations(ph, steer, thr, rng.uniform(GG_MIN_SPEED, 24.0, n), window)
    ok = (slip < GG_MAX_SLIP) & (v > GG_MIN_SPEED)
    frac, ax = (an / lat(v))[ok], at[ok]
    edges = np.arange(-2.0, 0.61, 0.1) * G
    b = np.digitize(ax, edges) - 1
    best = np.zeros(len(edges) - 1)
    np.maximum.at(best, b[(b >= 0) & (b < len(best))], frac[(b >= 0) & (b < len(best))])
    mid = 0.5 * (edges[1:] + edges[:-1])
    seen = best > 0
    ax_tab, lat_tab = mid[seen], best[seen]
    p = int(np.argmax(lat_tab))
    lat_tab[: p + 1] = np.maximum.accumulate(lat_tab[: p + 1])
    lat_tab[p:] = np.maximum.accumulate(lat_tab[p:][::-1])[::-1]
    # beyond what was seen: no grip left past full braking; driving harder is the engine's limit
    ax_tab = np.concatenate([[min(-brake_max * 1.02, ax_tab[0] - 0.5 * G)], ax_tab, [ax_tab[-1] + 20.0]])
    lat_tab = np.concatenate([[0.0], lat_tab, [lat_tab[-1] * 0.999]])
    return ax_tab, lat_tab


def _measure_lateral(ph: KartPhysics, cfg: KartConfig) -> tuple[float, tuple[float, float]]:
    """Steady cornering: a batch of karts circling at constant speed (throttle holding it) with a range
    of constant steering inputs. Returns the largest lateral acceleration held with a small body slip
    (m/s^2) and the cornering-drag coefficients fitted to the throttle needed to hold the speed."""
    n_steer = 48
    L = cfg.wheelbase_m
    v_grid = np.array([10.0, 13.0, 16.0])
    vs, cmds = [], []
    for v in v_grid:
        kin = math.atan(L * 2.3 * G / (v * v))  # wheel angle of a kinematic 2.3 g turn
        cmds.append(np.linspace(0.1 * kin, min(2.5 * kin, cfg.max_steer_rad), n_steer) / cfg.max_steer_rad)
        vs.append(np.full(n_steer, v))
    vs = np.concatenate(vs)
    cmds = np.clip(np.concatenate(cmds), -1.0, 1.0)
    n = len(vs)
    st = KartState(n)
    st.reset(np.arange(n), np.full(n, 1000.0), np.full(n, 1000.0), np.zeros(n))
    st.vx[:] = vs
    st.speed[:] = vs
    steps, window = 300, 80
    ay = np.zeros(n)
    thr = np.zeros(n)
    spd = np.zeros(n)
    v_min = np.full(n, np.inf)
    slip_max = np.zeros(n)
    for k in range(steps):
        ph.step(st, np.clip(3.0 * (vs - st.vx) + 0.2, -1.0, 1.0), cmds, 1)
        if k >= steps - window:
            ay += st.ay / window
            thr += st.throttle / window
            spd += st.speed / window
            v_min = np.minimum(v_min, st.speed)
            slip_max = np.maximum(slip_max, np.abs(st.slip_angle))
    ok = (v_min > vs - 0.4) & (slip_max < 0.25) & np.isfinite(ay) & (thr < 0.99)
    cap = float(np.max(np.where(ok, ay, 0.0)))
    # cornering drag = drive force needed beyond straight-line drag and rolling resistance
    ind = (thr * _drive_force(cfg, spd) - cfg.drag_coeff * spd * spd
           - cfg.rolling_asphalt * cfg.mass_kg * G) / (cfg.mass_kg * G)
    # fit on the rising branch of each speed's sweep (before the peak lateral acceleration)
    use = np.zeros(n, bool)
    for j in range(len(v_grid)):
        sl = slice(j * n_steer, (j + 1) * n_steer)
        a = np.where(ok[sl], ay[sl], -1.0)
        peak = int(np.argmax(a))
        use[sl][: peak + 1] = ok[sl][: peak + 1]
    q = (ay[use] / G) ** 2
    if use.sum() >= 3:
        X = np.column_stack([q, q * q])
        c, *_ = np.linalg.lstsq(X, ind[use], rcond=None)
        induced = (float(max(c[0], 0.0)), float(max(c[1], 0.0)))
    else:
        induced = (0.0, 0.0)
    return max(cap, 1e-3), induced


def _measure_brake(ph: KartPhysics, cfg: KartConfig, v_grid: np.ndarray) -> np.ndarray:
    st = KartState(1)
    st.reset([0], 20.0, 1000.0, 0.0)
    st.vx[:] = v_grid[-1] + 1.0
    vs, ds = [], []
    while st.vx[0] > 1.0 and len(vs) < 2000:
        v0 = st.vx[0]
        ph.step(st, -1.0, 0.0, 1)
        vs.append(0.5 * (v0 + st.vx[0]))
        ds.append((v0 - st.vx[0]) / cfg.dt)
    vs, ds = np.array(vs[::-1]), np.array(ds[::-1])
    return np.interp(v_grid, vs, ds)


# ---------------------------------------------------------------------------------------- the line


@dataclass
class Corner:
    """One corner of the racing line."""

    index: int
    """1-based number in driving order."""
    direction: str
    """"left" or "right"."""
    apex_s: float
    """Apex position: metres along the centerline from the start/finish line."""
    apex_xy: tuple[float, float]
    """Apex position (m)."""
    radius_m: float
    """Radius of the racing line at the apex (m)."""
    min_speed: float
    """Lowest speed of the reference profile in the corner (m/s)."""
    angle_deg: float
    """Total heading change of the corner (degrees)."""


@dataclass
class RacingLine:
    """A closed racing line sampled every ``spacing`` metres, with its minimum-time speed profile.

    Point ``i`` lies ``offset[i]`` metres right of the centerline at centerline distance ``center_s[i]``.
    """

    track_name: str
    xy: np.ndarray
    """(K, 2) points (m), closed loop (last != first), point 0 on the start/finish line."""
    s: np.ndarray
    """(K,) metres along the line, s[0] = 0."""
    length: float
    heading: np.ndarray
    curvature: np.ndarray
    """(K,) 1/m, positive = right-hand bend."""
    center_s: np.ndarray
    """(K,) centerline distance of each point."""
    offset: np.ndarray
    """(K,) metres right of the centerline."""
    speed: np.ndarray
    """(K,) minimum-time speed profile (m/s)."""
    time: np.ndarray
    """(K,) seconds from point 0 along the profile."""
    lap_time: float
    """Reference lap time (s): a flying lap along the line at the profile's speed."""
    limits: KartLimits
    bounds: tuple[np.ndarray, np.ndarray] = field(repr=False, default=None)
    """(lo, hi) allowed offsets at each point (m)."""
    center_index: np.ndarray = field(repr=False, default=None)
    """(M,) index of the line point at each centerline point of the track."""
    method: str = "min-curvature"
    """How the line was found: "min-time" or "min-curvature" (see :data:`LINE_METHODS`)."""

    def index_from_centerline(self, ci: np.ndarray) -> np.ndarray:
        """Line point index matching track centerline indices (the point at the same station)."""
        return self.center_index[np.asarray(ci)]

    def nearest(self, x, y, guess: np.ndarray, window: int = 12) -> np.ndarray:
        """Nearest line index near ``guess`` (vectorised)."""
        x = np.atleast_1d(np.asarray(x, np.float64))
        y = np.atleast_1d(np.asarray(y, np.float64))
        K = len(self.s)
        cand = (np.asarray(guess)[:, None] + np.arange(-window, window + 1)[None, :]) % K
        d2 = (self.xy[cand, 0] - x[:, None]) ** 2 + (self.xy[cand, 1] - y[:, None]) ** 2
        return cand[np.arange(len(x)), d2.argmin(axis=1)]

    def speed_at(self, s) -> np.ndarray:
        s = np.mod(np.asarray(s, np.float64), self.length)
        return np.interp(s, np.append(self.s, self.length), np.append(self.speed, self.speed[0]))

    def point_at(self, s):
        """(x, y) at line distance s (vectorised, wraps)."""
        s = np.mod(np.asarray(s, np.float64), self.length)
        ss = np.append(self.s, self.length)
        return (np.interp(s, ss, np.append(self.xy[:, 0], self.xy[0, 0])),
                np.interp(s, ss, np.append(self.xy[:, 1], self.xy[0, 1])))


def _periodic_second_difference(K: int) -> sparse.csr_matrix:
    i = np.arange(K)
    rows = np.concatenate([i, i, i])
    cols = np.concatenate([(i - 1) % K, i, (i + 1) % K])
    vals = np.concatenate([np.ones(K), -2.0 * np.ones(K), np.ones(K)])
    return sparse.csr_matrix((vals, (rows, cols)), shape=(K, K))


def _resample(xy: np.ndarray, spacing: float, extra: np.ndarray | None = None):
    closed = np.vstack([xy, xy[:1]])
    seg = np.hypot(*np.diff(closed, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(16, int(round(s[-1] / spacing)))
    t = np.arange(n) * (s[-1] / n)
    out = np.column_stack([np.interp(t, s, closed[:, 0]), np.interp(t, s, closed[:, 1])])
    if extra is None:
        return out, None
    ex = np.append(extra, extra[0])
    return out, np.interp(t, s, ex)


def _track_edges(track) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right normals and the distances to the left / right road edges at every centerline point."""
    right = getattr(track, "_right", None)
    t_l = getattr(track, "_t_left", None)
    t_r = getattr(track, "_t_right", None)
    if right is None or t_l is None or t_r is None:
        h = track.heading
        right = np.column_stack([-np.sin(h), np.cos(h)])
        t_l = t_r = 0.5 * track.width
    return np.asarray(right), np.asarray(t_l), np.asarray(t_r)


@dataclass
class LineBasis:
    """The path the racing line's lateral offsets are measured from, point for point with the
    track's centerline: the centerline itself, or a smoothed copy where it kinks (a hand-drawn corner:
    there the normals fan out and cross inside the road, and the bound that keeps them apart, n kappa
    <= 0.6, held the line away from every apex: references 6-14 % slower than karts could drive)."""

    name: str
    surface: np.ndarray
    scale: float
    centerline: np.ndarray
    s: np.ndarray
    length: float
    heading: np.ndarray
    curvature: np.ndarray
    width: np.ndarray
    _right: np.ndarray
    _t_left: np.ndarray
    _t_right: np.ndarray
    station: np.ndarray
    """(M,) the track's own distance along the lap at each point (the same index on its centerline)."""
    track_length: float
    lateral: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    """Metres right of the track's centerline of points (x, y), where the basis is a smoothed copy."""


def line_basis(track) -> LineBasis:
    """The path the track's racing line is laid across: `Track.unkinked` (the centerline, or its
    smoothed copy where it kinks), with its geometry and edges."""
    c, right, t_l, t_r, sigma = track.unkinked() if hasattr(track, "unkinked") else (None, *_track_edges(track), 0.0)
    if not sigma:
        return LineBasis(track.name, track.surface, track.scale, track.centerline, track.s, track.length,
                         track.heading, track.curvature, np.asarray(track.width), right, t_l, t_r, track.s,
                         track.length)
    s, length, heading, curv = closed_geometry(c)
    return LineBasis(track.name, track.surface, track.scale, c, s, length, heading, curv, t_l + t_r, right, t_l,
                     t_r, track.s, track.length, lambda x, y: track.frame(x, y)[1])


def _check_pinch(track, width: np.ndarray, idx: np.ndarray, kart_width: float) -> None:
    """A road narrower than the kart somewhere has no line through it: name the first such place."""
    narrow = np.nonzero(width < kart_width)[0]
    if len(narrow) == 0:
        return
    i = int(idx[narrow[0]])
    x, y = track.centerline[i]
    raise TrackError(f"{track.name}: the road is only {width[narrow[0]]:.1f} m wide at {track.s[i]:.0f} m along "
                     f"the lap (pixel {x / track.scale:.0f}, {y / track.scale:.0f}), narrower than the kart "
                     f"({kart_width:.1f} m); widen the road there")


def optimise_offsets(track, margin_m: float, half_width_m: float, opt_spacing_m: float = 2.0):
    """Minimum-curvature lateral offsets (at ``opt_spacing_m`` stations along the centerline)."""
    right, t_l, t_r = _track_edges(track)
    M = len(track.centerline)
    step = max(1, int(round(opt_spacing_m / (track.length / M))))
    idx = np.arange(0, M, step)
    if len(idx) < 16:
        idx = np.arange(M)
    c = track.centerline[idx]
    nrm = right[idx]
    # smooth the edges a little: single-pixel notches must not kink the line
    keep = half_width_m + margin_m
    t_l = ndimage.minimum_filter1d(t_l, 3, mode="wrap")
    t_r = ndimage.minimum_filter1d(t_r, 3, mode="wrap")
    _check_pinch(track, t_l[idx] + t_r[idx], idx, 2.0 * half_width_m)
    lo = -t_l[idx] + keep
    hi = t_r[idx] - keep
    bad = lo > hi
    mid = 0.5 * (lo + hi)
    lo = np.where(bad, mid, lo)
    hi = np.where(bad, mid + 1e-6, hi)
    K = len(idx)
    D = _periodic_second_difference(K)
    # second differences of p = c + n * nrm, both coordinates stacked: A n + b
    A = sparse.vstack([D @ sparse.diags(nrm[:, 0]), D @ sparse.diags(nrm[:, 1])]).tocsr()
    b = np.concatenate([D @ c[:, 0], D @ c[:, 1]])
    # a whisper of offset-smoothness regularisation keeps the problem well conditioned
    reg = 1e-3
    A = sparse.vstack([A, reg * D]).tocsr()
    b = np.concatenate([b, np.zeros(K)])
    n = _box_qp(A, b, lo, hi)
    return idx, n, lo, hi


def _box_qp(A: sparse.csr_matrix, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, max_iter: int = 200) -> np.ndarray:
    """min |A x + b|^2 subject to lo <= x <= hi: a primal-dual active-set method (sparse direct solves
    on the free variables; converges in a handful of iterations on these banded problems)."""
    H = (A.T @ A).tocsc()
    g = A.T @ b
    K = len(lo)
    x = np.clip(spsolve(H + 1e-9 * sparse.identity(K, format="csc"), -g), lo, hi)
    c = 1.0 / max(float(H.diagonal().max()), 1e-12)
    prev = None
    for _ in range(max_iter):
        grad = H @ x + g
        y = x - c * grad
        at_lo = y < lo
        at_hi = (y > hi) & ~at_lo
        key = (at_lo.tobytes(), at_hi.tobytes())
        if key == prev:
            break
        prev = key
        free = ~(at_lo | at_hi)
        x = np.where(at_lo, lo, np.where(at_hi, hi, x))
        if free.any():
            fi = np.nonzero(free)[0]
            Hff = H[fi][:, fi]
            rhs = -(g[fi] + H[fi][:, ~free] @ x[~free])
            x[fi] = spsolve(Hff.tocsc(), rhs)
    else:
        res = lsq_linear(A, -b, bounds=(lo, hi), method="trf", lsmr_tol="auto", max_iter=500)
        x = res.x
    return np.clip(x, lo, hi)


def _station_speeds(track, idx: np.ndarray, n: np.ndarray, limits: KartLimits) -> np.ndarray:
    """Speed profile of the polyline through the stations (warm start of the minimum-time solve)."""
    right, _, _ = _track_edges(track)
    pts = track.centerline[idx] + right[idx] * n[:, None]
    s, length, _, curv = closed_geometry(pts, 0.0, 1.0)
    return speed_profile(np.diff(np.append(s, length)), curv, limits)


def min_time_offsets(track, limits: KartLimits, idx: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                     n0: np.ndarray, curvature_weight: float = 2.0) -> np.ndarray:
    """Minimum-time lateral offsets at the stations ``idx`` of the centerline: a direct transcription
    of the minimum-lap-time problem solved with CasADi + IPOPT.

    Decision variables are the offset ``n_i`` (within ``[lo_i, hi_i]``) and the speed ``v_i`` at every
    station, periodic over the lap. The line's curvature at a station is its turning angle over the
    mean of the two segments; the longitudinal acceleration of a segment is ``(v_{i+1}^2 - v_i^2) / 2d``.
    Constraints are the measured envelope: the g-g diagram ``|v^2 kappa| <= a_lat(v) F(a_x)``, the drive
    ``a_x <= drive(v) - cornering drag`` and the brakes ``a_x >= -brake(v)``. The objective is the lap
    time plus a small penalty on curvature jumps (keeps the line drivable between stations). Warm
    started from ``n0`` (the minimum-curvature offsets) and its speed profile.
    """
    import casadi as ca

    right, _, _ = _track_edges(track)
    c = track.centerline[idx]
    r = right[idx]
    K = len(idx)
    nxt = list(np.roll(np.arange(K), -1))
    prv = list(np.roll(np.arange(K), 1))
    n = ca.SX.sym("n", K)
    v = ca.SX.sym("v", K)
    px = c[:, 0] + r[:, 0] * n
    py = c[:, 1] + r[:, 1] * n
    dx = px[nxt] - px
    dy = py[nxt] - py
    d = ca.sqrt(dx * dx + dy * dy + 1e-6)
    # turning angle at each station between the incoming and the outgoing segment
    cross = dx[prv] * dy - dy[prv] * dx
    dot = dx[prv] * dx + dy[prv] * dy
    kappa = 2.0 * ca.atan2(cross, dot) / (d[prv] + d)
    ax = (v[nxt] ** 2 - v ** 2) / (2.0 * d)
    ay = v ** 2 * kappa
    vg = [list(limits.v)]
    lat = ca.interpolant("lat", "bspline", vg, list(limits.lateral))
    drive = ca.interpolant("drive", "bspline", vg, list(limits.drive))
    brake = ca.interpolant("brake", "bspline", vg, list(limits.brake))
    gg = ca.interpolant("gg", "bspline", [list(limits.gg_ax)], list(limits.gg_lat))
    q = (ay / G) ** 2
    c2, c4 = limits.induced
    grip = lat(v) * gg(ax)
    g_lat = ca.vertcat(ay - grip, -ay - grip)  # <= 0
    g_drive = ax - drive(v) + G * (c2 * q + c4 * q * q)  # <= 0
    g_brake = -ax - brake(v)  # <= 0
    lap = ca.sum1(2.0 * d / (v + v[nxt]))
    smooth = ca.sum1((kappa[nxt] - kappa) ** 2)
    nlp = {"x": ca.vertcat(n, v), "f": lap + curvature_weight * smooth,
           "g": ca.vertcat(g_lat, g_drive, g_brake)}
    opts = {"ipopt.print_level": 0, "print_time": False, "ipopt.sb": "yes", "ipopt.max_iter": 1000,
            "ipopt.tol": 1e-6, "ipopt.acceptable_tol": 1e-4}
    solver = ca.nlpsol("min_time", "ipopt", nlp, opts)
    v_min = float(limits.v[0])  # the tables start there (no extrapolation)
    for lo_k, hi_k in _inside_bounds(track, idx, lo, hi):
        start = np.clip(n0, lo_k, hi_k)
        v0 = np.clip(_station_speeds(track, idx, start, limits) * 0.98, v_min, limits.top_speed)
        res = solver(x0=np.concatenate([start, v0]), lbx=np.concatenate([lo_k, np.full(K, v_min)]),
                     ubx=np.concatenate([hi_k, np.full(K, limits.top_speed)]),
                     lbg=np.full(4 * K, -1e19), ubg=np.zeros(4 * K))
        # a feasible last iterate is a usable line even where IPOPT did not certify optimality (the
        # caller compares its lap with the minimum-curvature line's on the full speed profile)
        if np.all(np.isfinite(np.asarray(res["x"]))) and float(np.max(np.asarray(res["g"]))) <= 1e-3:
            return np.clip(np.asarray(res["x"]).ravel()[:K], lo_k, hi_k)
    return None


def _inside_bounds(track, idx: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """The offset bounds of the minimum-time solve, loosest first. Stations on the inside of a tight
    bend crowd towards its centre (segments shrink by 1 - n kappa): n kappa is kept <= 0.6 so the
    discrete curvature stays well conditioned, first with the curvature smoothed over 2 m, then, where
    IPOPT fails with that, with the curvature's peak around each station (a hand-drawn hairpin's
    curvature peaks between stations: on a 9 m road with a 3.5 m bend the solve failed, and the
    reference fell back to the 3.5 % slower minimum-curvature line). The second is tried only after a
    failure: it is tighter elsewhere too, and would have slowed technical.png's reference by 0.4 %."""
    sp = track.length / len(track.s)
    smooth = ndimage.gaussian_filter1d(track.curvature, 2.0 / sp, mode="wrap")
    width = 2 * int(round(STATION_M / sp)) + 1
    peak_right = ndimage.maximum_filter1d(np.maximum(track.curvature, 0.0), width, mode="wrap")
    peak_left = ndimage.maximum_filter1d(np.maximum(-track.curvature, 0.0), width, mode="wrap")
    for right_k, left_k in ((np.maximum(smooth, 0.0), np.maximum(-smooth, 0.0)), (peak_right, peak_left)):
        hi_k = np.minimum(hi, 0.6 / np.maximum(right_k[idx], 1e-9))
        lo_k = np.maximum(lo, -0.6 / np.maximum(left_k[idx], 1e-9))
        yield np.minimum(lo_k, hi_k), hi_k


def speed_profile(s_seg: np.ndarray, curvature: np.ndarray, limits: KartLimits, *, closed: bool = True,
                  v_start: float | None = None):
    """Minimum-time speed at each point of a path (segment lengths ``s_seg[i]`` from point i to i+1).

    Grip limit v <= sqrt(a_lat(v) x g-g peak / |kappa|); a forward pass with the drive acceleration
    (less cornering drag) capped by the highest longitudinal acceleration at which the g-g diagram
    still holds the lateral acceleration, and a backward pass with the braking capped by the lowest.
    ``closed``: the path is a loop (the profile is periodic).
    """
    K = len(curvature)
    k = np.abs(curvature)
    v = np.full(K, limits.top_speed)
    peak = limits.gg_peak
    for _ in range(30):  # fixed point of v = sqrt(a_lat(v) * peak / k)
        v_new = np.minimum(limits.top_speed, np.sqrt(limits.lat(v) * peak / np.maximum(k, 1e-9)))
        if np.allclose(v_new, v, atol=1e-4):
            break
        v = 0.5 * (v + v_new)
    v_lat = v
    # the g-g diagram as tables over the lateral fraction (np.interp per point is the cost otherwise)
    fr = np.linspace(0.0, peak, 200)
    lo_tab, hi_tab = limits.ax_range(fr)
    lat_v = limits.v
    lat_tab = limits.lateral

    start = int(np.argmin(v_lat)) if closed else 0
    order = (start + np.arange(K)) % K if closed else np.arange(K)
    vf = v_lat.copy()
    if not closed and v_start is not None:
        vf[0] = min(vf[0], v_start)
    # forward (acceleration) pass
    for _lap in range(2 if closed else 1):
        for j in range(len(order) - (0 if closed else 1)):
            i = order[j]
            nxt = (i + 1) % K
            if not closed and nxt == 0:
                break
            vi = vf[i]
            ay = vi * vi * k[i]
            f = ay / max(float(np.interp(vi, lat_v, lat_tab)), 1e-6)
            a = min(float(limits.acc(vi) - limits.cornering_drag(ay)), float(np.interp(f, fr, hi_tab)))
            vn = math.sqrt(max(vi * vi + 2.0 * a * s_seg[i], 0.0))
            if vn < vf[nxt]:
                vf[nxt] = vn
    # backward (braking) pass
    vb = vf.copy()
    for _lap in range(2 if closed else 1):
        for j in range(len(order) - 1, -1, -1):
            i = order[j]
            prv = (i - 1) % K
            if not closed and i == 0:
                break
            vi = vb[i]
            vp = vi
            for _it in range(2):  # the braking allowed at the earlier point's own (higher) speed
                f = vp * vp * k[prv] / max(float(np.interp(vp, lat_v, lat_tab)), 1e-6)
                a = max(min(float(limits.brk(vp)), -float(np.interp(f, fr, lo_tab))), 0.0)
                vp = math.sqrt(vi * vi + 2.0 * a * s_seg[prv])
            if vp < vb[prv]:
                vb[prv] = vp
    return vb


LINE_METHODS = ("min-time", "min-curvature")
"""``min-time``: the minimum-lap-time line (:func:`min_time_offsets`, the reference); ``min-curvature``:
the smoothed minimum-curvature line (:func:`optimise_offsets`)."""

SOLVER_VERSION = 2
"""Part of the disk-cache key of minimum-time lines: bump it when the solve changes."""

REFERENCE_MARGIN_M = 0.05
"""Clearance beyond half the kart's width of the reference line: the road a driver can really use
(the surface counts under the kart's centre), so that no driver gains by using more of it (at
0.35 m, the hard AI's old margin, a hard AI with 10 % more grip beat the 13 m star's reference by 1.9 %)."""

LINE_SMOOTH_M = 2.0
"""Gaussian smoothing of the line's points along the lap (m)."""

STATION_M = 2.0
"""Spacing of the optimisation stations along the centerline (m)."""


def racing_line(track, cfg: KartConfig | None = None, *, line: str = "min-time",
                margin_m: float = REFERENCE_MARGIN_M, spacing_m: float = 0.5,
                grip_scale: float = 1.0, brake_scale: float = 1.0) -> RacingLine:
    """The racing line of ``track`` for the kart ``cfg`` and its minimum-time speed profile.

    ``line``: one of :data:`LINE_METHODS`. The minimum-time geometry is solved once per track, kart
    and margin (at full grip; cached on disk, see :func:`line_cache_dir`); other grips get their own
    speed profile on it. Where
    the minimum-curvature line is faster (never on the bundled tracks), that one is returned.
    ``margin_m``: extra clearance beyond half the kart's width from each road edge. ``grip_scale``
    scales the tyre-limited figures (lateral and braking) of the speed profile; ``brake_scale``
    scales the braking further, straight-line and combined (a driver that brakes earlier than the limit). Cached per
    (track, config, line, margin, spacing, grip, brake) in memory.
    """
    if line not in LINE_METHODS:
        raise ConfigError(f"unknown racing line {line!r}; choose one of {', '.join(LINE_METHODS)}")
    if margin_m < 0:
        raise ConfigError(f"racing line margin must be >= 0 m, got {margin_m}")
    cfg = cfg or KartConfig()
    key = (id(track), track.name, float(track.length), _cfg_key(cfg), line, float(margin_m),
           float(spacing_m), float(grip_scale), float(brake_scale))
    hit = _LINE_CACHE.get(key)
    if hit is not None and hit[0] is track:
        return hit[1]
    limits = kart_limits(cfg)
    if grip_scale != 1.0 or brake_scale != 1.0:
        limits = limits.scaled(grip_scale, brake=grip_scale * brake_scale)
    keep = 0.5 * cfg.width_m + margin_m
    basis = line_basis(track)
    idx, n, lo, hi = optimise_offsets(basis, margin_m, 0.5 * cfg.width_m, STATION_M)
    result = line_from_offsets(basis, limits, idx, n, lo, hi, keep, spacing_m)
    if line == "min-time":
        n_mt = _min_time_reference(basis, cfg, margin_m)
        if len(n_mt) == len(idx):
            fast = line_from_offsets(basis, limits, idx, np.clip(n_mt, lo, hi), lo, hi, keep, spacing_m,
                                     "min-time")
            if fast.lap_time <= result.lap_time:
                result = fast
    if len(_LINE_CACHE) > 32:
        _LINE_CACHE.clear()
    _LINE_CACHE[key] = (track, result)
    return result


_LINE_CACHE: dict = {}


def line_cache_dir() -> Path:
    """Folder of the solved minimum-time lines: ``$KARTSIM_CACHE_DIR`` or the user's cache folder
    (``$XDG_CACHE_HOME`` or ``~/.cache``) / kartsim / racing_lines."""
    env = os.environ.get("KARTSIM_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kartsim" / "racing_lines"


def _line_key(track, cfg: KartConfig, margin_m: float) -> str:
    """Content hash of what the minimum-time line depends on: the track's surfaces, scale,
    centerline (start, direction) and road edges, the kart's configuration, the physics code and the
    solver version."""
    h = hashlib.sha256()
    h.update(f"v{SOLVER_VERSION} {_physics_hash()} margin {margin_m:g} station {STATION_M} "
             f"scale {track.scale}".encode())
    h.update(np.ascontiguousarray(track.surface, np.uint8).tobytes())
    h.update(np.round(np.asarray(track.centerline, np.float64), 6).tobytes())
    for edge in _track_edges(track)[1:]:
        h.update(np.round(np.asarray(edge, np.float64), 3).tobytes())
    h.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:32]


def _min_time_reference(track, cfg: KartConfig, margin_m: float = REFERENCE_MARGIN_M) -> np.ndarray:
    """Minimum-time offsets at the stations for the margin ``margin_m`` and full grip: from the disk
    cache when a readable entry is there (a .npz of plain arrays, loaded without pickle), else solved
    and stored. An empty array when IPOPT finds no solution (the caller keeps the other line)."""
    path = line_cache_dir() / f"{track.name}-{_line_key(track, cfg, margin_m)}.npz"
    half = 0.5 * cfg.width_m
    idx, n0, lo, hi = optimise_offsets(track, margin_m, half, STATION_M)
    try:
        with np.load(path, allow_pickle=False) as z:
            n = np.asarray(z["offset"], np.float64)
        if n.shape == idx.shape and np.all(np.isfinite(n)):
            return n
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        pass  # missing or corrupt: solve again
    n = min_time_offsets(track, kart_limits(cfg), idx, lo, hi, n0)
    if n is None:
        return np.zeros(0)
    _store(path, offset=n, station=idx)
    return n


def line_from_offsets(track: LineBasis, limits: KartLimits, idx: np.ndarray, n: np.ndarray, lo: np.ndarray,
                      hi: np.ndarray, keep: float, spacing_m: float, method: str = "min-curvature") -> RacingLine:
    """The racing line through offsets ``n`` at stations ``idx`` of the basis (`line_basis`):
    interpolated to every point, lightly smoothed, kept ``keep`` metres inside the road edges,
    resampled every ``spacing_m`` metres, with its speed profile."""
    M = len(track.centerline)
    # offsets at every centerline point: a periodic cubic spline through the stations (linear
    # interpolation would put a kink, a curvature spike the speed profile brakes for, at each one)
    st = track.s[idx]
    n_full = CubicSpline(np.append(st, track.length), np.append(n, n[0]), bc_type="periodic")(track.s)
    lo_full = np.interp(track.s, np.append(st, track.length), np.append(lo, lo[0]))
    hi_full = np.interp(track.s, np.append(st, track.length), np.append(hi, hi[0]))
    sp = track.length / M
    n_full = ndimage.gaussian_filter1d(n_full, 1.5 / sp, mode="wrap")
    # hard limits from the raw edges at every point (smoothing must not push the line off the road)
    right, t_l, t_r = _track_edges(track)
    n_full = np.clip(n_full, np.minimum(-t_l + keep, 0.0), np.maximum(t_r - keep, 0.0))
    pts = track.centerline + right * n_full[:, None]
    # the centerline's normals carry the image's pixel noise, times the offset: smooth the points
    # (by ~0.1-0.2 m, inside the margin) or the speed profile brakes for curvature noise no kart feels
    pts = ndimage.gaussian_filter1d(pts, LINE_SMOOTH_M / sp, axis=0, mode="wrap")
    station = getattr(track, "station", track.s)  # a plain Track is its own basis
    xy, cs = _resample(pts, spacing_m, station)
    _, off = _resample(pts, spacing_m, n_full)
    # keep centerline station monotonic across the wrap
    cs = np.mod(cs, getattr(track, "track_length", track.length))
    s, length, heading, curv = closed_geometry(xy, 1.0, spacing_m)
    seg = np.diff(np.append(s, length))
    speed = speed_profile(seg, curv, limits)
    dt = 2.0 * seg / np.maximum(speed + np.roll(speed, -1), 1e-6)
    time = np.concatenate([[0.0], np.cumsum(dt[:-1])])
    lap_time = float(dt.sum())
    # line index for each centerline point (nearest station)
    order = np.argsort(cs)
    pos = np.searchsorted(cs[order], station)
    pos = np.clip(pos, 0, len(cs) - 1)
    center_index = order[pos]
    bounds = (np.interp(cs, station, lo_full), np.interp(cs, station, hi_full))
    if getattr(track, "lateral", None) is not None:  # offsets and bounds from the track's own centerline, not the basis's
        shift = track.lateral(xy[:, 0], xy[:, 1]) - off
        off, bounds = off + shift, (bounds[0] + shift, bounds[1] + shift)
    return RacingLine(track.name, xy, s, length, heading, curv, cs, off, speed, time, lap_time, limits,
                      bounds, center_index, method)


def reference_lap_time(track, cfg: KartConfig | None = None) -> float:
    """The reference (minimum-time) flying lap time of ``track`` for the kart ``cfg`` (s)."""
    return racing_line(track, cfg).lap_time


# ---------------------------------------------------------------------------------------- corners


def corners(track, line: RacingLine, *, min_curvature: float = 1.0 / 60.0, min_angle_deg: float = 20.0,
            merge_m: float = 6.0) -> list[Corner]:
    """Corners: runs of the (smoothed) centerline curvature above ``min_curvature`` of one sign,
    turning at least ``min_angle_deg``; the apex is the tightest point of the racing line there."""
    sp = track.length / len(track.s)
    k = ndimage.gaussian_filter1d(track.curvature, 3.0 / sp, mode="wrap")
    M = len(k)
    flag = np.where(np.abs(k) >= min_curvature, np.sign(k), 0).astype(int)
    if not flag.any():
        return []
    # rotate so that we start on a straight
    start = int(np.argmin(np.abs(k)))
    f = np.roll(flag, -start)
    runs: list[list[int]] = []  # [begin, end (exclusive), sign]
    i = 0
    while i < M:
        if f[i] == 0:
            i += 1
            continue
        j = i
        while j < M and f[j] == f[i]:
            j += 1
        if runs and runs[-1][2] == f[i] and (i - runs[-1][1]) * sp <= merge_m:
            runs[-1][1] = j
        else:
            runs.append([i, j, int(f[i])])
        i = j
    out: list[Corner] = []
    for b, e, sign in runs:
        ids = (np.arange(b, e) + start) % M
        angle = abs(float(np.sum(track.curvature[ids]) * sp))
        if math.degrees(angle) < min_angle_deg:
            continue
        s0 = track.s[ids[0]]
        span = (e - b) * sp
        # racing line points within the corner (by centerline station), with a little slack around it
        rel = np.mod(line.center_s - s0 + 5.0, track.length)
        sel = np.nonzero(rel <= span + 10.0)[0]
        if len(sel) == 0:
            continue
        kl = np.abs(line.curvature[sel]) * (np.sign(line.curvature[sel]) == sign)
        a = sel[int(np.argmax(kl))]
        out.append(Corner(0, "right" if sign > 0 else "left", float(line.center_s[a]),
                          (float(line.xy[a, 0]), float(line.xy[a, 1])),
                          float(1.0 / max(abs(line.curvature[a]), 1e-9)), float(line.speed[sel].min()),
                          math.degrees(angle)))
    out.sort(key=lambda c: c.apex_s)
    for i, c in enumerate(out):
        c.index = i + 1
    return out


def plot_racing_line(track, line: RacingLine, path, corner_list: list[Corner] | None = None) -> None:
    """PNG of the track with the racing line coloured by the reference speed and the corners numbered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = track.rgb.shape[:2]
    fig, ax = plt.subplots(figsize=(8, 8 * h / w))
    ax.imshow(track.rgb, extent=(0, w * track.scale, h * track.scale, 0))
    sc = ax.scatter(line.xy[:, 0], line.xy[:, 1], c=line.speed, s=2, cmap="plasma")
    fig.colorbar(sc, ax=ax, label="reference speed (m/s)", shrink=0.8)
    for c in corner_list or []:
        ax.annotate(str(c.index), c.apex_xy, color="white", fontsize=9, ha="center", va="center",
                    bbox=dict(boxstyle="circle,pad=0.2", fc="black", alpha=0.6))
    ax.set_title(f"{track.name}: {line.method} line, lap {line.lap_time:.2f} s")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
