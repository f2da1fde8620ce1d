"""A batched AI driver: follows the racing line (the minimum-time reference line) at its speed
profile and avoids karts ahead.

``AIDriver(tracks, kart_cfg, level="hard").act(state, ...) -> (N, 2) [steering, throttle]`` for all
karts of a :class:`~kartsim.sim.physics.KartState` at once (numpy over karts, no per-kart Python loop
except the cheap nearest-point refinement). It drives the simulated physics through the real race
loop (an action is held for ``decision_dt`` seconds, 0.1 s by default like the envs).

* **Steering**: pure pursuit of a point on the racing line ``2 m + 0.3 s x speed`` ahead of the
  position predicted half a decision ahead, with the kart's understeer added near the limit (a
  yaw-rate feedback at 10 decisions a second oscillates, so there is none).
* **Speed**: the racing line's minimum-time profile (computed with the level's share of the grip
  and 80 % of its braking),
  previewed one decision ahead; throttle and brake from the acceleration needed to reach it, with
  a proportional correction (feed-forward of drag, cornering drag and the brake's deceleration).
* **Traffic**: a kart ahead on the same track (and in the same collision world) within a speed
  dependent distance and overlapping sideways makes the driver move to the side with more room
  (the pursuit point is shifted off the line within the track limits) and, when there is no room,
  match its speed.
* **Levels**: ``hard`` = the full profile; ``medium`` and ``easy`` use less grip and speed and add
  reaction noise (random steering/throttle errors that persist for a few decisions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from kartsim.errors import ConfigError
from kartsim.sim.config import KartConfig
from kartsim.sim.physics import GRASS, KERB, KartState, weather_grip
from kartsim.drivers.racing_line import RacingLine, racing_line

__all__ = ["AILevel", "AI_LEVELS", "AIDriver"]


@dataclass(frozen=True)
class AILevel:
    """How hard an AI driver pushes."""

    name: str
    grip: float
    """Share of the kart's measured grip used for the speed profile."""
    speed: float
    """Scale of the profile's target speeds."""
    steer_noise: float
    """Standard deviation of the steering error (fraction of full lock), persistent over ~0.5 s."""
    throttle_noise: float
    """Standard deviation of the throttle error."""
    margin_m: float
    """Racing line clearance from the road edges beyond half the kart's width (m)."""
    brake: float = 0.8
    """Share of the level's braking (straight-line and in the g-g diagram) used for the speed
    profile: braking earlier than the limit leaves the rear tyres grip to turn in, so braking into a
    bend at 10 decisions a second does not make the rear step out (at 1.0 the hard AI lost up to
    1.9 % of a lap at an 8 m hairpin on gen-technical-s3-w7.5, and 1.8 % trail-braking into fast
    bends on gen-circuit-s2-w8 at 0.9; at 0.8 about 1 %; benchmarks/RESULTS.md)."""


AI_LEVELS = {
    "easy": AILevel("easy", grip=0.72, speed=0.88, steer_noise=0.06, throttle_noise=0.15, margin_m=0.8),
    "medium": AILevel("medium", grip=0.86, speed=0.95, steer_noise=0.03, throttle_noise=0.08, margin_m=0.55),
    "hard": AILevel("hard", grip=1.0, speed=1.0, steer_noise=0.0, throttle_noise=0.0, margin_m=0.05),
}


def get_level(level: str | AILevel) -> AILevel:
    if isinstance(level, AILevel):
        return level
    if level not in AI_LEVELS:
        raise ConfigError(f"unknown AI level {level!r}; choose one of {', '.join(AI_LEVELS)}")
    return AI_LEVELS[level]


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


class _Pose(NamedTuple):
    """Every kart's pose predicted ``tau`` seconds ahead, and its forward speed (>= 0)."""

    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    v: np.ndarray


def _predicted_pose(state: KartState, tau: float) -> _Pose:
    cy, sy = np.cos(state.yaw), np.sin(state.yaw)
    gx = state.vx * cy - state.vy * sy
    gy = state.vx * sy + state.vy * cy
    return _Pose(state.x + gx * tau, state.y + gy * tau, state.yaw + state.yaw_rate * tau, np.maximum(state.speed, 0.0))


