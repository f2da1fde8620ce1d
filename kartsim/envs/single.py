"""The single-kart Gymnasium env: the env core with one kart (:class:`kartsim.envs.core.EnvCore`)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from kartsim.envs.config import EnvConfig
from kartsim.envs.core import EnvCore, check_render_mode
from kartsim.envs.info import reset_info, step_infos

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
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        self.core = EnvCore(self.config, 1)
        self.race, self.observer = self.core.race, self.core.observer
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self.metadata = dict(self.metadata, render_fps=self.core.fps)
        self._trail: list[tuple[float, float]] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.core.reset(rngs=[self.np_random])
        self._trail = [(float(self.race.state.x[0]), float(self.race.state.y[0]))]
        if self.render_mode == "human":
            self.render()
        return self.observer.single(0), reset_info(self.race, 0)

    def step(self, action):
        self.core.step(action)  # a string / ragged action: the race's own message
        self._trail.append((float(self.race.state.x[0]), float(self.race.state.y[0])))
        del self._trail[:-TRAIL_LENGTH]
        if self.render_mode == "human":
            self.render()
        r = self.race
        return (self.observer.single(0), float(r.reward[0]), bool(r.terminated[0]), bool(r.truncated[0]),
                step_infos(r, _TELEMETRY)[0])

    def camera_image(self) -> np.ndarray | None:
        """The newest camera frame (vision envs), (S, S, C) uint8."""
        return self.core.camera_image(0)

    def render(self) -> np.ndarray | None:
        return self.core.render(self.render_mode, lambda: self.core.frame(0, self._hud(), trail=self._trail))

    def _hud(self) -> list[str]:
        st, r = self.race.state, self.race
        best = r.best_lap[0]
        return [f"{st.speed[0] * 3.6:5.1f} km/h  lap {r.laps[0] + 1}  {r.lap_time[0]:6.2f} s",
                f"best {best:6.2f} s" if np.isfinite(best) else "best  --"]

    def close(self) -> None:
        self.core.close()
