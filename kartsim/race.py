"""A race: tracks + N karts + laps, progress, rewards and episode ends. The one simulation core.

Every env is a view of a :class:`Race`: the single-kart env is a race of one kart, the batched env
a race of N independent karts (each may be on its own track of the pool). All per-kart state is a
1-D array allocated once; a step is array operations over all karts.

Progress is measured along the track's centerline and *unwrapped* across the finish line. Only new
forward progress pays (a high-water mark), so spinning, zig-zagging, reversing and re-crossing the
start line earn nothing. Laps are counted by gates crossed forwards, in order; a lap counts only
when the kart crosses the start/finish gate after every other gate of that lap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kartsim.errors import KartsimError
from kartsim.physics import KartConfig, KartPhysics, KartState
from kartsim.track import Surface, TrackStack

# A gate is widened by this much beyond each road edge so that a wheel on the kerb or grass
# still counts as crossing it; cutting across the infield still misses it.
GATE_MARGIN_M = 3.0


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
    stuck_time_s: float = 6.0
    """The episode ends when no new forward progress was made for this long."""
    wrong_way_m: float = 20.0
    """The episode ends when the kart is this far behind its best progress."""
    off_track_time_s: float = 4.0
    """The episode ends after this long continuously on grass."""


TERMINATION_REASONS = ("", "wrong_way", "stuck", "off_track")


def reward_terms(
    new_progress_m: np.ndarray,
    laps_completed: np.ndarray,
    on_grass: np.ndarray,
    impact_speed: np.ndarray,
    terminated: np.ndarray,
    step_dt: float,
) -> dict[str, np.ndarray]:
    """The raw reward terms per kart, named as the :class:`RewardConfig` weights."""
    return {
        "progress": new_progress_m,
        "lap": laps_completed.astype(np.float64),
        "off_track": on_grass * step_dt,
        "wall": impact_speed,
        "termination": terminated.astype(np.float64),
    }


def weighted_reward(terms: dict[str, np.ndarray], cfg: RewardConfig) -> np.ndarray:
    weights = cfg.weights()
    total = np.zeros_like(terms["progress"], dtype=np.float64)
    for name, value in terms.items():
        total += weights[name] * value
    return total


def _segments_cross(p0x, p0y, p1x, p1y, ax, ay, bx, by) -> np.ndarray:
    """Whether segment p0→p1 crosses segment a→b (vectorised)."""
    rx, ry = p1x - p0x, p1y - p0y
    sx, sy = bx - ax, by - ay
    denom = rx * sy - ry * sx
    qpx, qpy = ax - p0x, ay - p0y
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (qpx * sy - qpy * sx) / denom
        u = (qpx * ry - qpy * rx) / denom
    return (np.abs(denom) > 1e-12) & (t >= 0.0) & (t <= 1.0) & (u >= 0.0) & (u <= 1.0)


@dataclass
class _GateTable:
    """All tracks' gates as padded arrays, widened by the margin, with their forward directions."""

    ends: np.ndarray  # (T, G, 4) metres
    forward: np.ndarray  # (T, G, 2) unit vectors of the driving direction at each gate
    count: np.ndarray  # (T,)

    @classmethod
    def build(cls, stack: TrackStack) -> "_GateTable":
        g_max = max(len(t.gates) for t in stack.tracks)
        ends = np.zeros((len(stack.tracks), g_max, 4))
        forward = np.zeros((len(stack.tracks), g_max, 2))
        for i, track in enumerate(stack.tracks):
            g = np.asarray(track.gates, dtype=np.float64)
            a, b = g[:, :2], g[:, 2:]
            along = (b - a) / np.maximum(np.linalg.norm(b - a, axis=1, keepdims=True), 1e-9)
            ends[i, : len(g), :2] = a - along * GATE_MARGIN_M
            ends[i, : len(g), 2:] = b + along * GATE_MARGIN_M
            heading = track.heading[track.locate(*((a + b) / 2).T)]
            forward[i, : len(g)] = np.stack([np.cos(heading), np.sin(heading)], axis=1)
        return cls(ends, forward, np.array([len(t.gates) for t in stack.tracks]))


@dataclass
class EpisodeStats:
    """Per-kart accumulators for the end-of-episode summary."""

    speed_sum: np.ndarray
    grass_steps: np.ndarray
    start_progress: np.ndarray
    lap_times: list[list[float]] = field(default_factory=list)


class Race:
    """N karts racing (independently) on a pool of tracks.

    After :meth:`step`, the arrays ``reward``, ``terminated``, ``truncated``, ``new_lap_time`` and
    ``terms`` hold that step's outcome per kart; the karts' physical state is in ``state``.
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
        self.physics = KartPhysics(self.kart_cfg, stack.surface, stack.wall_distance, stack.scale)
        self.state = KartState(n_karts)
        self.step_dt = self.kart_cfg.dt * self.cfg.action_repeat
        self.gates = _GateTable.build(stack)
        self.lengths = np.array([t.length for t in stack.tracks])

        n = n_karts
        self.s = np.zeros(n)  # progress along the lap, [0, length)
        self.lateral = np.zeros(n)  # metres right of the centerline
        self.track_heading = np.zeros(n)
        self.centerline_idx = np.zeros(n, dtype=np.int64)
        self.unwrapped = np.zeros(n)  # continuous progress (metres), negative when behind the start
        self.best = np.zeros(n)  # high-water mark of `unwrapped`
        self.next_gate = np.zeros(n, dtype=np.int64)
        self.lap_started = np.zeros(n, dtype=bool)  # crossed the line: the lap timer is running
        self.lap_time = np.zeros(n)
        self.laps = np.zeros(n, dtype=np.int64)
        self.best_lap = np.full(n, np.inf)
        self.new_lap_time = np.full(n, np.nan)
        self.episode_time = np.zeros(n)
        self.steps = np.zeros(n, dtype=np.int64)
        self.since_progress = np.zeros(n)
        self.grass_time = np.zeros(n)
        self.reward = np.zeros(n)
        self.terminated = np.zeros(n, dtype=bool)
        self.truncated = np.zeros(n, dtype=bool)
        self.termination_reason = np.zeros(n, dtype=np.int8)  # index into TERMINATION_REASONS
        self.terms: dict[str, np.ndarray] = {}
        self.stats = EpisodeStats(np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n), [[] for _ in range(n)])

    # ------------------------------------------------------------------ starts
    def reset_karts(self, idx: np.ndarray, rngs: list[np.random.Generator]) -> None:
        """Place karts ``idx`` at their start, each drawing from its own generator ``rngs[k]``."""
        idx = np.asarray(idx, dtype=np.int64)
        n_tracks = len(self.stack.tracks)
        for k, i in enumerate(idx):
            rng = rngs[k]
            t = int(rng.integers(n_tracks)) if n_tracks > 1 else 0
            track = self.stack.tracks[t]
            self.state.track_idx[i] = t
            if self.cfg.random_start:
                s0 = float(rng.uniform(0.0, track.length))
                x, y, yaw = (float(v[0]) for v in track.pose_at(np.array([s0])))
                j = int(track.locate(np.array([x]), np.array([y]))[0])
                max_off = min(self.cfg.start_lateral_jitter_m, 0.25 * float(track.width[j]))
                off = float(rng.uniform(-max_off, max_off))
                yaw_j = float(rng.uniform(-1.0, 1.0)) * self.cfg.start_heading_jitter_rad
                x, y = x - np.sin(yaw) * off, y + np.cos(yaw) * off
                yaw += yaw_j
            else:
                s0 = track.length - self.cfg.start_behind_line_m
                x, y, yaw = (float(v[0]) for v in track.pose_at(np.array([s0])))
            self.state.reset(np.array([i]), np.array([x]), np.array([y]), np.array([yaw]))

        self._update_frame(idx)
        # Progress starts at the start position; behind the line counts as negative progress.
        start = np.where(self.s[idx] > self.lengths[self.state.track_idx[idx]] / 2,
                         self.s[idx] - self.lengths[self.state.track_idx[idx]], self.s[idx])
        self.unwrapped[idx] = start
        self.best[idx] = start
        self.stats.start_progress[idx] = start
        for i in idx:
            # Mid-lap starts wait for the next gate ahead; the first line crossing starts the lap timer.
            gate_s = self.stack.tracks[self.state.track_idx[i]].gate_s
            ahead = np.nonzero(gate_s > self.s[i])[0] if self.cfg.random_start else []
            self.next_gate[i] = ahead[0] if len(ahead) else 0
            self.stats.lap_times[i] = []
        self.lap_started[idx] = False
        self.lap_time[idx] = 0.0
        self.laps[idx] = 0
        self.best_lap[idx] = np.inf
        self.new_lap_time[idx] = np.nan
        self.episode_time[idx] = 0.0
        self.steps[idx] = 0
        self.since_progress[idx] = 0.0
        self.grass_time[idx] = 0.0
        self.terminated[idx] = False
        self.truncated[idx] = False
        self.termination_reason[idx] = 0
        self.stats.speed_sum[idx] = 0.0
        self.stats.grass_steps[idx] = 0

    def _update_frame(self, idx: np.ndarray | slice = slice(None)) -> None:
        """Project karts onto their track's centerline (one call per track in the pool)."""
        x, y, tid = self.state.x[idx], self.state.y[idx], self.state.track_idx[idx]
        s = np.empty(len(x))
        lat = np.empty(len(x))
        head = np.empty(len(x))
        ci = np.empty(len(x), dtype=np.int64)
        for t, track in enumerate(self.stack.tracks):
            m = tid == t if len(self.stack.tracks) > 1 else slice(None)
            ci[m] = track.locate(x[m], y[m])
            s[m], lat[m], head[m] = track.frame(x[m], y[m], index=ci[m])
        self.s[idx], self.lateral[idx], self.track_heading[idx], self.centerline_idx[idx] = s, lat, head, ci

    # ------------------------------------------------------------------ a step
    def step(self, actions: np.ndarray) -> None:
        """Advance every kart by one env step with ``actions[:, 0]`` = steering, ``[:, 1]`` = throttle."""
        actions = check_actions(actions, self.n)
        st = self.state
        x0, y0 = st.x.copy(), st.y.copy()
        self.physics.step(st, actions[:, 1], actions[:, 0], self.cfg.action_repeat)
        s_old = self.s.copy()
        self._update_frame()

        # Unwrapped progress; a jump (shortcut across the infield) is capped at the distance moved.
        length = self.lengths[st.track_idx]
        moved = np.hypot(st.x - x0, st.y - y0)
        delta = (self.s - s_old + length / 2) % length - length / 2
        self.unwrapped += np.clip(delta, -(moved + 1.0), moved + 1.0)
        new_progress = np.maximum(self.unwrapped - self.best, 0.0)
        self.best += new_progress

        laps_done = self._cross_gates(x0, y0)

        dt = self.step_dt
        self.episode_time += dt
        self.lap_time += dt
        self.steps += 1
        on_grass = st.surface == Surface.GRASS
        self.grass_time = np.where(on_grass, self.grass_time + dt, 0.0)
        self.since_progress = np.where(new_progress > 1e-3, 0.0, self.since_progress + dt)

        reason = np.zeros(self.n, dtype=np.int8)
        reason[self.grass_time >= self.cfg.off_track_time_s] = 3
        reason[self.since_progress >= self.cfg.stuck_time_s] = 2
        reason[self.best - self.unwrapped >= self.cfg.wrong_way_m] = 1
        self.termination_reason[:] = reason
        self.terminated[:] = reason > 0
        self.truncated[:] = (~self.terminated) & (self.steps >= self.cfg.max_episode_steps)

        impact = np.where(st.wall_hit, st.impact_speed, 0.0)
        self.terms = reward_terms(new_progress, laps_done, on_grass, impact, self.terminated, dt)
        self.reward[:] = weighted_reward(self.terms, self.reward_cfg)

        self.stats.speed_sum += st.speed
        self.stats.grass_steps += on_grass

    def _cross_gates(self, x0: np.ndarray, y0: np.ndarray) -> np.ndarray:
        """Advance each kart's next gate when it crossed it forwards; return laps completed."""
        st = self.state
        laps_done = np.zeros(self.n, dtype=np.int64)
        self.new_lap_time[:] = np.nan
        tid = st.track_idx
        # Two passes: at most two gates can be crossed in one step at the highest speeds.
        for _ in range(2):
            g = self.next_gate
            ends = self.gates.ends[tid, g]
            fwd = self.gates.forward[tid, g]
            crossed = _segments_cross(x0, y0, st.x, st.y, ends[:, 0], ends[:, 1], ends[:, 2], ends[:, 3])
            crossed &= (st.x - x0) * fwd[:, 0] + (st.y - y0) * fwd[:, 1] > 0.0
            if not crossed.any():
                break
            line = crossed & (g == 0)
            completed = line & self.lap_started
            if completed.any():
                for i in np.nonzero(completed)[0]:
                    self.stats.lap_times[i].append(float(self.lap_time[i]))
                self.new_lap_time[completed] = self.lap_time[completed]
                self.best_lap[completed] = np.minimum(self.best_lap[completed], self.lap_time[completed])
                self.laps += completed
                laps_done += completed
            self.lap_time[line] = 0.0
            self.lap_started |= line
            self.next_gate = np.where(crossed, (g + 1) % self.gates.count[tid], g)
        return laps_done

    # ------------------------------------------------------------------ summaries
    def episode_stats(self, i: int) -> dict[str, float]:
        steps = max(int(self.steps[i]), 1)
        return {
            "laps": int(self.laps[i]),
            "best_lap": float(self.best_lap[i]) if np.isfinite(self.best_lap[i]) else None,
            "mean_speed": float(self.stats.speed_sum[i] / steps),
            "off_track_share": float(self.stats.grass_steps[i] / steps),
            "progress_m": float(self.best[i] - self.stats.start_progress[i]),
            "steps": int(self.steps[i]),
            "termination": TERMINATION_REASONS[int(self.termination_reason[i])],
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
        }


def check_actions(actions: np.ndarray, n: int) -> np.ndarray:
    """Validate an action batch (N, 2) and clip it to [-1, 1]; a wrong one gets a clear error."""
    a = np.asarray(actions, dtype=np.float64)
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
