"""Multi-kart racing: N karts on one track in one simulation, a grid start, race positions and gaps.

:class:`GridRace` is a :class:`~kartsim.sim.race.Race` whose karts share one track and one collision world
(kart-to-kart contacts in the physics), start from a staggered grid behind the start/finish line,
and are ranked every step:

* **race distance** = continuous progress along the centerline since the start (negative on the grid);
* **position**: finished karts by finishing order, then the others by race distance (1 = leading);
* **gap**: seconds behind the kart ahead, measured like real timing: when a kart reaches a point of
  the lap, the time since the kart ahead passed that same point (distance markers every 2 m);
* a kart **finishes** after ``rules.laps`` laps; heavy damage can retire it (``rules.max_damage``).

The karts nobody controls are driven by :class:`kartsim.drivers.opponents.Opponents`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kartsim.errors import ConfigError
from kartsim.sim.columns import Column, Columns
from kartsim.sim.config import WEATHER, WEATHERS, KartConfig, RaceConfig, RaceRules, RewardConfig
from kartsim.sim.race import Race
from kartsim.sim.track import TrackStack

__all__ = ["GridRace"]

MARK_SPACING_M = 2.0


F8, I8, B1 = np.float64, np.int64, np.bool_
GRID_COLUMNS = Columns("GridArrays", __name__, [
    # name, dtype, value written by GridRace.start (None: computed there or by a step), init, doc
    Column("position", I8, None, lambda n: np.arange(1, n + 1), doc="Race position, 1 = leading (0: not classified)."),
    Column("gap", F8, doc="Seconds behind the kart ahead."),
    Column("gap_to_leader", F8, doc="Seconds behind the leader."),
    Column("finished", B1, False, doc="Completed ``rules.laps`` laps."),
    Column("finish_time", F8, np.inf, doc="Race time at the finish (s), inf before."),
    Column("finish_order", I8, 0, doc="1 = won, 0 = not finished."),
    Column("retired", B1, False, doc="Retired by damage (``rules.max_damage``)."),
    Column("in_race", B1, True, doc="Classified; False: a ghost or spectator kart."),
    Column("grid_slot", I8, None, np.arange, doc="Grid slot, 0 = pole."),
    Column("prev_best", F8, doc="``best`` at the previous step (for the timing marks)."),
])
GridArrays = GRID_COLUMNS.record  # module-level: pickle finds the class by name


class GridRace(Race):
    """A real race: all karts on one track, one collision world, grid start, positions and gaps."""

    def __init__(self, stack: TrackStack, n_karts: int, race: RaceConfig | None = None,
                 reward: RewardConfig | None = None, kart: KartConfig | None = None,
                 rules: RaceRules | None = None) -> None:
        cfg = race or RaceConfig()
        rules = (rules or RaceRules()).resolved(cfg)
        super().__init__(stack, n_karts, cfg, reward, kart)
        self.rules = rules
        n = n_karts
        self.state.world[:] = 0 if rules.collisions else np.arange(n)
        self.grid_arrays: GridArrays = GRID_COLUMNS.allocate(n)
        GRID_COLUMNS.attach(self, self.grid_arrays)
        self.weather = "dry"
        self._prev_time = 0.0
        self._mark0 = 0.0
        self._marks = np.zeros((n, 1))

    # ------------------------------------------------------------------------------ start
    def grid_poses(self, track_index: int, n: int | None = None) -> np.ndarray:
        """(n, 3) x, y, yaw of the grid slots, pole first."""
        n = self.n if n is None else n
        track = self.stack.tracks[track_index]
        r = self.rules
        slots = np.arange(n)
        back = r.grid_front_m + (slots // 2) * r.grid_row_m + (slots % 2) * r.grid_stagger_m
        s = np.mod(-back, track.length)
        x, y, yaw = track.pose_at(s)
        width = track.width_at(s)
        side = np.where(slots % 2 == 0, -1.0, 1.0)
        off = side * np.minimum(r.grid_lateral_m, 0.3 * width)
        return np.column_stack([x - np.sin(yaw) * off, y + np.cos(yaw) * off, yaw])

    def start(self, rng: np.random.Generator, order: np.ndarray | None = None, track_index: int | None = None,
              weather: str | None = None) -> None:
        """Start a new race: every kart on the grid of one track (drawn from the pool unless given),
        in grid ``order`` (kart ``order[0]`` on pole; random when None), weather drawn if random."""
        n = self.n
        idx = np.arange(n)
        t = int(rng.integers(len(self.stack.tracks))) if track_index is None else int(track_index)
        order = rng.permutation(n) if order is None else np.asarray(order)
        if sorted(order.tolist()) != list(range(n)):
            raise ConfigError(f"grid order must be a permutation of 0..{n - 1}, got {list(order)}")
        self.reset_karts(idx, [rng] * n)  # the race's own bookkeeping, then our grid on top
        poses = self.grid_poses(t)
        slot = np.empty(n, np.int64)
        slot[order] = np.arange(n)
        self.grid_slot[:] = slot
        self.state.track_idx[:] = t
        self.state.reset(idx, poses[slot, 0], poses[slot, 1], poses[slot, 2],
                         tyre_condition=self.kart_cfg.tyre_start_condition)
        w = self.rules.weather if weather is None else weather
        if w == "random":
            w = str(rng.choice(["dry", "damp", "wet"]))
        if w not in WEATHER:
            raise ConfigError(f"weather must be one of {', '.join(WEATHERS)}, got {w!r}")
        self.weather = w
        self.state.wetness[:] = WEATHER[w]
        self.state.world[:] = 0 if self.rules.collisions else idx
        self._update_frame(idx)
        L = self.lengths[t]
        start = np.where(self.s > L / 2, self.s - L, self.s)
        self.total_progress[:] = start
        self.best[:] = start
        self.start_progress[:] = start
        self.next_gate[:] = 0
        GRID_COLUMNS.reset(self.grid_arrays, idx)
        # timing marks from the last grid slot to the end of the race (+ a lap of slack)
        self._mark0 = float(start.min()) - MARK_SPACING_M
        n_marks = int(math.ceil(((min(self.rules.laps, 3) + 1) * L - self._mark0) / MARK_SPACING_M)) + 2
        self._marks = np.full((n, n_marks), np.nan)
        self.prev_best[:] = self.best
        self._prev_time = 0.0
        self._rank()

    # ------------------------------------------------------------------------------ a step
    def step(self, actions: np.ndarray) -> None:
        """One env step of every kart (finished and retired karts should be given zero/brake)."""
        super().step(actions)
        t_now = float(self.episode_time.max())
        self._time_marks(t_now)
        newly = (~self.finished) & (self.laps >= self.rules.laps) & self.in_race
        for i in np.nonzero(newly)[0]:
            self.finished[i] = True
            self.finish_time[i] = self.episode_time[i]
            self.finish_order[i] = int(self.finished.sum())
        if self.rules.max_damage is not None:
            self.retired |= (self.state.damage >= self.rules.max_damage) & ~self.finished
        self._rank()
        self._prev_time = t_now

    def _time_marks(self, t_now: float) -> None:
        sp = MARK_SPACING_M
        need = int(math.floor((float(self.best.max()) - self._mark0) / sp)) + 2
        if need > self._marks.shape[1]:  # a long race: grow the timing table
            grow = np.full((self.n, max(need, 2 * self._marks.shape[1])), np.nan)
            grow[:, : self._marks.shape[1]] = self._marks
            self._marks = grow
        M = self._marks.shape[1]
        for i in range(self.n):
            b0, b1 = self.prev_best[i], self.best[i]
            if b1 <= b0:
                continue
            m0 = max(int(math.floor((b0 - self._mark0) / sp)) + 1, 0)
            m1 = min(int(math.floor((b1 - self._mark0) / sp)), M - 1)
            if m1 < m0:
                continue
            d = self._mark0 + np.arange(m0, m1 + 1) * sp
            f = (d - b0) / (b1 - b0)
            self._marks[i, m0:m1 + 1] = self._prev_time + f * (t_now - self._prev_time)
        self.prev_best[:] = self.best

    def passing_time(self, i: int, distance: float) -> float:
        """When kart ``i`` reached race ``distance`` (s), NaN if it has not (yet)."""
        m = (distance - self._mark0) / MARK_SPACING_M
        m0 = int(math.floor(m))
        if m0 < 0 or m0 + 1 >= self._marks.shape[1]:
            return float("nan")
        a, b = self._marks[i, m0], self._marks[i, m0 + 1]
        if np.isnan(a):
            return float("nan")
        if np.isnan(b):
            return float(a)
        return float(a + (b - a) * (m - m0))

    def _rank(self) -> None:
        dist = self.best
        # finished first (by finishing order), then by distance; retired karts last
        key = np.where(self.finished, 1e12 - self.finish_order, np.where(self.retired, -1e12 + dist, dist))
        racing = np.nonzero(self.in_race)[0]
        order = racing[np.argsort(-key[racing], kind="stable")]
        self.position[:] = 0
        self.position[order] = np.arange(1, len(order) + 1)
        self.gap[:] = 0.0
        self.gap_to_leader[:] = 0.0
        if len(order) == 0:
            return
        t_now = float(self.episode_time.max())
        leader = order[0]
        for rank in range(1, len(order)):
            i, ahead = order[rank], order[rank - 1]
            self.gap[i] = self._gap(i, ahead, t_now)
            self.gap_to_leader[i] = self._gap(i, leader, t_now)

    def _gap(self, i: int, j: int, t_now: float) -> float:
        if self.finished[i] and self.finished[j]:
            return float(self.finish_time[i] - self.finish_time[j])
        t_j = self.passing_time(j, float(self.best[i]))
        if np.isnan(t_j):
            return 0.0
        return max(t_now - t_j, 0.0)

    def rescue(self, i: int, clearance_m: float = 4.0) -> bool:
        """Put a stuck kart back on the centerline where it is (facing forward, standing still), like
        the marshals of a kart track; its race distance, tyres and damage are kept. Returns False (and
        does nothing) while another kart is within ``clearance_m`` of that spot."""
        st = self.state
        track = self.stack.tracks[int(st.track_idx[i])]
        x, y, yaw = track.pose_at(float(self.s[i]))
        near = np.hypot(st.x - x, st.y - y) < clearance_m
        near[i] = False
        near &= (st.world == st.world[i]) & (st.track_idx == st.track_idx[i]) & ~self.retired
        if near.any():
            return False
        keep = {name: getattr(st, name)[i] for name in ("tyre_condition", "damage", "steer_bias")}
        st.reset(np.array([i]), x, y, yaw, tyre_condition=keep["tyre_condition"])
        st.damage[i] = keep["damage"]
        st.steer_bias[i] = keep["steer_bias"]
        self._update_frame(np.array([i]))
        self.since_progress[i] = 0.0
        self.grass_time[i] = 0.0
        return True

    def add_ghost(self, i: int, x: float, y: float, yaw: float) -> None:
        """Make kart ``i`` a ghost at (x, y, yaw) for this race: its own collision world, not
        classified, its progress starting there (call after :meth:`start`)."""
        st = self.state
        st.reset(np.array([i]), x, y, yaw, tyre_condition=self.kart_cfg.tyre_start_condition)
        st.world[i] = 10 ** 6 + i
        self.in_race[i] = False
        self._update_frame(np.array([i]))
        L = self.lengths[int(st.track_idx[i])]
        start = self.s[i] - L if self.s[i] > L / 2 else self.s[i]
        self.total_progress[i] = self.best[i] = self.start_progress[i] = start
        self.prev_best[i] = start
        self._rank()

    # ------------------------------------------------------------------------------ reports
    def telemetry(self, i: int) -> dict[str, Any]:
        tel = super().telemetry(i)
        st = self.state
        tel.update({
            "position": int(self.position[i]),
            "gap": float(self.gap[i]),
            "kart_hit": bool(st.kart_hit[i]),
        })
        return tel

    def standings(self) -> list[dict[str, Any]]:
        """The classification: position, kart, laps, race distance, gap, finish time, best lap.
        Distances are rounded to the centimetre and times to the millisecond (sums of 0.02 s steps
        otherwise read like 102.59999999999845)."""
        rows = []
        racing = np.nonzero(self.in_race)[0]
        for i in racing[np.argsort(self.position[racing])]:
            rows.append({
                "position": int(self.position[i]), "kart": int(i), "laps": int(self.laps[i]),
                "distance_m": round(float(self.best[i]), 2), "gap_s": round(float(self.gap[i]), 3),
                "gap_to_leader_s": round(float(self.gap_to_leader[i]), 3),
                "finished": bool(self.finished[i]), "retired": bool(self.retired[i]),
                "finish_time_s": round(float(self.finish_time[i]), 3) if self.finished[i] else None,
                "best_lap_s": round(float(self.best_lap[i]), 3) if np.isfinite(self.best_lap[i]) else None,
            })
        return rows

    def others(self, exclude_out: bool = True) -> np.ndarray:
        """(N, 4) [x, y, yaw, track_idx] of every kart for the sensors; retired karts and ghosts get an
        impossible track index so that the sensors do not see them."""
        st = self.state
        o = np.column_stack([st.x, st.y, st.yaw, st.track_idx.astype(np.float64)])
        if exclude_out:
            o[self.retired | ~self.in_race | (st.world >= 10 ** 6), 3] = -1e6
        return o
