"""The one batched env core behind every kartsim env.

:class:`EnvCore` builds the track stack, the race, the observer and the spaces of an ``EnvConfig``,
holds one random generator per kart, resets karts by index with their generators, steps them, does
the autoreset bookkeeping (ended karts, terminal observations, final infos) and draws a kart's map
with its camera frame. ``KartEnv`` (N = 1), the SB3 ``KartVecEnv`` (and through it the subprocess
workers) and ``KartGymVectorEnv`` translate its calls to their API; the race envs use its subclass
:class:`kartsim.envs.race_env.RaceCore` (a ``GridRace`` with opponents, given as ``make_race``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

from kartsim.envs.config import EnvConfig
from kartsim.envs.info import step_infos
from kartsim.envs.observations import make_observer
from kartsim.envs.render import TrackMaps, Window, compose_frame
from kartsim.envs.tracks import load_track_stack
from kartsim.sim.race import Race
from kartsim.sim.track import TrackStack


def check_render_mode(render_mode: str | None, modes: Sequence[str]) -> str | None:
    if render_mode is not None and render_mode not in modes:
        raise ValueError(f"render_mode must be one of {list(modes)}, got {render_mode!r}")
    return render_mode


@dataclass
class Outcome:
    """A step of every kart, as it ended (read before the autoreset put the ended karts back)."""

    rewards: np.ndarray  # (N,) float32
    terminated: np.ndarray  # (N,) bool
    truncated: np.ndarray  # (N,) bool
    ended: np.ndarray  # indices of the karts whose episode ended
    final_observations: list[Any]  # their last observations, in `ended` order
    infos: list[dict[str, Any]] | None  # every kart's step info (None: not asked for and no kart ended)


class EnvCore:
    """N karts of one race with their observer, spaces, generators and pictures.

    ``make_race(stack)``: the race to run on the loaded track stack (default: a time trial of
    ``n`` independent karts, :class:`~kartsim.sim.race.Race`).
    """

    def __init__(self, config: EnvConfig, n: int, make_race: Callable[[TrackStack], Race] | None = None) -> None:
        self.config = config
        # a pool larger than resident_tracks streams through that many slots (at least one per kart)
        stack = load_track_stack(config.track, config.random_pool_size, max(config.resident_tracks, n))
        self.race = Race(stack, n, config.race, config.reward, config.kart) if make_race is None else make_race(stack)
        self.observer = make_observer(config, self.race)
        self.observation_space = self.observer.space
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.rngs = [seeding.np_random(None)[0] for _ in range(n)]
        self.fps = round(1.0 / self.race.step_dt)
        self.maps = TrackMaps(stack.tracks)
        self._no_telemetry = np.zeros(n, dtype=bool)
        self._window: Window | None = None

    # ------------------------------------------------------------------ episodes
    def seed(self, seeds: Sequence[int | None]) -> None:
        """A new generator per kart from its seed (None: a fresh random one)."""
        self.rngs = [seeding.np_random(s)[0] for s in seeds]

    def reset(self, idx: np.ndarray | None = None, rngs: list[np.random.Generator] | None = None) -> None:
        """Karts ``idx`` (all when None) to the start of a new episode, each drawing from its own
        generator (``rngs``, one per index, instead of the core's)."""
        idx = np.arange(self.race.n) if idx is None else np.asarray(idx)
        rngs = [self.rngs[i] for i in idx] if rngs is None else rngs
        self.race.reset_karts(idx, rngs)
        self.observer.reset(idx, rngs)

    def step(self, actions: np.ndarray, observe: np.ndarray | None = None) -> None:
        """One env step of every kart (``actions`` (N, 2), or (2,) with one kart: checked by the race),
        then the observations of karts ``observe`` (all when None)."""
        self.race.step(actions)
        self.observer.observe(observe)

    def autoreset(self, telemetry: np.ndarray | None = None) -> Outcome:
        """After :meth:`step`: the step's outcome, then the karts whose episode ended back at a start.

        ``telemetry``: a mask of the karts whose info carries the telemetry dict; given, every kart's
        info is built (the SB3 API), else only when a kart ended (its final info, without telemetry)."""
        race = self.race
        rewards = race.reward.astype(np.float32)
        terminated, truncated = race.terminated.copy(), race.truncated.copy()
        ended = np.flatnonzero(terminated | truncated)
        infos = None
        if telemetry is not None or len(ended):
            infos = step_infos(race, self._no_telemetry if telemetry is None else telemetry)
        final = [self.observer.single(int(i)) for i in ended]
        if len(ended):
            self.reset(ended)
        return Outcome(rewards, terminated, truncated, ended, final, infos)

    # ------------------------------------------------------------------ pictures
    def camera_image(self, i: int) -> np.ndarray | None:
        """A copy of kart ``i``'s newest camera frame (vision envs), (S, S, C) uint8."""
        frame = self.observer.camera_frame(i)
        return None if frame is None else frame.copy()

    def frame(self, i: int, lines: Sequence[str] = (), *, everyone: bool = False,
              trail: Sequence[tuple[float, float]] | None = None, camera: bool = True) -> np.ndarray:
        """Kart ``i``'s track map with kart ``i`` (every kart: ``everyone``) and its ``trail``, its
        camera frame inset (vision envs, unless not ``camera``) and the text ``lines`` below."""
        st = self.race.state
        karts = np.column_stack([st.x, st.y, st.yaw]) if everyone else np.array([[st.x[i], st.y[i], st.yaw[i]]])
        picture = self.maps[int(st.track_idx[i])].draw(karts, None if trail is None else [np.asarray(trail)])
        return compose_frame(picture, self.observer.camera_frame(i) if camera else None, list(lines))

    def render(self, render_mode: str | None, draw: Callable[[], np.ndarray], title: str = "kartsim") -> np.ndarray | None:
        """An env's ``render()``: ``rgb_array``: the frame ``draw()`` makes; ``human``: shown in a window
        (at the env's rate), None; no render mode: a warning, None."""
        if render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' or 'human'")
            return None
        frame = draw()
        if render_mode == "rgb_array":
            return frame
        if self._window is None:
            self._window = Window(title)
        self._window.show(frame, self.fps)
        return None

    def close(self) -> None:
        if self._window is not None:
            self._window.close()
            self._window = None
