"""A race: tracks + N karts + laps, progress, rewards and episode ends. The one simulation core.

Every env is a view of a :class:`Race`: the single-kart env is a race of one kart, the batched env
a race of N independent karts (each may be on its own track of the pool). All per-kart state is a
1-D array allocated once; a step is array operations over all karts.

Progress is measured along the track's centerline and unwrapped across the finish line
(``total_progress``). Only new
forward progress pays (a high-water mark), so spinning, zig-zagging, reversing and re-crossing the
start line earn nothing. Laps are counted by gates crossed forwards, in order; a lap counts only
when the kart crosses the start/finish gate after every other gate of that lap.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

from kartsim.errors import KartsimError
from kartsim.sim.columns import Column, ColumnOwner, Columns, View
from kartsim.sim.config import WEATHER, WEATHERS, KartConfig, RaceConfig, RewardConfig
from kartsim.sim.physics import KartPhysics, KartState
from kartsim.sim.track import Surface, TrackStack, project_point

# A gate is widened by this much beyond each road edge so that a wheel on the kerb or grass
# still counts as crossing it; cutting across the infield still misses it.
GATE_MARGIN_M = 3.0

TERMINATION_REASONS = ("", "wrong_way", "stuck", "off_track", "damage")
REWARD_TERMS = ("progress", "lap", "off_track", "wall", "termination", "steer_change", "lap_pace")
"""The names of :func:`reward_terms`' entries, in order; each is a :class:`RewardConfig` weight."""


