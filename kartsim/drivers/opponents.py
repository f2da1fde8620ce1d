"""Opponents: the karts of a :class:`~kartsim.sim.multikart.GridRace` that nobody controls, driven by
the AI driver or by a frozen trained model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kartsim.drivers.ai_driver import AIDriver
from kartsim.errors import ConfigError
from kartsim.sim.multikart import GridRace


@dataclass
class Opponents:
    """Drives karts ``idx`` of a race: ``kind`` "ai" (the AI driver at ``level``) or "model" (a frozen
    trained policy, anything with SB3's ``predict(obs, deterministic)``, loaded by the caller:
    see :class:`kartsim.envs.race_env.KartRaceEnv`)."""

    race: GridRace
    idx: np.ndarray
    kind: str = "ai"
    level: str | list = "medium"
    model: Any = None
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    observer: Any = None

    def __post_init__(self) -> None:
        self.idx = np.asarray(self.idx, np.int64)
        n = self.race.n
        if self.kind == "ai":
            levels = self.level if isinstance(self.level, (list, tuple)) else [self.level] * len(self.idx)
            if len(levels) != len(self.idx):
                raise ConfigError(f"{len(levels)} AI levels for {len(self.idx)} opponents")
            per_kart = ["hard"] * n
            for k, lv in zip(self.idx, levels):
                per_kart[k] = lv
            self.ai = AIDriver(self.race.stack, self.race.kart_cfg, per_kart, n_karts=n,
                               decision_dt=self.race.step_dt, rng=self.rng)
            self.model = None
        elif self.kind == "model":
            if self.model is None:
                raise ConfigError("a model opponent needs a loaded model")
            self.ai = None
        else:
            raise ConfigError(f"opponents must be 'ai' or 'model', got {self.kind!r}")

    rescue_after_s: float = 4.0
    """An AI kart without progress or on the grass for this long (or whose own episode would have
    ended: wrong way, stuck, off the track) is put back on the track (None: never)."""

    def reset(self) -> None:
        if self.ai is not None:
            self.ai.reset()

    def _rescue_stuck(self) -> None:
        r = self.race
        if self.rescue_after_s is None:
            return
        lost = (r.since_progress[self.idx] >= self.rescue_after_s) | (r.grass_time[self.idx] >= self.rescue_after_s) \
            | r.terminated[self.idx]
        stuck = self.idx[lost & ~r.finished[self.idx] & ~r.retired[self.idx]]
        for i in stuck:
            if r.rescue(int(i)) and self.ai is not None:
                self.ai.reset([int(i)])

    def act(self, obs=None) -> np.ndarray:
        """(len(idx), 2) actions; ``obs``: the observations of all karts (model opponents)."""
        r = self.race
        if self.ai is not None:
            self._rescue_stuck()
            a = self.ai.act(r.state, active=self.idx, world=r.state.world)[self.idx]
        else:
            if obs is None:
                raise ConfigError("model opponents need the karts' observations")
            if isinstance(obs, dict):
                o = {k: v[self.idx] for k, v in obs.items()}
            else:
                o = obs[self.idx]
            a, _ = self.model.predict(o, deterministic=True)
            a = np.asarray(a, np.float64).reshape(len(self.idx), 2)
        a[r.retired[self.idx]] = (0.0, -1.0)  # retired: stop (finished karts drive on)
        return a
