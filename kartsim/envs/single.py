"""The single-kart Gymnasium env: a race of one kart."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from kartsim.envs.config import EnvConfig
from kartsim.envs.info import reset_info, step_infos
from kartsim.envs.observations import Observer
from kartsim.envs.render import TrackMaps, Window, compose_frame
from kartsim.envs.tracks import load_track_stack
from kartsim.sim.race import Race, check_actions

TRAIL_LENGTH = 600
_TELEMETRY = np.ones(1, dtype=bool)


class KartEnv(gym.Env):
    """Drive a kart around a track drawn as a PNG.

    ## Action
    ``Box(-1, 1, (2,), float32)`` = ``[steering, throttle]``. Steering +1 turns right (the wheels follow
    at a limited rate); throttle > 0 accelerates, < 0 brakes and, once stopped, reverses slowly.
    Each action is held for ``race.action_repeat`` physics steps of 0.02 s (0.1 s by default).

    ## Observation
    * ``kartsim/Kart-v0`` (rays): ``Box(10,)`` = 8 wall distances along rays fanned ahead
      (``ray_angles_deg``, divided by ``ray_range_m``, in [0, 1]), forward speed ÷ 25 m/s, and the
      heading angle relative to the track direction ÷ π.
    * ``kartsim/KartVision-v0``: ``Dict(vision=Box(0, 255, (S, S, C·k), uint8), telemetry=Box(-10, 10, (9,), float32))``.
      ``vision`` is the kart's camera (``chase``: top-down view ahead rotated with the kart, kart at the
      bottom centre; ``driver``: first-person perspective of the ground), C = 3 (RGB) or 1 (grayscale),
      k = ``frame_stack`` frames, oldest first. ``telemetry`` = speed ÷ 10, longitudinal g, lateral g,
      yaw rate (rad/s), steering (wheel angle ÷ max), throttle, heading error (rad), lateral offset
      ÷ half the road width, mean curvature of the next 25 m × 10 — see ``TELEMETRY_FIELDS``.
    Gaussian noise of std ``sensor_noise`` is added to the normalised values.

    ## Reward
    A sum of named terms, each weighted by the ``RewardConfig`` field of the same name and logged in
    ``info["reward_terms"]``: ``progress`` (metres of *new* forward progress along the centerline — a
    high-water mark, so spinning, zig-zagging, reversing and re-crossing the line pay nothing),
    ``lap`` (per lap completed through every gate in order), ``off_track`` (seconds on grass),
    ``wall`` (impact speed into walls, m/s), ``termination`` (1 when the episode ends early).

    ## Episode end
    ``terminated``: going the wrong way (``race.wrong_way_m`` behind the best progress), stuck (no new
    progress for ``race.stuck_time_s``), or off the track for good (``race.off_track_time_s`` on grass).
    ``truncated``: ``race.max_episode_steps`` reached. ``info["termination"]`` names the reason.

    ## Starting state
    ``race.random_start=True`` (training): a random point of the lap with small sideways and heading
    jitter; ``False`` (evaluation): just behind the start/finish line. All randomness (start, track of
    the pool, sensor noise) comes from ``self.np_random``: the same seed gives the same trajectory.

    ## Arguments
    ``KartEnv(config: EnvConfig | None = None, render_mode=None, **fields)``: any ``EnvConfig`` field as
    a keyword (``track``, ``vision``, ``camera``, ``image_size``, ``grayscale``, ``frame_stack``, …).
    ``render_mode``: ``"rgb_array"`` (map of the whole track with the kart and its trail) or ``"human"``.

    ## Info
    ``lap``, ``lap_times``, ``best_lap``, ``new_lap_time``, ``progress`` (m), ``telemetry`` (dict),
    ``reward_terms`` (this step's raw terms by name); at the end of an episode ``termination`` and
    ``episode_stats``: ``laps``, ``best_lap``, ``mean_speed`` (m/s), ``off_track_share``,
    ``progress_m``, ``steps``, ``termination``, ``reward_terms`` (per term, its contribution to the
    episode's reward: weight × the sum of the term over the episode; they add up to the episode
    return) and ``reward_terms_raw`` (the unweighted sums: metres, laps, seconds on grass, m/s of
    impacts, early ends). Training logs the mean contributions as ``reward/<term>``.

    ## Version history
    * v0: initial release.
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 10}

    def __init__(self, config: EnvConfig | None = None, render_mode: str | None = None, **fields: Any) -> None:
        cfg = config if config is not None else EnvConfig()
        self.config = cfg.replace(**fields) if fields else cfg
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        c = self.config
        stack = load_track_stack(c.track, c.random_pool_size, c.resident_tracks)
        self.race = Race(stack, 1, c.race, c.reward, c.kart)
        self.observer = Observer(c, self.race)
        self.observation_space = self.observer.observation_space
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.metadata = dict(self.metadata, render_fps=round(1.0 / self.race.step_dt))
        self._trail: list[tuple[float, float]] = []
        self._maps = TrackMaps(self.race.stack.tracks)
        self._window: Window | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.race.reset_karts(np.array([0]), [self.np_random])
        self.observer.reset(np.array([0]), [self.np_random])
        self._trail = [(float(self.race.state.x[0]), float(self.race.state.y[0]))]
        if self.render_mode == "human":
            self.render()
        return self.observer.single(0), reset_info(self.race, 0)

    def step(self, action):
        self.race.step(check_actions(action, 1))  # a string / ragged action: the env's own message
        self.observer.observe()
        self._trail.append((float(self.race.state.x[0]), float(self.race.state.y[0])))
        del self._trail[:-TRAIL_LENGTH]
        if self.render_mode == "human":
            self.render()
        r = self.race
        return (self.observer.single(0), float(r.reward[0]), bool(r.terminated[0]), bool(r.truncated[0]),
                step_infos(r, _TELEMETRY)[0])

    def camera_image(self) -> np.ndarray | None:
        """The newest camera frame (vision envs), (S, S, C) uint8."""
        return self.observer.frame[0].copy() if self.config.vision else None

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' or 'human'")
            return None
        st, r = self.race.state, self.race
        t = int(st.track_idx[0])
        frame = self._maps[t].draw(np.array([[st.x[0], st.y[0], st.yaw[0]]]), [np.asarray(self._trail)])
        best = r.best_lap[0]
        lines = [f"{st.speed[0] * 3.6:5.1f} km/h  lap {r.laps[0] + 1}  {r.lap_time[0]:6.2f} s",
                 f"best {best:6.2f} s" if np.isfinite(best) else "best  --"]
        frame = compose_frame(frame, self.camera_image(), lines)
        if self.render_mode == "rgb_array":
            return frame
        if self._window is None:
            self._window = Window()
        self._window.show(frame, self.metadata["render_fps"])
        return None

    def close(self) -> None:
        if self._window is not None:
            self._window.close()
            self._window = None