def reward_terms(
    new_progress_m: np.ndarray,
    laps_completed: np.ndarray,
    on_grass: np.ndarray,
    impact_speed: np.ndarray,
    terminated: np.ndarray,
    step_dt: float,
    lap_speed: np.ndarray | None = None,
    steer_change: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The raw reward terms per kart, named as the :class:`RewardConfig` weights. ``lap_speed``: the
    mean speed (m/s) of the lap completed this step, 0 where none was; ``steer_change``: |this
    step's steering command - the previous one's|. They are written as the columns of ``out``
    (N, len(REWARD_TERMS)), in :data:`REWARD_TERMS` order, and returned as views of those columns."""
    out = np.empty((len(new_progress_m), len(REWARD_TERMS))) if out is None else out
    out[:, 0] = new_progress_m
    out[:, 1] = laps_completed
    np.multiply(on_grass, step_dt, out=out[:, 2])
    out[:, 3] = impact_speed
    out[:, 4] = terminated
    out[:, 5] = 0.0 if steer_change is None else steer_change
    out[:, 6] = 0.0 if lap_speed is None else lap_speed
    return {name: out[:, k] for k, name in enumerate(REWARD_TERMS)}


def corner_start_cdf(curvature: np.ndarray, length: float, lookahead_m: float) -> np.ndarray:
    """Cumulative start density over a centerline's points (ending at 1): ∝ the square of the sharpest
    curvature within ``lookahead_m`` ahead of each point, so starts land on the approach to the bends."""
    kappa = np.abs(curvature)
    ahead = max(int(lookahead_m / (length / len(kappa))), 0)
    sharpest = kappa.copy()
    for shift in range(1, min(ahead, len(kappa) - 1) + 1):
        np.maximum(sharpest, np.roll(kappa, -shift), out=sharpest)
    cdf = np.cumsum(sharpest ** 2 + 1e-12)
    return cdf / cdf[-1]


def term_weights(cfg: RewardConfig) -> np.ndarray:
    """The :class:`RewardConfig` weights of :data:`REWARD_TERMS`, in that order."""
    weights = cfg.weights()
    return np.array([weights[name] for name in REWARD_TERMS])


@dataclass
class _GateTable:
    """All tracks' gates as padded arrays, widened by the margin, with their forward directions."""

    ends: np.ndarray  # (T, G, 4) metres
    forward: np.ndarray  # (T, G, 2) unit vectors of the driving direction at each gate
    count: np.ndarray  # (T,)

    @classmethod
    def build(cls, stack: TrackStack) -> "_GateTable":
        g_max = max(len(t.gates) for t in stack.tracks)
        n = len(stack.tracks)
        table = cls(np.zeros((n, g_max, 4)), np.zeros((n, g_max, 2)), np.zeros(n, np.int64))
        for i, track in enumerate(stack.tracks):
            table.put(i, track)
        return table

    def put(self, i: int, track) -> None:
        """Track `track`'s gates into row `i` (it must have room for them)."""
        g = np.asarray(track.gates, dtype=np.float64)
        a, b = g[:, :2], g[:, 2:]
        along = (b - a) / np.maximum(np.linalg.norm(b - a, axis=1, keepdims=True), 1e-9)
        self.ends[i] = 0.0
        self.forward[i] = 0.0
        self.ends[i, : len(g), :2] = a - along * GATE_MARGIN_M
        self.ends[i, : len(g), 2:] = b + along * GATE_MARGIN_M
        # forwards: across the gate, towards the driving direction (the centerline's heading at the
        # gate's middle turns sharply at a kink, where a kart crossing the gate can head elsewhere)
        heading = track.heading[track.locate(*((a + b) / 2).T)]
        across = np.column_stack([-along[:, 1], along[:, 0]])
        sign = np.sign(across[:, 0] * np.cos(heading) + across[:, 1] * np.sin(heading))
        self.forward[i, : len(g)] = across * np.where(sign == 0, 1.0, sign)[:, None]
        self.count[i] = len(g)


@dataclass
class EpisodeStats:
    """Per-kart lists for the end-of-episode summary (the per-kart sums are columns of the race)."""

    lap_times: list[list[float]] = field(default_factory=list)


F8, I8, B1 = np.float64, np.int64, np.bool_
RACE_COLUMNS = Columns("RaceArrays", __name__, [
    # name, dtype, value written by Race.reset_karts (None: computed there or by a step), init, doc
    Column("s", F8, doc="Position along the lap (m), [0, length)."),
    Column("lateral", F8, doc="Metres right of the centerline."),
    Column("track_heading", F8, doc="The centerline's heading at the kart (rad)."),
    Column("centerline_idx", I8, doc="Index of the nearest centerline point."),
    Column("total_progress", F8, doc="Continuous progress (m) along the centerline from the start line, unwrapped "
                                     "across it: negative behind it, one track length more per lap."),
    Column("best", F8, doc="High-water mark of ``total_progress`` (only new progress pays)."),
    Column("start_progress", F8, doc="``total_progress`` at the reset."),
    Column("next_gate", I8, 0, doc="The gate to cross next (0: the start/finish line)."),
    Column("lap_started", B1, False, doc="Crossed the line: the lap timer is running."),
    Column("lap_time", F8, 0.0, doc="Time on the running lap (s)."),
    Column("laps", I8, 0, doc="Laps completed."),
    Column("best_lap", F8, np.inf, doc="Fastest lap of the episode (s), inf without one."),
    Column("new_lap_time", F8, np.nan, doc="The time of the lap completed this step (s), NaN without one."),
    Column("episode_time", F8, 0.0, doc="Time since the reset (s)."),
    Column("steps", I8, 0, doc="Env steps since the reset."),
    Column("since_progress", F8, 0.0, doc="Time since the last new progress (s): ends the episode as stuck."),
    Column("grass_time", F8, 0.0, doc="Time on the grass without a break (s): ends the episode as off track."),
    Column("speed_sum", F8, 0.0, doc="Sum of the speeds after each step (for the episode's mean speed)."),
    Column("grass_steps", I8, 0, doc="Steps that ended on the grass."),
    Column("last_steer", F8, 0.0, doc="The previous decision's steering command (0 after a reset)."),
    Column("reward", F8, doc="This step's reward."),
    Column("terminated", B1, False, doc="The episode ended this step (``termination_reason``)."),
    Column("truncated", B1, False, doc="The episode reached ``max_episode_steps`` this step."),
    Column("termination_reason", np.int8, 0, doc="Index into TERMINATION_REASONS."),
    Column("episode_terms", F8, 0.0, shape=(len(REWARD_TERMS),),
           doc="Per-episode sums of the raw reward terms, columns in REWARD_TERMS order."),
])
RaceArrays = RACE_COLUMNS.record  # module-level: pickle and numba's cache find the class by name

RACE_KART_VIEW = View("RaceKart", __name__, ("track_idx", "x", "y", "speed", "surface"))
RaceKart = RACE_KART_VIEW.record
"""The KartState columns the race kernels read."""

TrackTables = collections.namedtuple("TrackTables", [
    "points", "s", "heading", "n_points", "length", "lookup", "lookup_cell_m", "lookup_window",  # centerlines
    "gate_ends", "gate_forward", "gate_count"])
"""The per-track tables the kernels read, from a :class:`CenterlineStack` and a :class:`_GateTable`."""

EpisodeLimits = collections.namedtuple("EpisodeLimits", [
    "dt", "stuck_time_s", "wrong_way_m", "off_track_time_s", "max_episode_steps"])


class Race(ColumnOwner):
    """N karts racing (independently) on a pool of tracks.

    The per-kart bookkeeping is one array per :data:`RACE_COLUMNS` column (``race.laps``, ...; the
    kernels take them as ``race.arrays``); the karts' physical state is in ``state``. After :meth:`step`,
    ``reward``, ``terminated``, ``truncated``, ``new_lap_time`` and ``terms`` hold that step's outcome
    per kart. ``episode_terms`` (N, len(REWARD_TERMS)) holds each kart's sums of the raw reward terms
    since its reset (:meth:`episode_stats` reports them, raw and weighted).
    """

    def __init__(
        self,
        stack: TrackStack,
        n_karts: int,
        race: RaceConfig | None = None,
        reward: RewardConfig | None = None,
        kart: KartConfig | None = None,
    ) -> None:
        if n_karts < 1:
            raise KartsimError(f"a race needs at least one kart, got n_karts={n_karts}")
        self.stack = stack
        self.n = n_karts
        self.cfg = race or RaceConfig()
        self.reward_cfg = reward or RewardConfig()
        self.kart_cfg = kart or KartConfig()
        if self.cfg.weather not in WEATHERS:
            raise KartsimError(f"race weather must be one of {', '.join(WEATHERS)}, got {self.cfg.weather!r}")
        self.physics = KartPhysics(self.kart_cfg, stack.surface, stack.wall_distance, stack.scale)
        self.state = KartState(n_karts)
        self.step_dt = self.kart_cfg.dt * self.cfg.action_repeat
        self._build_tables()
        if stack.pool is not None:
            stack.listeners.append(self._track_loaded)

        self.arrays: RaceArrays = RACE_COLUMNS.allocate(n_karts)
        RACE_COLUMNS.attach(self, self.arrays)
        self.terms: dict[str, np.ndarray] = {}
        self._step_terms = np.zeros((n_karts, len(REWARD_TERMS)))  # this step's terms as one array
        self.stats = EpisodeStats([[] for _ in range(n_karts)])
        self._corner_cdf = ([self._corner_cdf_of(t) for t in stack.tracks]
                            if self.cfg.random_start and self.cfg.start_corner_share > 0 else [])

    def _corner_cdf_of(self, track) -> np.ndarray:
        return corner_start_cdf(track.curvature, track.length, self.cfg.start_corner_lookahead_m)

    # ------------------------------------------------------------------ starts
    def reset_karts(self, idx: np.ndarray, rngs: list[np.random.Generator]) -> None:
        """Place karts ``idx`` at their start, each drawing from its own generator ``rngs[k]``."""
        idx = np.asarray(idx, dtype=np.int64)
        cfg, tracks = self.cfg, self.stack.tracks
        m = len(idx)
        # Only the draws are per kart (each kart's generator in a fixed order); the poses are batched.
        track_of = np.zeros(m, np.int64)
        s0, u_off, yaw_jitter, wetness = np.empty(m), np.empty(m), np.zeros(m), np.empty(m)
        busy = self._busy_slots(idx)
        n_pool = self.stack.pool_size
        for k, rng in enumerate(rngs):
            # a streamed stack may load the drawn pool track into a free slot (tracks[t] is then that track)
            t = self.stack.acquire(int(rng.integers(n_pool)), busy) if n_pool > 1 else 0
            busy[t] = True
            track_of[k] = t
            if cfg.random_start:
                s0[k] = rng.uniform(0.0, tracks[t].length)
                if self._corner_cdf and rng.random() < cfg.start_corner_share:
                    s0[k] = tracks[t].s[np.searchsorted(self._corner_cdf[t], rng.random(), side="right")]
                u_off[k] = rng.random()  # the sideways offset, scaled below once the road width is known
                yaw_jitter[k] = rng.uniform(-1.0, 1.0) * cfg.start_heading_jitter_rad
            else:
                s0[k] = tracks[t].length - cfg.start_behind_line_m
            w = cfg.weather if cfg.weather != "random" else WEATHERS[int(rng.integers(3))]
            wetness[k] = WEATHER[w]
        x, y, yaw = np.empty(m), np.empty(m), np.empty(m)
        for t in np.unique(track_of):
            sel = track_of == t
            track = tracks[t]
            x[sel], y[sel], yaw[sel] = track.pose_at(s0[sel])
            if cfg.random_start:
                max_off = np.minimum(cfg.start_lateral_jitter_m, 0.25 * track.width[track.locate(x[sel], y[sel])])
                off = -max_off + 2.0 * max_off * u_off[sel]
                x[sel] -= np.sin(yaw[sel]) * off
                y[sel] += np.cos(yaw[sel]) * off
        self.state.track_idx[idx] = track_of
        self.state.reset(idx, x, y, yaw + yaw_jitter, tyre_condition=self.kart_cfg.tyre_start_condition)
        self.state.wetness[idx] = wetness

        self._update_frame(idx)
        RACE_COLUMNS.reset(self.arrays, idx)
        # Progress starts at the start position; behind the line counts as negative progress.
        start = np.where(self.s[idx] > self.lengths[self.state.track_idx[idx]] / 2,
                         self.s[idx] - self.lengths[self.state.track_idx[idx]], self.s[idx])
        self.total_progress[idx] = start
        self.best[idx] = start
        self.start_progress[idx] = start
        # Mid-lap starts wait for the next gate ahead; the first line crossing starts the lap timer.
        if cfg.random_start:
            for t in np.unique(track_of):
                sel = idx[track_of == t]
                ahead = tracks[t].gate_s[None, :] > self.s[sel, None]
                self.next_gate[sel] = np.where(ahead.any(axis=1), ahead.argmax(axis=1), 0)
        for i in idx:
            self.stats.lap_times[i] = []

    def _busy_slots(self, idx: np.ndarray) -> np.ndarray:
        """Per slot of the stack: whether a kart other than ``idx`` is on it (its track must stay)."""
        busy = np.zeros(len(self.stack), bool)
        rest = np.ones(self.n, bool)
        rest[idx] = False
        busy[self.state.track_idx[rest]] = True
        return busy

    def _build_tables(self) -> None:
        """The per-track tables of the kernels: centerlines, gates, lap lengths."""
        c, g = self.stack.centerlines(), _GateTable.build(self.stack)
        self._centerlines, self._gates = c, g  # a streamed slot's rows are rewritten in place
        self.lengths = c.length
        self._tables = tuple(TrackTables(c.points, c.s, c.heading, c.n_points, c.length, c.lookup,
                                         c.lookup_cell_m, c.lookup_window, g.ends, g.forward, g.count))

    def _track_loaded(self, slot: int) -> None:
        """A streamed stack put a new track into `slot`: its rows of the per-track tables, in place (all
        the tables again when it does not fit their padding)."""
        track = self.stack.tracks[slot]
        if self._centerlines.fits(track) and len(track.gates) <= self._gates.ends.shape[1]:
            self._centerlines.put(slot, track)
            self._gates.put(slot, track)
        else:
            self._build_tables()
        if self._corner_cdf:
            self._corner_cdf[slot] = self._corner_cdf_of(self.stack.tracks[slot])

    def _update_frame(self, idx: np.ndarray | slice = slice(None)) -> None:
        """Project karts ``idx`` onto their track's centerline."""
        _project_karts(self._tables, RACE_KART_VIEW.of(self.state), np.arange(self.n)[idx], tuple(self.arrays))

    # ------------------------------------------------------------------ a step
    def step(self, actions: np.ndarray) -> None:
        """Advance every kart by one env step with ``actions[:, 0]`` = steering, ``[:, 1]`` = throttle."""
        actions = check_actions(actions, self.n)
        st, cfg = self.state, self.cfg
        x0, y0 = st.x.copy(), st.y.copy()
        self.physics.step(st, actions[:, 1], actions[:, 0], cfg.action_repeat)
        new_progress = np.empty(self.n)
        laps_done = np.empty(self.n, dtype=np.int64)
        limits = (self.step_dt, cfg.stuck_time_s, cfg.wrong_way_m, cfg.off_track_time_s, cfg.max_episode_steps)
        _race_step(self._tables, RACE_KART_VIEW.of(st), x0, y0, tuple(self.arrays), new_progress, laps_done, limits)
        if cfg.max_damage is not None:
            wrecked = (st.damage >= cfg.max_damage) & ~self.terminated
            self.termination_reason[wrecked] = 4
            self.terminated |= wrecked
            self.truncated &= ~wrecked
        impact = np.where(st.wall_hit, st.impact_speed, 0.0)
        steer_change = np.abs(actions[:, 0] - self.last_steer)
        self.last_steer[:] = actions[:, 0]
        self.terms = reward_terms(new_progress, laps_done, st.surface == Surface.GRASS, impact, self.terminated,
                                  self.step_dt, self._record_laps(laps_done), steer_change, out=self._step_terms)
        # The terms are the columns of one array: one matrix-vector product weighs them all and one add
        # sums them into the episode, however many terms there are (a one-kart env's step is mostly
        # numpy call overhead).
        np.matmul(self._step_terms, term_weights(self.reward_cfg), out=self.reward)
        np.add(self.episode_terms, self._step_terms, out=self.episode_terms)  # `+=` would rebind: a setattr

    def _record_laps(self, laps_done: np.ndarray) -> np.ndarray | None:
        """The lap times completed this step into the episode stats; returns each kart's mean speed
        (m/s) over that lap (0 where none did; None when no kart completed one)."""
        if not laps_done.any():
            return None
        lapped = np.flatnonzero(laps_done)
        for i in lapped:
            self.stats.lap_times[i].append(float(self.new_lap_time[i]))
        speed = np.zeros(self.n)
        speed[lapped] = self.lengths[self.state.track_idx[lapped]] / self.new_lap_time[lapped]
        return speed

    # ------------------------------------------------------------------ summaries
    def episode_stats(self, i: int) -> dict[str, Any]:
        """Kart ``i``'s episode summary (read it before the kart is reset).

        ``reward_terms``: each term's contribution to the episode's reward (weight × its sum; they add
        up to the episode return); ``reward_terms_raw``: the unweighted sums (metres of progress, laps,
        seconds on grass, m/s of wall impacts, early ends).
        """
        steps = max(int(self.steps[i]), 1)
        weights = self.reward_cfg.weights()
        raw = dict(zip(REWARD_TERMS, self.episode_terms[i].tolist()))
        return {
            "laps": int(self.laps[i]),
            "best_lap": float(self.best_lap[i]) if np.isfinite(self.best_lap[i]) else None,
            "mean_speed": float(self.speed_sum[i] / steps),
            "off_track_share": float(self.grass_steps[i] / steps),
            "progress_m": float(self.best[i] - self.start_progress[i]),
            "steps": int(self.steps[i]),
            "termination": TERMINATION_REASONS[int(self.termination_reason[i])],
            "reward_terms": {name: weights[name] * value for name, value in raw.items()},
            "reward_terms_raw": raw,
        }

    def telemetry(self, i: int) -> dict[str, float | int | str | bool]:
        st = self.state
        g = 9.81
        return {
            "time_s": float(self.episode_time[i]),
            "x": float(st.x[i]),
            "y": float(st.y[i]),
            "yaw": float(st.yaw[i]),
            "speed": float(st.speed[i]),
            "longitudinal_g": float(st.ax[i] / g),
            "lateral_g": float(st.ay[i] / g),
            "yaw_rate": float(st.yaw_rate[i]),
            "steering": float(st.steer[i] / self.kart_cfg.max_steer_rad),
            "throttle": float(st.throttle[i]),
            "slip_angle": float(st.slip_angle[i]),
            "surface": Surface(int(st.surface[i])).name.lower(),
            "lap": int(self.laps[i]),
            "lap_time": float(self.lap_time[i]) if self.lap_started[i] else 0.0,
            "progress": float(self.s[i]),
            "lateral_offset": float(self.lateral[i]),
            "off_track": bool(st.surface[i] == Surface.GRASS),
            "track": self.stack.tracks[int(st.track_idx[i])].name,
            "tyre_condition": float(st.tyre_condition[i]),
            "wetness": float(st.wetness[i]),
            "damage": float(st.damage[i]),
        }


def check_actions(actions: np.ndarray, n: int) -> np.ndarray:
    """Validate an action batch (N, 2) and clip it to [-1, 1]; a wrong one gets a clear error."""
    try:
        a = np.asarray(actions, dtype=np.float64)
    except (TypeError, ValueError):
        raise KartsimError(f"actions must be numbers [steering, throttle] in [-1, 1], got {actions!r:.80}") from None
    if a.shape == (2,) and n == 1:
        a = a[None]
    if a.shape != (n, 2):
        raise KartsimError(
            f"actions must have shape ({n}, 2) = [steering, throttle] per kart, got {a.shape}; "
            "pass one [steering, throttle] pair per env"
        )
    if not np.all(np.isfinite(a)):
        raise KartsimError("actions contain NaN or infinity; check the policy's output (a diverged network?)")
    return np.clip(a, -1.0, 1.0)


# ---------------------------------------------------------------------- compiled per-kart bookkeeping
@njit(cache=True)
def _project_karts(tt, ks, sel, rs):
    """Project karts ``sel`` (of the RaceKart ``ks``) onto their track's centerline (TrackTables ``tt``),
    into the RaceArrays ``rs``."""
    tt, ks, rs = TrackTables(*tt), RaceKart(*ks), RaceArrays(*rs)
    for k in sel:
        t = ks.track_idx[k]
        rs.centerline_idx[k], rs.s[k], rs.lateral[k], rs.track_heading[k] = project_point(
            tt.points[t], tt.s[t], tt.heading[t], tt.n_points[t], tt.length[t], tt.lookup[t], tt.lookup_cell_m[t],
            tt.lookup_window[t], ks.x[k], ks.y[k])


@njit(cache=True)
def _segments_cross(p0x, p0y, p1x, p1y, ax, ay, bx, by):
    """Whether segment p0→p1 crosses segment a→b."""
    rx, ry = p1x - p0x, p1y - p0y
    sx, sy = bx - ax, by - ay
    denom = rx * sy - ry * sx
    if abs(denom) <= 1e-12:
        return False
    qpx, qpy = ax - p0x, ay - p0y
    t = (qpx * sy - qpy * sx) / denom
    u = (qpx * ry - qpy * rx) / denom
    return 0.0 <= t <= 1.0 and 0.0 <= u <= 1.0


@njit(cache=True)
def _race_step(tt, ks, x0, y0, rs, new_progress, laps_done, lim):  # noqa: C901 (numba kernel)
    """One env step of race bookkeeping for every kart: progress, gates and laps, timers, episode ends.

    ``tt``: TrackTables; ``ks``: RaceKart after the physics step, the karts at ``x0``, ``y0`` before it;
    ``rs``: RaceArrays (written in place); ``lim``: EpisodeLimits; writes each kart's new progress (m)
    and laps completed into ``new_progress`` and ``laps_done``."""
    tt, ks, rs, lim = TrackTables(*tt), RaceKart(*ks), RaceArrays(*rs), EpisodeLimits(*lim)
    points, s_tab, heading, n_points, length = tt.points, tt.s, tt.heading, tt.n_points, tt.length
    lookup, cell_m, window = tt.lookup, tt.lookup_cell_m, tt.lookup_window
    gate_ends, gate_fwd, gate_count = tt.gate_ends, tt.gate_forward, tt.gate_count
    track_idx, x, y, speed, surface = ks.track_idx, ks.x, ks.y, ks.speed, ks.surface
    cidx, s, lateral, theading, progress, best = rs.centerline_idx, rs.s, rs.lateral, rs.track_heading, \
        rs.total_progress, rs.best
    next_gate, lap_started, lap_time, laps = rs.next_gate, rs.lap_started, rs.lap_time, rs.laps
    best_lap, new_lap_time, episode_time, steps = rs.best_lap, rs.new_lap_time, rs.episode_time, rs.steps
    since_progress, grass_time, speed_sum, grass_steps = rs.since_progress, rs.grass_time, rs.speed_sum, \
        rs.grass_steps
    reason, terminated, truncated = rs.termination_reason, rs.terminated, rs.truncated
    dt, stuck_time_s, wrong_way_m = lim.dt, lim.stuck_time_s, lim.wrong_way_m
    off_track_time_s, max_steps = lim.off_track_time_s, lim.max_episode_steps
    for k in range(x.shape[0]):
        t = track_idx[k]
        L = length[t]
        s_old = s[k]
        cidx[k], s[k], lateral[k], theading[k] = project_point(
            points[t], s_tab[t], heading[t], n_points[t], L, lookup[t], cell_m[t], window[t], x[k], y[k])

        # Unwrapped progress; a jump (a shortcut across the infield) is capped at the distance moved.
        moved = math.hypot(x[k] - x0[k], y[k] - y0[k]) + 1.0
        delta = (s[k] - s_old + 0.5 * L) % L - 0.5 * L
        progress[k] += min(max(delta, -moved), moved)
        gain = max(progress[k] - best[k], 0.0)
        best[k] += gain
        new_progress[k] = gain

        # Gates, forwards and in order; two per step at most at the highest speeds.
        done = 0
        new_lap_time[k] = np.nan
        for _ in range(2):
            g = next_gate[k]
            crossed = _segments_cross(x0[k], y0[k], x[k], y[k], gate_ends[t, g, 0], gate_ends[t, g, 1],
                                      gate_ends[t, g, 2], gate_ends[t, g, 3])
            if not crossed or (x[k] - x0[k]) * gate_fwd[t, g, 0] + (y[k] - y0[k]) * gate_fwd[t, g, 1] <= 0.0:
                break
            if g == 0:
                if lap_started[k]:
                    new_lap_time[k] = lap_time[k]
                    best_lap[k] = min(best_lap[k], lap_time[k])
                    laps[k] += 1
                    done += 1
                lap_time[k] = 0.0
                lap_started[k] = True
            next_gate[k] = (g + 1) % gate_count[t]
        laps_done[k] = done

        episode_time[k] += dt
        lap_time[k] += dt
        steps[k] += 1
        on_grass = surface[k] == 3  # Surface.GRASS
        grass_time[k] = grass_time[k] + dt if on_grass else 0.0
        since_progress[k] = 0.0 if gain > 1e-3 else since_progress[k] + dt
        speed_sum[k] += speed[k]
        grass_steps[k] += on_grass

        r = 0
        if grass_time[k] >= off_track_time_s:
            r = 3
        if since_progress[k] >= stuck_time_s:
            r = 2
        if best[k] - progress[k] >= wrong_way_m:
            r = 1
        reason[k] = r
        terminated[k] = r > 0
        truncated[k] = r == 0 and steps[k] >= max_steps
