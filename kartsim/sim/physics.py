"""Batched kart physics: a dynamic bicycle model with saturating tyres, surfaces and wall collisions.

All karts are stepped by one numba kernel that loops over them (no per-kart Python loop).
Conventions (see docs/ARCHITECTURE.md): world metres with the image axes (y points down),
``yaw = atan2(dy, dx)``, steering +1 = turn right = positive yaw rate, body frame ``vx`` forward and
``vy`` to the driver's right.

Model, per kart and per integration step ``h`` (``cfg.dt``, subdivided at speed so that a kart never
moves more than ``cfg.max_travel_fraction * cfg.radius_m`` between two wall checks when a wall is
within reach of the step):

* steering: the wheel angle follows ``steer_cmd * max_steer_rad`` at most ``steer_rate_rad_s``;
* axle loads: static split from the centre of gravity plus longitudinal load transfer (from the
  previous integration step's acceleration); each axle's friction falls with load above its static
  load (``load_sensitivity``) and the front axle has ``front_grip_factor`` of the rear's friction;
* longitudinal: rear-wheel drive ``min(max_drive_force_n, engine_power_w / v)``, front-biased brakes
  (``brake_front_share``), slow reverse once (nearly) stopped, aerodynamic drag and surface-dependent
  rolling resistance;
* lateral: per-axle slip angle, a Pacejka-like curve (peak at ``tyre_peak_slip_rad``, falling to
  ``tyre_sliding_ratio`` of the peak when sliding; a rational function of tan(alpha)) scaled by the
  friction-circle capacity left by the longitudinal force (so a braked or driven axle loses lateral
  grip: brake + lock or a big lift-off at speed can spin the kart), and limited to the force that
  would stop the axle's sideways sliding within the step (this keeps the explicit integration stable
  at any speed, down to zero, and makes low-speed turning kinematic);
* walls: the kart is a circle of ``radius_m``; when the wall-distance field at its centre is below the
  radius it is pushed out along the field's gradient, the velocity into the wall is reflected with
  ``wall_restitution`` and the tangential speed reduced by ``wall_friction``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from numba import njit

from kartsim.errors import ConfigError
from kartsim.sim.columns import Column, ColumnOwner, Columns
from kartsim.sim.config import KartConfig

G = 9.81

# Surface codes (same numbers as kartsim.sim.track.Surface; physics does not import track).
WALL, ASPHALT, KERB, GRASS = 0, 1, 2, 3

__all__ = ["KART_COLUMNS", "KartState", "KartPhysics", "WALL", "ASPHALT", "KERB", "GRASS", "weather_grip"]

def _tyre_curve(x, A):
    return x * (A + x * x) / (1.0 + x * x) ** 1.5


def _tyre_shape(ratio: float) -> tuple[float, float, float]:
    """Shape A of f(x) = x (A + x^2) / (1 + x^2)^1.5 whose tail/peak = ratio; returns A, x_peak, peak.

    f'(x) = 0 at x^2 = A / (2A - 3) (A > 1.5) and f -> 1 as x -> infinity, so tail/peak = 1/f(x_peak).
    """
    lo, hi = 1.5 + 1e-9, 3.0
    for _ in range(100):
        A = 0.5 * (lo + hi)
        xp = math.sqrt(A / (2 * A - 3))
        if 1.0 / _tyre_curve(xp, A) > ratio:
            lo = A
        else:
            hi = A
    A = 0.5 * (lo + hi)
    xp = math.sqrt(A / (2 * A - 3))
    return A, xp, _tyre_curve(xp, A)


def _params(cfg: KartConfig) -> np.ndarray:
    """The kernels' parameters as one named record (a structured array of one element): every number
    of ``cfg`` under its field name, then what the kernels derive from them once."""
    A, x_peak, peak = _tyre_shape(cfg.tyre_sliding_ratio)
    derived = {
        "cg_to_rear_m": cfg.wheelbase_m - cfg.cg_to_front_m,
        "tyre_A": A,
        "tyre_B": x_peak / math.tan(cfg.tyre_peak_slip_rad),
        "tyre_norm": 1.0 / peak,
        "peak_slip_tan": math.tan(cfg.tyre_peak_slip_rad),
        "max_travel_m": cfg.max_travel_fraction * cfg.radius_m,
        "wear_per_j": cfg.tyre_wear_per_mj * 1e-6,
        # per-surface tables indexed by surface code (WALL uses asphalt figures: the kart is pushed out)
        "mu": (cfg.mu_asphalt, cfg.mu_asphalt, cfg.mu_kerb, cfg.mu_grass),
        "rolling": (cfg.rolling_asphalt, cfg.rolling_asphalt, cfg.rolling_kerb, cfg.rolling_grass),
    }
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
              if isinstance(getattr(cfg, f.name), (int, float)) and not isinstance(getattr(cfg, f.name), bool)}
    values.update(derived)
    record = np.zeros(1, np.dtype([(name, np.float64, np.shape(v)) for name, v in values.items()], align=True))
    for name, v in values.items():
        record[name] = v
    return record


F8, U8, B1, I32 = np.float64, np.uint8, np.bool_, np.int32
KART_COLUMNS = Columns("KartArrays", __name__, [
    # name, dtype, value written by KartState.reset (None: kept or set from its arguments), init, doc
    Column("x", F8, None, doc="Centre position (m), image x axis."),
    Column("y", F8, None, doc="Centre position (m), image y axis (points down)."),
    Column("yaw", F8, None, doc="Heading atan2(dy, dx) (rad), wrapped to [-pi, pi)."),
    Column("vx", F8, 0.0, doc="Body-frame forward velocity (m/s)."),
    Column("vy", F8, 0.0, doc="Body-frame velocity to the driver's right (m/s)."),
    Column("yaw_rate", F8, 0.0, doc="Yaw rate (rad/s), positive = turning right."),
    Column("steer", F8, 0.0, doc="Front wheel angle (rad), positive = right."),
    Column("throttle", F8, 0.0, doc="Applied throttle in [-1, 1] (negative = brake / reverse)."),
    Column("ax", F8, 0.0, doc="Body-frame longitudinal acceleration from tyres and drag, mean over the last "
                              "step (m/s^2)."),
    Column("ay", F8, 0.0, doc="Body-frame lateral acceleration (to the right), mean over the last step (m/s^2)."),
    Column("slip_angle", F8, 0.0, doc="Body slip angle atan2(vy, vx) (rad), 0 below cfg.slip_min_speed."),
    Column("speed", F8, 0.0, doc="hypot(vx, vy) (m/s)."),
    Column("impact_speed", F8, 0.0, doc="Largest speed into a wall during the last step (m/s), 0 without contact."),
    Column("tyre_condition", F8, None, 1.0,
           doc="Tyre condition, 1.0 = new, falling with tyre work (sliding wears faster); 0 = worn out."),
    Column("wetness", F8, None, doc="Wetness of the track under the kart: 0 dry, 0.5 damp, 1 wet (``WEATHER``)."),
    Column("damage", F8, 0.0, doc="Accumulated damage in [0, 1] from impacts above ``cfg.damage_threshold_mps``."),
    Column("steer_bias", F8, 0.0, doc="Bent steering: wheel angle added to every steering input (rad, > 0 pulls "
                                      "right)."),
    Column("kart_impact_speed", F8, 0.0, doc="Largest closing speed of a kart-to-kart contact during the last step "
                                             "(m/s)."),
    Column("surface", U8, None, doc="Surface code under the kart centre (0 wall, 1 asphalt, 2 kerb, 3 grass)."),
    Column("wall_hit", B1, False, doc="True if the kart touched a wall during the last step."),
    Column("kart_hit", B1, False, doc="True if the kart touched another kart during the last step."),
    Column("track_idx", I32, None, doc="Index of the kart's track in the stacked grids."),
    Column("world", I32, None, np.arange,
           doc="Collision world: karts collide only with karts of the same world on the same track. "
               "Defaults to ``arange(n)``: every kart alone (the independent karts of a batched env)."),
])
KartArrays = KART_COLUMNS.record  # module-level: pickle and numba's cache find the class by name


class KartState(ColumnOwner):
    """Struct of arrays for N karts (one per :data:`KART_COLUMNS` column, e.g. ``state.x``), allocated
    once; kernels take ``state.arrays`` (the same arrays, see :mod:`kartsim.sim.columns`) and write
    into them in place."""

    def __init__(self, n: int):
        if n < 1:
            raise ConfigError(f"KartState needs at least one kart, got n={n}")
        self.n = int(n)
        self.arrays: KartArrays = KART_COLUMNS.allocate(self.n)
        KART_COLUMNS.attach(self, self.arrays)
        self._own_worlds = self.world.copy()

    def reset(self, idx, x, y, yaw, tyre_condition=1.0) -> None:
        """Place karts ``idx`` at (x, y) facing ``yaw`` with zero velocity, steering and telemetry,
        no damage and tyres of ``tyre_condition`` (wetness, surface, world and track are kept)."""
        idx = np.atleast_1d(np.asarray(idx))
        self.x[idx] = x
        self.y[idx] = y
        self.yaw[idx] = np.mod(np.asarray(yaw, np.float64) + np.pi, 2 * np.pi) - np.pi
        KART_COLUMNS.reset(self.arrays, idx)
        self.tyre_condition[idx] = tyre_condition

    def copy(self) -> "KartState":
        return self.subset(slice(None))

    def subset(self, idx) -> "KartState":
        """A new KartState holding copies of karts ``idx`` (for tests and tools)."""
        idx = np.arange(self.n)[idx] if isinstance(idx, slice) else np.atleast_1d(np.asarray(idx))
        s = KartState(len(idx))
        for mine, theirs in zip(self.arrays, s.arrays):
            theirs[:] = mine[idx]
        return s

    def collisions_possible(self) -> bool:
        """Whether two karts share a track and a world (then kart-to-kart contacts are resolved)."""
        if self.n < 2:
            return False
        if np.array_equal(self.world, self._own_worlds):
            return False  # the default: every kart alone (checked every step, so this must be cheap)
        key = self.world.astype(np.int64) * 65536 + self.track_idx.astype(np.int64)
        return len(np.unique(key)) < self.n


def weather_grip(cfg: KartConfig, wetness) -> np.ndarray:
    """Grip multiplier for a wetness in [0, 1] (dry 1, damp ``cfg.damp_grip``, wet ``cfg.wet_grip``)."""
    w = np.clip(np.asarray(wetness, np.float64), 0.0, 1.0)
    return np.where(w <= 0.5, 1.0 + (cfg.damp_grip - 1.0) * w / 0.5,
                    cfg.damp_grip + (cfg.wet_grip - cfg.damp_grip) * (w - 0.5) / 0.5)


# --------------------------------------------------------------------------------------------------
# numba kernels


@njit(cache=True, fastmath=True, inline="always")
def _wall_dist(wd, t, x, y, inv_s):
    """Bilinear wall distance at (x, y) (m) from pixel-centre samples; outside the grid = 0."""
    H = wd.shape[1]
    W = wd.shape[2]
    u = x * inv_s - 0.5
    v = y * inv_s - 0.5
    if not (u > -1.0 and v > -1.0 and u < W and v < H):
        return 0.0
    c0 = int(math.floor(u))
    r0 = int(math.floor(v))
    fu = u - c0
    fv = v - r0
    d00 = 0.0
    d01 = 0.0
    d10 = 0.0
    d11 = 0.0
    if r0 >= 0:
        if c0 >= 0:
            d00 = wd[t, r0, c0]
        if c0 + 1 < W:
            d01 = wd[t, r0, c0 + 1]
    if r0 + 1 < H:
        if c0 >= 0:
            d10 = wd[t, r0 + 1, c0]
        if c0 + 1 < W:
            d11 = wd[t, r0 + 1, c0 + 1]
    return (d00 * (1.0 - fu) + d01 * fu) * (1.0 - fv) + (d10 * (1.0 - fu) + d11 * fu) * fv


@njit(cache=True, fastmath=True, inline="always")
def _surface_at(surf, t, x, y, inv_s):
    H = surf.shape[1]
    W = surf.shape[2]
    if x < 0.0 or y < 0.0:
        return 0
    c = int(x * inv_s)
    r = int(y * inv_s)
    if c >= W or r >= H:
        return 0
    return surf[t, r, c]


@njit(cache=True, fastmath=True, inline="always")
def _tyre(tan_alpha, B, A, norm):
    """Normalised lateral force (fraction of the axle's capacity), odd in the slip, opposing it.

    A cheap Pacejka-like curve in tan(slip angle): linear at first, peak 1 at tyre_peak_slip_rad,
    then falling to tyre_sliding_ratio when fully sideways (no transcendental functions).
    """
    x = B * tan_alpha
    if x > 1e4:
        x = 1e4
    elif x < -1e4:
        x = -1e4
    q = 1.0 + x * x
    return -norm * x * (A + x * x) / (q * math.sqrt(q))


@njit(cache=True, fastmath=True, inline="always")
def _command(c):
    """A command clipped to [-1, 1]; NaN reads as 0."""
    if c > 1.0:
        c = 1.0
    elif c < -1.0:
        c = -1.0
    if not (c == c):
        c = 0.0
    return c


@njit(cache=True, fastmath=True)
def _step_kernel(params, surf, wd, scale, ks, throttle_cmd, steer_cmd, substeps):  # noqa: C901 (numba kernel)
    """``substeps`` integration steps of every kart of ``ks`` (a KartArrays record, written in place)
    with the commands held; ``params`` is :func:`_params`' record."""
    ks = KartArrays(*ks)
    p = params[0]
    n = ks.x.shape[0]
    dt = p.dt
    m = p.mass_kg
    inv_m = 1.0 / m
    Iz = p.yaw_inertia_kgm2
    inv_I = 1.0 / Iz
    a = p.cg_to_front_m
    b = p.cg_to_rear_m
    L = a + b
    hcg = p.cg_height_m
    rad = p.radius_m
    max_steer = p.max_steer_rad
    steer_rate = p.steer_rate_rad_s
    power = p.engine_power_w
    f_drive = p.max_drive_force_n
    f_brake = p.brake_force_n
    f_rev = p.reverse_force_n
    v_rev = p.max_reverse_speed
    v_rev_th = p.reverse_threshold_speed
    drag = p.drag_coeff
    tB = p.tyre_B
    tC = p.tyre_A
    tN = p.tyre_norm
    rest = p.wall_restitution
    wfric = p.wall_friction
    travel = p.max_travel_m
    slip_v = p.slip_min_speed
    front_mu = p.front_grip_factor
    b_front = p.brake_front_share
    load_sens = p.load_sensitivity
    wear_k = p.wear_per_j
    slide_wear = p.tyre_slide_wear_factor
    worn_loss = p.tyre_worn_grip_loss
    damp_g = p.damp_grip
    wet_g = p.wet_grip
    wet_brake = p.wet_brake_factor
    dmg_th = p.damage_threshold_mps
    dmg_k = p.damage_per_mps
    dmg_power = p.damage_power_loss
    dmg_pull = p.damage_steer_pull_rad
    peak_tan = p.peak_slip_tan
    mu_tab = p.mu
    rr_tab = p.rolling
    mg = m * G
    fz_f_static = mg * b / L
    fz_r_static = mg * a / L
    min_fz = 0.05 * mg
    K_r = inv_m + b * b * inv_I  # effective inverse mass of the rear axle, lateral direction
    T_total = dt * substeps

    for k in range(n):
        t = ks.track_idx[k]
        s = scale[t]
        inv_s = 1.0 / s
        thr = _command(throttle_cmd[k])
        sc = _command(steer_cmd[k])
        # kart condition: weather and tyre wear scale the grip; damage costs power and bends the steering
        cond = ks.tyre_condition[k]
        wet = ks.wetness[k]
        if wet < 0.0:
            wet = 0.0
        elif wet > 1.0:
            wet = 1.0
        if wet <= 0.5:
            wgrip = 1.0 + (damp_g - 1.0) * wet * 2.0
        else:
            wgrip = damp_g + (wet_g - damp_g) * (wet - 0.5) * 2.0
        brake_grip = 1.0 - (1.0 - wet_brake) * wet
        dmg = ks.damage[k]
        power_k = power * (1.0 - dmg_power * dmg)
        f_drive_k = f_drive * (1.0 - dmg_power * dmg)
        bias = ks.steer_bias[k]
        target = sc * max_steer + bias
        if target > max_steer:
            target = max_steer
        elif target < -max_steer:
            target = -max_steer
        work = 0.0
        hit_nx = 0.0
        hit_ny = 0.0

        px = ks.x[k]
        py = ks.y[k]
        psi = ks.yaw[k]
        u = ks.vx[k]
        v = ks.vy[k]
        w = ks.yaw_rate[k]
        dlt = ks.steer[k]
        ax_prev = ks.ax[k]
        ax_acc = 0.0
        ay_acc = 0.0
        hit = False
        impact = 0.0
        code = 0

        for _sub in range(substeps):
            grip = wgrip * (1.0 - worn_loss * (1.0 - cond))
            sub_impact = 0.0
            spd0 = math.sqrt(u * u + v * v)
            # subdivide only when a wall is within reach during this step (no tunnelling)
            reach = spd0 * dt
            nsplit = 1
            if reach > travel and _wall_dist(wd, t, px, py, inv_s) - rad < 1.25 * reach + 0.25:
                nsplit = int(reach / travel) + 1
            h = dt / nsplit
            for _i in range(nsplit):
                # --- steering with rate limit
                dmax = steer_rate * h
                dd = target - dlt
                if dd > dmax:
                    dd = dmax
                elif dd < -dmax:
                    dd = -dmax
                dlt += dd
                cd = math.cos(dlt)
                sd = math.sin(dlt)

                # --- surface
                code = _surface_at(surf, t, px, py, inv_s)
                mu = mu_tab[code] * grip
                rr = rr_tab[code]

                # --- loads with longitudinal load transfer
                dfz = m * ax_prev * hcg / L
                fz_f = fz_f_static - dfz
                fz_r = fz_r_static + dfz
                if fz_f < min_fz:
                    fz_f = min_fz
                    fz_r = mg - min_fz
                if fz_r < min_fz:
                    fz_r = min_fz
                    fz_f = mg - min_fz
                mu_f = 1.0 - load_sens * (fz_f / fz_f_static - 1.0)
                mu_r = 1.0 - load_sens * (fz_r / fz_r_static - 1.0)
                if mu_f < 0.5:
                    mu_f = 0.5
                if mu_r < 0.5:
                    mu_r = 0.5
                cap_f = mu * front_mu * mu_f * fz_f
                cap_r = mu * mu_r * fz_r

                # --- longitudinal tyre forces (front: brake only; rear: drive and brake)
                fx_f = 0.0
                fx_r = 0.0
                braking = False
                if thr >= 0.0:
                    if u > 1.0:
                        fd = power_k / u
                        if fd > f_drive_k:
                            fd = f_drive_k
                    else:
                        fd = f_drive_k
                    fx_r = thr * fd
                else:
                    if u > v_rev_th:
                        braking = True
                        fb = -thr * f_brake
                        fx_f = -fb * b_front
                        fx_r = -fb * (1.0 - b_front)
                    else:
                        # reverse gear, fading out towards the reverse speed cap
                        fade = (v_rev + u) / v_rev
                        if fade > 1.0:
                            fade = 1.0
                        elif fade < 0.0:
                            fade = 0.0
                        fx_r = thr * f_rev * fade
                bcap_f = cap_f * brake_grip if braking else cap_f
                bcap_r = cap_r * brake_grip if braking else cap_r
                if fx_f > bcap_f:
                    fx_f = bcap_f
                elif fx_f < -bcap_f:
                    fx_f = -bcap_f
                if fx_r > bcap_r:
                    fx_r = bcap_r
                elif fx_r < -bcap_r:
                    fx_r = -bcap_r

                # --- lateral tyre forces
                vfy = v + a * w
                vl_f = cd * u + sd * vfy
                vt_f = -sd * u + cd * vfy
                vt_r = v - b * w
                # tangent of the slip angles (the tyre curve is expressed in tan(alpha))
                alpha_f = vt_f / (abs(vl_f) + 1e-6)
                alpha_r = vt_r / (abs(u) + 1e-6)
                lat_f = cap_f * cap_f - fx_f * fx_f
                lat_r = cap_r * cap_r - fx_r * fx_r
                lat_f = math.sqrt(lat_f) if lat_f > 0.0 else 0.0
                lat_r = math.sqrt(lat_r) if lat_r > 0.0 else 0.0
                fy_f = lat_f * _tyre(alpha_f, tB, tC, tN)
                fy_r = lat_r * _tyre(alpha_r, tB, tC, tN)
                # never more than the force that stops the axle's sideways sliding in this step
                K_f = inv_m + a * a * cd * cd * inv_I
                stop_f = abs(vt_f) / (K_f * h)
                stop_r = abs(vt_r) / (K_r * h)
                if fy_f > stop_f:
                    fy_f = stop_f
                elif fy_f < -stop_f:
                    fy_f = -stop_f
                if fy_r > stop_r:
                    fy_r = stop_r
                elif fy_r < -stop_r:
                    fy_r = -stop_r

                # --- tyre work (wear): lateral force x sliding speed (more past the peak slip),
                # longitudinal force x a nominal slip
                wf = abs(fy_f * vt_f)
                if abs(alpha_f) > peak_tan:
                    wf *= slide_wear
                wr = abs(fy_r * vt_r)
                if abs(alpha_r) > peak_tan:
                    wr *= slide_wear
                work += (wf + wr + (abs(fx_f) + abs(fx_r)) * 0.03 * abs(u)) * h

                # --- body forces
                fx = fx_f * cd - fy_f * sd + fx_r - drag * spd0 * u
                fy = fx_f * sd + fy_f * cd + fy_r - drag * spd0 * v
                mz = a * (fx_f * sd + fy_f * cd) - b * fy_r
                # rolling resistance, never reversing the motion
                frr = rr * mg
                lim = m * abs(u) / h
                if frr > lim:
                    frr = lim
                if u > 0.0:
                    fx -= frr
                elif u < 0.0:
                    fx += frr

                axb = fx * inv_m
                ayb = fy * inv_m
                ax_acc += axb * h
                ay_acc += ayb * h
                ax_prev = axb

                # --- integrate (semi-implicit Euler)
                u_new = u + (axb + w * v) * h
                v = v + (ayb - w * u) * h
                w = w + mz * inv_I * h
                if braking and u_new < 0.0:
                    u_new = 0.0
                if u_new < -v_rev and u < 0.0 and thr < 0.0:
                    u_new = -v_rev
                u = u_new
                cpsi = math.cos(psi)
                spsi = math.sin(psi)
                gx = u * cpsi - v * spsi
                gy = u * spsi + v * cpsi
                px += gx * h
                py += gy * h
                psi += w * h

                # --- walls
                d = _wall_dist(wd, t, px, py, inv_s)
                if d < rad:
                    for _it in range(4):
                        ddx = _wall_dist(wd, t, px + s, py, inv_s) - _wall_dist(wd, t, px - s, py, inv_s)
                        ddy = _wall_dist(wd, t, px, py + s, inv_s) - _wall_dist(wd, t, px, py - s, inv_s)
                        gn = math.sqrt(ddx * ddx + ddy * ddy)
                        if gn < 1e-9:
                            # flat field (deep inside a wall or outside the grid): back off along -velocity
                            vn_ = math.sqrt(gx * gx + gy * gy)
                            if vn_ < 1e-9:
                                break
                            nx = -gx / vn_
                            ny = -gy / vn_
                        else:
                            nx = ddx / gn
                            ny = ddy / gn
                        push = rad - d
                        if push < 0.25 * s:
                            push = push + 0.01 * s
                        px += nx * push
                        py += ny * push
                        vn = gx * nx + gy * ny
                        if vn < 0.0:
                            if -vn > impact:
                                impact = -vn
                            if -vn > sub_impact:
                                sub_impact = -vn
                                hit_nx = nx
                                hit_ny = ny
                            tx = gx - vn * nx
                            ty = gy - vn * ny
                            vt = math.sqrt(tx * tx + ty * ty)
                            keep = 1.0
                            if vt > 1e-9:
                                keep = 1.0 - wfric * (1.0 + rest) * (-vn) / vt
                                if keep < 0.0:
                                    keep = 0.0
                            gx = tx * keep - rest * vn * nx
                            gy = ty * keep - rest * vn * ny
                            u = gx * cpsi + gy * spsi
                            v = -gx * spsi + gy * cpsi
                            w *= 0.5 + 0.5 * keep
                        hit = True
                        d = _wall_dist(wd, t, px, py, inv_s)
                        if d >= rad:
                            break

            # tyre wear and impact damage of this step
            cond -= work * wear_k
            work = 0.0
            if cond < 0.0:
                cond = 0.0
            if sub_impact > dmg_th and dmg_k > 0.0:
                inc = dmg_k * (sub_impact - dmg_th)
                dmg += inc
                if dmg > 1.0:
                    dmg = 1.0
                power_k = power * (1.0 - dmg_power * dmg)
                f_drive_k = f_drive * (1.0 - dmg_power * dmg)
                # the wall is on the kart's right when its normal (pointing away from it) points left
                side = 1.0 if (-math.sin(psi) * hit_nx + math.cos(psi) * hit_ny) < 0.0 else -1.0
                bias += side * dmg_pull * inc
                if bias > dmg_pull:
                    bias = dmg_pull
                elif bias < -dmg_pull:
                    bias = -dmg_pull
                target = sc * max_steer + bias
                if target > max_steer:
                    target = max_steer
                elif target < -max_steer:
                    target = -max_steer

        # wrap yaw to [-pi, pi)
        psi = (psi + math.pi) % (2.0 * math.pi) - math.pi
        ks.tyre_condition[k] = cond
        ks.damage[k] = dmg
        ks.steer_bias[k] = bias
        ks.x[k] = px
        ks.y[k] = py
        ks.yaw[k] = psi
        ks.vx[k] = u
        ks.vy[k] = v
        ks.yaw_rate[k] = w
        ks.steer[k] = dlt
        ks.throttle[k] = thr
        ks.ax[k] = ax_acc / T_total
        ks.ay[k] = ay_acc / T_total
        spd = math.sqrt(u * u + v * v)
        ks.speed[k] = spd
        ks.slip_angle[k] = math.atan2(v, u) if spd > slip_v else 0.0
        ks.surface[k] = _surface_at(surf, t, px, py, inv_s)
        ks.wall_hit[k] = hit
        ks.impact_speed[k] = impact


@njit(cache=True, fastmath=True)
def _collide_kernel(params, ks, iterations):
    """Kart-to-kart contacts between circles of ``radius_m`` (equal masses) on the same track and in
    the same world: positional correction (no overlap left), a restitution impulse along the contact
    normal with Coulomb friction across it, contact flags, closing speeds and impact damage."""
    ks = KartArrays(*ks)
    x, y, yaw, vx, vy, r = ks.x, ks.y, ks.yaw, ks.vx, ks.vy, ks.yaw_rate
    track_idx, world, hit_out, impact_out = ks.track_idx, ks.world, ks.kart_hit, ks.kart_impact_speed
    damage, steer_bias = ks.damage, ks.steer_bias
    n = x.shape[0]
    p = params[0]
    rad = p.radius_m
    e = p.kart_restitution
    fr = p.kart_friction
    dmg_th = p.damage_threshold_mps
    dmg_k = p.damage_per_mps
    dmg_pull = p.damage_steer_pull_rad
    min_d = 2.0 * rad
    for _ in range(iterations):
        touched = False
        for i in range(n):
            for j in range(i + 1, n):
                if track_idx[i] != track_idx[j] or world[i] != world[j]:
                    continue
                dx = x[j] - x[i]
                dy = y[j] - y[i]
                d2 = dx * dx + dy * dy
                if d2 >= min_d * min_d:
                    continue
                touched = True
                d = math.sqrt(d2)
                if d < 1e-9:
                    # exactly on top of each other: separate sideways of kart i
                    nx = -math.sin(yaw[i])
                    ny = math.cos(yaw[i])
                else:
                    nx = dx / d
                    ny = dy / d
                push = 0.5 * (min_d - d) + 1e-4
                x[i] -= nx * push
                y[i] -= ny * push
                x[j] += nx * push
                y[j] += ny * push
                ci = math.cos(yaw[i])
                si = math.sin(yaw[i])
                cj = math.cos(yaw[j])
                sj = math.sin(yaw[j])
                gxi = vx[i] * ci - vy[i] * si
                gyi = vx[i] * si + vy[i] * ci
                gxj = vx[j] * cj - vy[j] * sj
                gyj = vx[j] * sj + vy[j] * cj
                vn = (gxj - gxi) * nx + (gyj - gyi) * ny
                hit_out[i] = True
                hit_out[j] = True
                if vn < 0.0:
                    jn = -(1.0 + e) * vn * 0.5
                    tx = -ny
                    ty = nx
                    vt = (gxj - gxi) * tx + (gyj - gyi) * ty
                    jt = -0.5 * vt
                    if jt > fr * jn:
                        jt = fr * jn
                    elif jt < -fr * jn:
                        jt = -fr * jn
                    ix = jn * nx + jt * tx
                    iy = jn * ny + jt * ty
                    gxi -= ix
                    gyi -= iy
                    gxj += ix
                    gyj += iy
                    vx[i] = gxi * ci + gyi * si
                    vy[i] = -gxi * si + gyi * ci
                    vx[j] = gxj * cj + gyj * sj
                    vy[j] = -gxj * sj + gyj * cj
                    # a glancing blow also turns the karts a little
                    r[i] *= 0.9
                    r[j] *= 0.9
                    closing = -vn
                    if closing > impact_out[i]:
                        impact_out[i] = closing
                    if closing > impact_out[j]:
                        impact_out[j] = closing
                    if closing > dmg_th and dmg_k > 0.0:
                        inc = dmg_k * (closing - dmg_th)
                        # kart j lies along +n from kart i: on i's right when n . right_i > 0
                        side_i = 1.0 if (-si * nx + ci * ny) > 0.0 else -1.0
                        side_j = 1.0 if (sj * nx - cj * ny) > 0.0 else -1.0
                        damage[i] = min(1.0, damage[i] + inc)
                        damage[j] = min(1.0, damage[j] + inc)
                        steer_bias[i] = min(dmg_pull, max(-dmg_pull, steer_bias[i] + side_i * dmg_pull * inc))
                        steer_bias[j] = min(dmg_pull, max(-dmg_pull, steer_bias[j] + side_j * dmg_pull * inc))
        if not touched:
            break


class KartPhysics:
    """Steps a ``KartState`` in place over stacked (T, H, W) surface and wall-distance grids."""

    def __init__(self, cfg: KartConfig, surface: np.ndarray, wall_distance: np.ndarray, scale):
        cfg.validate()
        surface = np.asarray(surface)
        wall_distance = np.asarray(wall_distance)
        if surface.ndim == 2:
            surface = surface[None]
        if wall_distance.ndim == 2:
            wall_distance = wall_distance[None]
        if surface.ndim != 3 or surface.shape != wall_distance.shape:
            raise ConfigError(
                f"surface {surface.shape} and wall_distance {wall_distance.shape} must both be (T, H, W)")
        scale = np.atleast_1d(np.asarray(scale, np.float64))
        if scale.shape == (1,) and surface.shape[0] > 1:
            scale = np.full(surface.shape[0], scale[0])
        if scale.shape != (surface.shape[0],) or not np.all(scale > 0):
            raise ConfigError(f"scale must be (T,) = ({surface.shape[0]},) positive metres per pixel")
        self.cfg = cfg
        self.surface = np.ascontiguousarray(surface, np.uint8)
        self.wall_distance = np.ascontiguousarray(wall_distance, np.float32)
        self.scale = np.ascontiguousarray(scale)
        self._params = _params(cfg)

    def step(self, state: KartState, throttle, steer_cmd, substeps: int = 1) -> None:
        """Advance all karts by ``substeps * cfg.dt`` seconds with constant inputs, in place.

        Karts sharing a track and a ``state.world`` collide with each other (resolved after every
        ``cfg.dt``); by default every kart is alone in its world and nothing changes.
        """
        n = state.n
        throttle = _as_input(throttle, n, "throttle")
        steer_cmd = _as_input(steer_cmd, n, "steer_cmd")
        substeps = int(substeps)
        if substeps < 1:
            raise ConfigError(f"substeps must be >= 1, got {substeps}")
        state.kart_hit[:] = False
        state.kart_impact_speed[:] = 0.0
        if not state.collisions_possible():
            self._kernel(state, throttle, steer_cmd, substeps)
            return
        ax = np.zeros(n)
        ay = np.zeros(n)
        hit = np.zeros(n, np.bool_)
        impact = np.zeros(n)
        for _ in range(substeps):
            self._kernel(state, throttle, steer_cmd, 1)
            _collide_kernel(self._params, tuple(state.arrays), 8)
            ax += state.ax
            ay += state.ay
            hit |= state.wall_hit
            np.maximum(impact, state.impact_speed, out=impact)
        state.ax[:] = ax / substeps
        state.ay[:] = ay / substeps
        state.wall_hit[:] = hit
        state.impact_speed[:] = impact
        np.hypot(state.vx, state.vy, out=state.speed)

    def _kernel(self, state: KartState, throttle, steer_cmd, substeps: int) -> None:
        _step_kernel(self._params, self.surface, self.wall_distance, self.scale, tuple(state.arrays), throttle, steer_cmd,
                     substeps)

    def surface_at(self, track_idx, x, y) -> np.ndarray:
        """Surface codes under points (vectorised; outside the grid = WALL)."""
        track_idx = np.atleast_1d(np.asarray(track_idx, np.int64))
        x = np.atleast_1d(np.asarray(x, np.float64))
        y = np.atleast_1d(np.asarray(y, np.float64))
        T, H, W = self.surface.shape
        s = self.scale[track_idx]
        col = np.floor(x / s).astype(np.int64)
        row = np.floor(y / s).astype(np.int64)
        ok = (col >= 0) & (row >= 0) & (col < W) & (row < H)
        out = np.zeros(x.shape, np.uint8)
        out[ok] = self.surface[track_idx[ok], row[ok], col[ok]]
        return out


def _as_input(a, n: int, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim == 0:
        return np.full(n, float(arr), np.float64)
    if arr.shape != (n,):
        raise ConfigError(f"{name} must have shape ({n},), got {arr.shape}")
    if arr.dtype != np.float64 and arr.dtype != np.float32:
        arr = arr.astype(np.float64)
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr
