"""A PettingZoo ``ParallelEnv``: N learning karts racing each other on one track (self-play).

Agents ``kart_0 .. kart_{N-1}`` share a :class:`~kartsim.sim.multikart.GridRace` (one collision world,
grid start, positions and gaps); optional AI karts (``ai_opponents``) race with them without being
agents. Every agent has the observation and action spaces of ``kartsim/Kart-v0`` /
``kartsim/KartVision-v0`` (so single-agent models can join), and the race env's reward: its
time-trial reward terms plus the race terms ``position`` (× ``position_reward`` per place gained or
lost) and ``finish`` (a finishing bonus × ``finish_reward``), all in ``info["reward_terms"]``; the
info of an agent's last step carries ``episode_stats`` (with the per-episode term sums) and
``termination``, as in ``kartsim/KartRace-v0``.

An agent is done when it finishes (``laps``), retires (``max_damage``) or its time-trial episode ends
(wrong way, stuck, off the track for good: terminated; time limit: truncated). A done agent leaves
``agents`` and its kart is parked out of the race (no contact, invisible to the others' sensors).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from kartsim.envs.config import EnvConfig
from kartsim.envs.core import check_render_mode
from kartsim.envs.race_env import RaceCore, RaceOptions, kart_info, race_setup
from kartsim.errors import ConfigError
from kartsim.sim.race import check_actions

__all__ = ["KartRaceParallelEnv", "parallel_env"]

PARKED_WORLD = 10 ** 6


class KartRaceParallelEnv(ParallelEnv):
    metadata = {"render_modes": ["rgb_array"], "name": "kartsim_race_v0", "is_parallelizable": True}

    def __init__(self, config: EnvConfig | None = None, n_agents: int = 4, ai_opponents: int = 0,
                 race_options: RaceOptions | None = None, render_mode: str | None = None, **fields: Any) -> None:
        if not 1 <= n_agents <= 12 or not 0 <= ai_opponents <= 11 or n_agents + ai_opponents > 12:
            raise ConfigError(f"n_agents (1-12) + ai_opponents (0-11) must be at most 12 karts, got "
                              f"{n_agents} + {ai_opponents}")
        self.config, self.options = race_setup(config, race_options or RaceOptions(opponents=0), fields,
                                               opponents=ai_opponents)
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        self.n_agents = n_agents
        n = n_agents + ai_opponents
        self.core = RaceCore(self.config, self.options, n)
        self.race, self.observer = self.core.race, self.core.observer
        self.possible_agents = [f"kart_{i}" for i in range(n_agents)]
        self.agent_index = {a: i for i, a in enumerate(self.possible_agents)}
        self.agents: list[str] = []
        if ai_opponents:
            self.core.drive_opponents(n_agents)
        self._np_random = np.random.default_rng()
        self._live = np.zeros(n, bool)

    # ------------------------------------------------------------------------------ spaces
    @functools.lru_cache(maxsize=None)
    def observation_space(self, agent: str) -> spaces.Space:
        return self.core.observation_space

    @functools.lru_cache(maxsize=None)
    def action_space(self, agent: str) -> spaces.Space:
        return self.core.action_space

    # ------------------------------------------------------------------------------ API
    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._np_random = np.random.default_rng(seed)
        rng = self._np_random
        n = self.race.n
        self.core.start(rng, rng.permutation(n))
        self.agents = list(self.possible_agents)
        obs = {a: self.observer.single(self.agent_index[a]) for a in self.agents}
        infos = {a: {"position": int(self.race.position[self.agent_index[a]]), "n_karts": n,
                     "weather": self.race.weather} for a in self.agents}
        return obs, infos

    def step(self, actions: dict[str, Any]):
        race = self.race
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ConfigError(f"actions missing for agent(s) {', '.join(missing)}; give one [steering, throttle] "
                              "per live agent")
        acts = np.zeros((race.n, 2))
        acts[:, 1] = -1.0  # parked karts brake
        for a in self.agents:
            acts[self.agent_index[a]] = check_actions(actions[a], 1)[0]
        live = self._live
        live[:] = False
        live[[self.agent_index[a] for a in self.agents]] = True
        reward = self.core.step_race(acts, live).tolist()
        obs, rewards, terms, truncs, infos = {}, {}, {}, {}, {}
        for a in self.agents:
            i = self.agent_index[a]
            finished = bool(race.finished[i])
            terms[a] = bool(race.terminated[i]) or finished or bool(race.retired[i])
            truncs[a] = bool(race.truncated[i]) and not terms[a]
            info = kart_info(race, i, telemetry=False, terms=self.core.race_terms)
            if finished:
                info["termination"] = "finished"
            elif race.retired[i]:
                info["termination"] = "damage"
            obs[a], rewards[a], infos[a] = self.observer.single(i), reward[i], info
        done = [a for a in self.agents if terms[a] or truncs[a]]
        for a in done:
            i = self.agent_index[a]
            race.state.world[i] = PARKED_WORLD + i  # out of the race: nobody touches it any more
            if not race.finished[i]:
                race.retired[i] = True  # classified behind the karts still racing
        self.agents = [a for a in self.agents if a not in done]
        return obs, rewards, terms, truncs, infos

    def render(self):
        if self.render_mode is None:
            return None
        return self.core.frame(0, everyone=True, camera=False)

    def close(self) -> None:
        self.core.close()

    def state(self) -> np.ndarray:
        """Global state: x, y, yaw, speed, position of every kart (N, 5)."""
        st = self.race.state
        return np.column_stack([st.x, st.y, st.yaw, st.speed, self.race.position]).astype(np.float32)


def parallel_env(**kwargs: Any) -> KartRaceParallelEnv:
    """PettingZoo-style constructor: ``kartsim.envs.multi_agent.parallel_env(n_agents=4, track=...)``."""
    return KartRaceParallelEnv(**kwargs)
