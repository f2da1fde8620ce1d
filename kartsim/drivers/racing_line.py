"""Racing line and reference lap time of a track for a kart.

* :func:`kart_limits` measures the kart's g-g envelope **on the simulated physics itself** (a batch of
  karts on an open asphalt field): the steady-state lateral grip as a function of speed, the straight
  line braking deceleration as a function of speed, and the drive acceleration (engine power, drive
  force cap, drag and rolling resistance). Measuring instead of assuming keeps the reference truthful
  for whatever :class:`~kartsim.sim.config.KartConfig` is used.
* :func:`racing_line` computes a smoothed minimum-curvature line inside the track limits (lateral
  offsets along the centerline normals, bounded by ``kart width / 2 + margin`` from each road edge,
  solved as a bounded sparse least-squares problem on the line's second differences), then a
  minimum-time speed profile on it: the grip limit ``v <= sqrt(a_lat(v) / |kappa|)``, a forward pass
  with the acceleration left by the friction ellipse and a backward pass with the braking left by it.
  Its ``lap_time`` is the **reference lap time** (a flying lap: the kart crosses the line at the
  profile's speed).
* :func:`corners` lists the corners (apex position, radius, minimum speed, direction).

Coordinates follow docs/ARCHITECTURE.md (metres, y down, positive curvature = right-hand bend,
lateral offset > 0 = right of the centerline).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import ndimage, sparse
from scipy.optimize import lsq_linear
from scipy.sparse.linalg import spsolve

from kartsim.errors import ConfigError
from kartsim.sim.config import KartConfig
from kartsim.sim.physics import ASPHALT, KartPhysics, KartState

G = 9.81

__all__ = ["KartLimits", "kart_limits", "RacingLine", "racing_line", "Corner", "corners",
           "reference_lap_time"]


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
        """Limits with the tyre-limited figures scaled (lateral and braking; drive is engine-limited)."""
        brake = grip if brake is None else brake
        return KartLimits(self.v, self.lateral * grip, self.brake * brake,
                          np.minimum(self.drive, self.brake * brake), self.top_speed, self.induced)


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
    """Measure (once per config; cached) the kart's lateral, braking and drive limits on dry asphalt."""
    cfg = cfg or KartConfig()
    return _kart_limits_cached(_cfg_key(cfg))


@lru_cache(maxsize=16)
def _kart_limits_cached(key: tuple) -> KartLimits:
    cfg = KartConfig.from_dict(dict(key))
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
    return KartLimits(v_grid, lateral, brake, drive, top, induced)


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


def _closed_geometry(xy: np.ndarray, smooth_m: float, spacing: float):
    nxt = np.roll(xy, -1, axis=0)
    seg = np.hypot(*(nxt - xy).T)
    s = np.concatenate([[0.0], np.cumsum(seg[:-1])])
    length = float(seg.sum())
    d = np.roll(xy, -1, axis=0) - np.roll(xy, 1, axis=0)
    heading = np.arctan2(d[:, 1], d[:, 0])
    dh = np.angle(np.exp(1j * (np.roll(heading, -1) - np.roll(heading, 1))))
    curv = dh / np.maximum(seg + np.roll(seg, 1), 1e-9)
    if smooth_m > 0:
        curv = ndimage.gaussian_filter1d(curv, max(smooth_m / spacing, 0.5), mode="wrap")
    return s, length, heading, curv


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
    lo = -ndimage.minimum_filter1d(t_l, 3, mode="wrap")[idx] + keep
    hi = ndimage.minimum_filter1d(t_r, 3, mode="wrap")[idx] - keep
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