@dataclass
class _LineAims:
    """Per kart, what its racing line asks of it this decision (rows of inactive karts stay zero)."""

    s_line: np.ndarray
    """Along-line position (m)."""
    line_len: np.ndarray
    offset: np.ndarray
    """The line's offset from the centerline here (m), and the room to its left (lo) and right (hi)."""
    lo: np.ndarray
    hi: np.ndarray
    target_x: np.ndarray
    """The pure-pursuit aim point (shifted sideways for traffic)."""
    target_y: np.ndarray
    v_target: np.ndarray
    """The profile's speed over the next decision."""
    kappa_ahead: np.ndarray
    """The line's curvature a little ahead (steering lag), for the cornering drag."""
    brake_decel: np.ndarray
    lat_limit: np.ndarray
    induced: np.ndarray
    """(N, 2) cornering drag coefficients of the kart's measured limits."""

    @classmethod
    def zeros(cls, n: int) -> "_LineAims":
        return cls(s_line=np.zeros(n), line_len=np.ones(n), offset=np.zeros(n), lo=np.zeros(n), hi=np.zeros(n),
                   target_x=np.zeros(n), target_y=np.zeros(n), v_target=np.zeros(n), kappa_ahead=np.zeros(n),
                   brake_decel=np.ones(n), lat_limit=np.ones(n), induced=np.zeros((n, 2)))


class AIDriver:
    """Drives N karts around their tracks (``state.track_idx`` indexes ``tracks``).

    ``tracks``: a list of :class:`~kartsim.sim.track.Track` (or a ``TrackStack``); ``levels``: one level for
    all karts or one per kart; ``rng``: generator for the reaction noise of the easier levels.
    """

    def __init__(self, tracks, kart_cfg: KartConfig | None = None, level: str | AILevel | list = "hard",
                 n_karts: int | None = None, decision_dt: float = 0.1, rng: np.random.Generator | None = None,
                 grip_scale: float = 1.0) -> None:
        self.tracks = list(getattr(tracks, "tracks", tracks))
        if not self.tracks:
            raise ConfigError("AIDriver needs at least one track")
        if getattr(tracks, "pool", None) is not None:  # a streamed TrackStack loads other tracks into its slots
            self._stack = tracks
            tracks.listeners.append(self._track_loaded)
        self.cfg = kart_cfg or KartConfig()
        self.decision_dt = float(decision_dt)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.grip_scale = float(grip_scale)
        levels = level if isinstance(level, (list, tuple)) else [level]
        self.levels = [get_level(lv) for lv in levels]
        self.n = n_karts if n_karts is not None else len(self.levels)
        if len(self.levels) == 1:
            self.levels = self.levels * self.n
        if len(self.levels) != self.n:
            raise ConfigError(f"AIDriver got {len(self.levels)} levels for {self.n} karts")
        # one racing line per (track, level)
        self._lines: dict[tuple[int, str], RacingLine] = {}
        self.grip = np.array([lv.grip for lv in self.levels]) * self.grip_scale
        self.speed_scale = np.array([lv.speed for lv in self.levels])
        self.steer_noise = np.array([lv.steer_noise for lv in self.levels])
        self.throttle_noise = np.array([lv.throttle_noise for lv in self.levels])
        self.line_idx = np.full(self.n, -1, np.int64)
        self.shift = np.zeros(self.n)  # metres the driver moves off the line to avoid traffic
        self.noise = np.zeros((self.n, 2))
        self.pass_side = np.zeros(self.n)  # side chosen to pass the kart ahead (+1 right, -1 left)
        self.slow_time = np.zeros(self.n)  # seconds crawling while asking for throttle
        self.recover_time = np.zeros(self.n)  # seconds left of a reversing manoeuvre

    def line(self, t: int, level: AILevel, weather_grip: float = 1.0) -> RacingLine:
        """The racing line and speed profile a kart of ``level`` follows on track ``t`` (cached)."""
        key = (t, level.name, round(float(weather_grip), 3))
        if key not in self._lines:
            self._lines[key] = racing_line(self.tracks[t], self.cfg, margin_m=level.margin_m,
                                           grip_scale=level.grip * self.grip_scale * float(weather_grip),
                                           brake_scale=level.brake)
        return self._lines[key]

    def _track_loaded(self, slot: int) -> None:
        """A streamed stack put another track into `slot`: drive it by its own racing line."""
        self.tracks[slot] = self._stack.tracks[slot]
        for key in [k for k in self._lines if k[0] == slot]:
            del self._lines[key]

    def reset(self, idx=None) -> None:
        idx = slice(None) if idx is None else np.asarray(idx)
        self.line_idx[idx] = -1
        self.shift[idx] = 0.0
        self.noise[idx] = 0.0
        self.slow_time[idx] = 0.0
        self.recover_time[idx] = 0.0
        self.pass_side[idx] = 0.0

    # ------------------------------------------------------------------------------------ acting
    def act(self, state: KartState, active=None, world=None, grip=None) -> np.ndarray:
        """Actions (N, 2) = [steering, throttle] for every kart of ``state`` (rows of karts not in
        ``active`` (bool mask or indices) are zero). ``world``: per-kart collision world (karts avoid
        only karts of their own world and track; None = all karts of a track share one world).
        ``grip``: an extra per-kart grip multiplier applied to the target speeds. The track's wetness
        (``state.wetness``) selects a speed profile for that grip; tyre wear scales the targets."""
        n = state.n
        if n != self.n:
            raise ConfigError(f"AIDriver was built for {self.n} karts, the state has {n}")
        act_mask = np.ones(n, bool) if active is None else np.zeros(n, bool)
        if active is not None:
            act_mask[np.asarray(active)] = True
        out = np.zeros((n, 2))
        pose = _predicted_pose(state, 0.5 * self.decision_dt)  # the action acts over the whole decision
        aims = self._line_aims(state, act_mask, pose)
        ks = np.nonzero(act_mask)[0]
        if len(ks) == 0:
            return out
        self._avoid(state, ks, aims.s_line, aims.line_len, aims.offset, aims.lo, aims.hi, pose.v, aims.v_target, world)
        steer, alpha = self._steering(state, ks, pose, aims)
        throttle = self._throttle(state, ks, pose.v, aims, grip)
        steer, throttle = self._reaction_noise(ks, steer, throttle)
        steer, throttle = self._recover_when_stuck(state, ks, alpha, steer, throttle)
        out[ks, 0] = np.clip(steer, -1.0, 1.0)
        out[ks, 1] = np.clip(throttle, -1.0, 1.0)
        return out

    def _line_aims(self, state: KartState, act_mask: np.ndarray, pose: _Pose) -> _LineAims:
        """Each active kart's place on its racing line and what the line asks of it, one group of karts
        per (track, level, weather grip): they share one line and speed profile."""
        aims = _LineAims.zeros(state.n)
        groups: dict[tuple[int, str, float], list[int]] = {}
        wgrip = np.round(weather_grip(self.cfg, state.wetness) / 0.05) * 0.05
        for k in np.nonzero(act_mask)[0]:
            groups.setdefault((int(state.track_idx[k]), self.levels[k].name, float(wgrip[k])), []).append(int(k))
        for (t, lname, wg), ks in groups.items():
            ks = np.array(ks)
            line = self.line(t, get_level(lname), wg)
            self._follow_line(ks, self.tracks[t], line, pose, aims)
        return aims

    def _follow_line(self, ks: np.ndarray, track, line: RacingLine, pose: _Pose, aims: _LineAims) -> None:
        """Karts ``ks`` on ``line``: find each one's nearest line point (re-located from the centerline
        when new or lost), then fill in ``aims``: the pursuit point, the curvature and speed ahead."""
        xp, yp, v = pose.x[ks], pose.y[ks], pose.v[ks]
        K = len(line.s)
        sp = line.length / K
        guess = self.line_idx[ks]
        fresh = guess < 0
        if fresh.any():
            ci = track.locate(xp[fresh], yp[fresh])
            guess = guess.copy()
            guess[fresh] = line.index_from_centerline(ci)
        idx = line.nearest(xp, yp, guess, window=max(12, int(6.0 / sp)))
        far = np.hypot(line.xy[idx, 0] - xp, line.xy[idx, 1] - yp) > 6.0
        if far.any():  # lost (spun, pushed): re-locate from the track's centerline
            ci = track.locate(xp[far], yp[far])
            idx[far] = line.nearest(xp[far], yp[far], line.index_from_centerline(ci), window=12)
        self.line_idx[ks] = idx
        # along-line position of the kart (projection on the local segment)
        hx, hy = np.cos(line.heading[idx]), np.sin(line.heading[idx])
        dxk, dyk = xp - line.xy[idx, 0], yp - line.xy[idx, 1]
        s_k = line.s[idx] + np.clip(dxk * hx + dyk * hy, -sp, sp)
        aims.s_line[ks] = s_k
        aims.line_len[ks] = line.length
        aims.offset[ks] = line.offset[idx]
        aims.lo[ks] = line.bounds[0][idx] - line.offset[idx]
        aims.hi[ks] = line.bounds[1][idx] - line.offset[idx]
        # pure pursuit look-ahead point (shifted sideways for traffic)
        ld = np.clip(2.0 + 0.3 * v, 3.0, 10.0)
        # far off the line (pushed, spun): aim further ahead to rejoin at an angle, not circle
        off_line = np.hypot(dxk - (dxk * hx + dyk * hy) * hx, dyk - (dxk * hx + dyk * hy) * hy)
        ld = np.maximum(ld, 1.5 * off_line + 2.0)
        s_t = s_k + ld
        j = np.round(s_t / sp).astype(np.int64) % K
        tx, ty = line.point_at(s_t)
        sh = np.clip(self.shift[ks], line.bounds[0][j] - line.offset[j], line.bounds[1][j] - line.offset[j])
        # far off the line only on straights: in a bend the line is the only safe way through
        lim = np.maximum(1.0, 4.0 - 150.0 * np.abs(line.curvature[j]))
        sh = np.clip(sh, -lim, lim)
        aims.target_x[ks] = tx - np.sin(line.heading[j]) * sh
        aims.target_y[ks] = ty + np.cos(line.heading[j]) * sh
        # curvature a little ahead (steering lag) for the feed-forward
        jk = np.round((s_k + 0.15 * v + 0.5) / sp).astype(np.int64) % K
        aims.kappa_ahead[ks] = line.curvature[jk]
        # speed target: the profile over the next decision (preview: the lowest in reach)
        aims.v_target[ks] = line.speed_at(s_k + v * self.decision_dt)
        limits = line.limits
        aims.brake_decel[ks] = limits.brk(v)
        aims.lat_limit[ks] = limits.lat(v)
        aims.induced[ks] = limits.induced

    def _steering(self, state: KartState, ks: np.ndarray, pose: _Pose, aims: _LineAims) -> tuple[np.ndarray, np.ndarray]:
        """Pure pursuit of the aim point plus the kart's understeer near the limit; also the angle
        ``alpha`` from the kart's predicted heading to the aim point."""
        cfg = self.cfg
        dx = aims.target_x[ks] - pose.x[ks]
        dy = aims.target_y[ks] - pose.y[ks]
        dist = np.maximum(np.hypot(dx, dy), 1e-3)
        alpha = _wrap(np.arctan2(dy, dx) - pose.yaw[ks])
        kappa_cmd = 2.0 * np.sin(alpha) / dist
        vv = np.maximum(pose.v[ks], 1.0)
        # never ask for more curvature than the tyres can give on this surface (no self-made spins)
        surf_mu = np.where(state.surface[ks] == GRASS, cfg.mu_grass / cfg.mu_asphalt,
                           np.where(state.surface[ks] == KERB, cfg.mu_kerb / cfg.mu_asphalt, 1.0))
        lat_limit = aims.lat_limit[ks]
        k_max = 1.15 * lat_limit * surf_mu / (vv * vv)
        kappa_cmd = np.clip(kappa_cmd, -k_max, k_max)
        ay_cmd = vv * vv * kappa_cmd
        # the front needs more slip than the rear as the lateral acceleration builds (understeer)
        # (gain tuned on the minimum-time lines of generated tracks: 0.012 ran wide in tight bends)
        us = 0.016 * ay_cmd / 9.81 * (1.0 + 0.5 * (np.abs(ay_cmd) / np.maximum(lat_limit, 1.0)) ** 4)
        steer = (np.arctan(cfg.wheelbase_m * kappa_cmd) + us) / cfg.max_steer_rad
        # pointing away from the line (spun, pushed): full lock towards it
        steer = np.where(np.abs(alpha) > 0.5 * np.pi, np.sign(alpha), steer)
        return steer, alpha

    def _throttle(self, state: KartState, ks: np.ndarray, v: np.ndarray, aims: _LineAims, grip) -> np.ndarray:
        """Throttle or brake for the acceleration that reaches the target speed within one decision:
        feed-forward of drag, rolling and cornering drag, scaled by the drive force or brake available."""
        cfg = self.cfg
        dt = self.decision_dt
        vt = aims.v_target[ks] * self.speed_scale[ks]
        # worn tyres: corner speeds scale with the square root of the grip
        vt = vt * np.sqrt(np.clip(1.0 - cfg.tyre_worn_grip_loss * (1.0 - state.tyre_condition[ks]), 0.2, 1.0))
        if grip is not None:
            vt = vt * np.sqrt(np.clip(np.asarray(grip, np.float64)[ks], 0.2, 1.5))
        a_req = (vt - v[ks]) / max(dt, 1e-3)
        vv = np.maximum(v[ks], 1.0)
        m = cfg.mass_kg
        ay_now = np.abs(vv * vv * aims.kappa_ahead[ks])
        q = (ay_now / 9.81) ** 2
        ind_c = aims.induced[ks]
        resist = cfg.drag_coeff * vv * vv + cfg.rolling_asphalt * m * 9.81 + m * 9.81 * (ind_c[:, 0] * q + ind_c[:, 1] * q * q)
        f_drive = np.where(vv > 1.0, np.minimum(cfg.max_drive_force_n, cfg.engine_power_w / vv), cfg.max_drive_force_n)
        thr_pos = (m * a_req + resist) / f_drive
        # the brakes add to the drag and cornering drag already slowing the kart (brake_decel, measured
        # in a straight line at full brake, includes the straight-line drag)
        straight = cfg.drag_coeff * vv * vv + cfg.rolling_asphalt * m * 9.81
        thr_neg = (m * a_req + resist) / np.maximum(m * aims.brake_decel[ks] - straight, m)
        throttle = np.where(a_req >= 0.0, np.clip(thr_pos, 0.0, 1.0), np.where(thr_pos >= 0.0, np.clip(thr_pos, 0.0, 1.0), np.clip(thr_neg, -1.0, 0.0)))
        # on grass the rear tyres cannot take full power: feed it in gently (no spinning)
        return np.where(state.surface[ks] == GRASS, np.minimum(throttle, 0.45), throttle)

    def _reaction_noise(self, ks: np.ndarray, steer: np.ndarray, throttle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The easier levels' errors: persistent, an AR(1) process with ~0.5 s memory."""
        noisy = (self.steer_noise[ks] > 0) | (self.throttle_noise[ks] > 0)
        if noisy.any():
            rho = np.exp(-self.decision_dt / 0.5)
            e = self.rng.standard_normal((len(ks), 2))
            self.noise[ks] = rho * self.noise[ks] + np.sqrt(1 - rho * rho) * e
            steer = steer + self.noise[ks, 0] * self.steer_noise[ks]
            throttle = throttle + self.noise[ks, 1] * self.throttle_noise[ks]
        return steer, throttle

    def _recover_when_stuck(self, state: KartState, ks: np.ndarray, alpha: np.ndarray, steer: np.ndarray,
                            throttle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stuck (crawling against a wall or kart, on grass, facing away) for a second: reverse out for
        2.5 s, steering the nose towards the line."""
        dt = self.decision_dt
        blocked = state.wall_hit[ks] | state.kart_hit[ks] | (state.surface[ks] == GRASS) | (np.abs(alpha) > 1.0)
        crawling = (state.vx[ks] < 1.0) & (throttle > 0.3) & blocked
        self.slow_time[ks] = np.where(crawling, self.slow_time[ks] + dt, 0.0)
        start = (self.slow_time[ks] > 1.0) & (self.recover_time[ks] <= 0.0)
        self.recover_time[ks] = np.where(start, 2.5, np.maximum(self.recover_time[ks] - dt, 0.0))
        rec = self.recover_time[ks] > 0.0
        if rec.any():
            steer = np.where(rec, -np.sign(alpha) * 1.0, steer)
            throttle = np.where(rec, -1.0, throttle)
            self.slow_time[ks] = np.where(rec, 0.0, self.slow_time[ks])
        return steer, throttle

    def _avoid(self, state, ks, s_line, line_len, offset, lo, hi, v, v_target, world) -> None:
        """Traffic: pick a side to pass a slower kart ahead, keep clear of karts alongside, and do not
        run into a kart ahead while moving aside. Positions are compared in centerline coordinates."""
        n = state.n
        want = np.zeros(n)
        if n > 1:
            same = state.track_idx[:, None] == state.track_idx[None, :]
            if world is not None:
                w = np.asarray(world)
                same &= w[:, None] == w[None, :]
            np.fill_diagonal(same, False)
            cs = np.zeros(n)
            lat = np.zeros(n)
            clen = np.ones(n)
            for t in np.unique(state.track_idx):
                m = state.track_idx == t
                track = self.tracks[int(t)]
                cs[m], lat[m], _ = track.frame(state.x[m], state.y[m])
                clen[m] = track.length
            for i in ks:
                cand = np.nonzero(same[i])[0]
                if len(cand) == 0:
                    self.pass_side[i] = 0.0
                    continue
                L = clen[i]
                gap = (cs[cand] - cs[i] + 0.5 * L) % L - 0.5 * L  # > 0: ahead of us (centerline metres)
                dlat = lat[cand] - lat[i]
                left_edge, right_edge = offset[i] + lo[i], offset[i] + hi[i]
                # side by side: keep clear of the other kart
                beside = (np.abs(gap) < 2.2) & (np.abs(dlat) < 2.2)
                if beside.any():
                    j = int(np.argmin(np.abs(dlat) + 10 * ~beside))
                    side = -1.0 if dlat[j] > 0 else 1.0
                    tgt = lat[cand[j]] + side * 2.4
                    if not left_edge <= tgt <= right_edge:  # no room on that side: give way
                        v_target[i] = min(v_target[i], max(v[cand[j]] - 1.0, 0.0))
                    else:
                        want[i] = tgt - offset[i]
                    continue
                look = max(8.0, 1.0 * v[i] + 4.0)
                ahead = (gap > 0.0) & (gap < look) & (np.abs(dlat) < 2.0) & (v[cand] < v[i] + 0.5)
                if not ahead.any():
                    self.pass_side[i] = 0.0
                    continue
                jj = np.nonzero(ahead)[0]
                j = jj[np.argmin(gap[jj])]
                their = lat[cand[j]]
                room_left = their - left_edge
                room_right = right_edge - their
                side = self.pass_side[i]
                if side == 0.0 or (side > 0 and room_right < 2.0) or (side < 0 and room_left < 2.0):
                    side = 1.0 if room_right >= room_left else -1.0
                self.pass_side[i] = side
                if (room_right if side > 0 else room_left) >= 2.0:
                    want[i] = their + side * 2.3 - offset[i]
                # right behind a slower kart: do not drive into it while moving aside
                if gap[j] < 0.3 * v[i] + 2.5 and abs(dlat[j]) < 1.5:
                    v_target[i] = min(v_target[i], max(v[cand[j]] - 0.3, 0.0))
        # move the shift towards the wanted value (at most ~4 m/s sideways), decay back to the line
        step = 5.0 * self.decision_dt
        self.shift[ks] += np.clip(want[ks] - self.shift[ks], -step, step)