def speed_profile(s_seg: np.ndarray, curvature: np.ndarray, limits: KartLimits, *, closed: bool = True,
                  v_start: float | None = None):
    """Minimum-time speed at each point of a path (segment lengths ``s_seg[i]`` from point i to i+1).

    Grip limit v <= sqrt(a_lat(v) / |kappa|); forward pass with the drive acceleration left by the
    friction ellipse, backward pass with the braking left by it. ``closed``: the path is a loop
    (the profile is periodic).
    """
    K = len(curvature)
    k = np.abs(curvature)
    v = np.full(K, limits.top_speed)
    for _ in range(30):  # fixed point of v = sqrt(a_lat(v) / k)
        v_new = np.minimum(limits.top_speed, np.sqrt(limits.lat(v) / np.maximum(k, 1e-9)))
        if np.allclose(v_new, v, atol=1e-4):
            break
        v = 0.5 * (v + v_new)
    v_lat = v

    def ellipse(vv, kk):
        use = vv * vv * kk / limits.lat(vv)
        return np.sqrt(np.clip(1.0 - use * use, 0.0, 1.0))

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
            a = limits.acc(vi) - limits.cornering_drag(vi * vi * k[i])
            vn = math.sqrt(max(vi * vi + 2.0 * a * s_seg[i], 0.0))
            if vn < vf[nxt]:
                vf[nxt] = vn
    # backward (braking) pass
    vb = vf.copy()
    for _lap in range(2 if closed else 1):
        for j in range(len(order) - 1, -1 if not closed else -1, -1):
            i = order[j]
            prv = (i - 1) % K
            if not closed and i == 0:
                break
            vi = vb[i]
            a = limits.brk(vi) * ellipse(vi, k[prv])
            vp = math.sqrt(vi * vi + 2.0 * a * s_seg[prv])
            if vp < vb[prv]:
                vb[prv] = vp
    return vb


def racing_line(track, cfg: KartConfig | None = None, *, margin_m: float = 0.35, spacing_m: float = 0.5,
                grip_scale: float = 1.0) -> RacingLine:
    """The minimum-curvature racing line of ``track`` and its minimum-time speed profile for ``cfg``.

    ``margin_m``: extra clearance beyond half the kart's width from each road edge. Cached per
    (track, config, margin, spacing, grip) in memory.
    """
    cfg = cfg or KartConfig()
    key = (id(track), track.name, float(track.length), _cfg_key(cfg), float(margin_m), float(spacing_m),
           float(grip_scale))
    hit = _LINE_CACHE.get(key)
    if hit is not None and hit[0] is track:
        return hit[1]
    line = _compute_line(track, cfg, margin_m, spacing_m, grip_scale)
    if len(_LINE_CACHE) > 32:
        _LINE_CACHE.clear()
    _LINE_CACHE[key] = (track, line)
    return line


_LINE_CACHE: dict = {}


def _compute_line(track, cfg: KartConfig, margin_m: float, spacing_m: float, grip_scale: float) -> RacingLine:
    if margin_m < 0:
        raise ConfigError(f"racing line margin must be >= 0 m, got {margin_m}")
    limits = kart_limits(cfg)
    if grip_scale != 1.0:
        limits = limits.scaled(grip_scale)
    half = 0.5 * cfg.width_m
    idx, n, lo, hi = optimise_offsets(track, margin_m, half)
    M = len(track.centerline)
    # offsets at every centerline point (periodic linear interpolation of the stations), then smooth
    st = track.s[idx]
    n_full = np.interp(track.s, np.append(st, track.length), np.append(n, n[0]))
    lo_full = np.interp(track.s, np.append(st, track.length), np.append(lo, lo[0]))
    hi_full = np.interp(track.s, np.append(st, track.length), np.append(hi, hi[0]))
    sp = track.length / M
    n_full = ndimage.gaussian_filter1d(n_full, 1.5 / sp, mode="wrap")
    # hard limits from the raw edges at every point (smoothing must not push the line off the road)
    right, t_l, t_r = _track_edges(track)
    keep = half + margin_m
    n_full = np.clip(n_full, np.minimum(-t_l + keep, 0.0), np.maximum(t_r - keep, 0.0))
    pts = track.centerline + right * n_full[:, None]
    xy, cs = _resample(pts, spacing_m, track.s)
    _, off = _resample(pts, spacing_m, n_full)
    # keep centerline station monotonic across the wrap
    cs = np.mod(cs, track.length)
    s, length, heading, curv = _closed_geometry(xy, 1.0, spacing_m)
    seg = np.diff(np.append(s, length))
    speed = speed_profile(seg, curv, limits)
    dt = 2.0 * seg / np.maximum(speed + np.roll(speed, -1), 1e-6)
    time = np.concatenate([[0.0], np.cumsum(dt[:-1])])
    lap_time = float(dt.sum())
    # line index for each centerline point (nearest station)
    order = np.argsort(cs)
    pos = np.searchsorted(cs[order], track.s)
    pos = np.clip(pos, 0, len(cs) - 1)
    center_index = order[pos]
    bounds = (np.interp(cs, track.s, lo_full), np.interp(cs, track.s, hi_full))
    return RacingLine(track.name, xy, s, length, heading, curv, cs, off, speed, time, lap_time, limits,
                      bounds, center_index)


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
    ax.set_title(f"{track.name}: racing line, reference lap {line.lap_time:.2f} s")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
