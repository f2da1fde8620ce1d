"""``kartsim/KartRace-v0``: one agent racing against opponents on one track, karts colliding.

The agent is kart 0 of a :class:`~kartsim.sim.multikart.GridRace`; the opponents are driven by the AI
driver (``opponent="ai"``, at ``ai_level``) or by a frozen trained model (``opponent="path/model.zip"``:
self-play against an earlier version of yourself). Observation and action spaces are those of
``kartsim/Kart-v0`` / ``kartsim/KartVision-v0`` (the same ``EnvConfig`` options), so models move
freely between the time-trial envs and races; the opponents are visible to the rays and in the
camera image when ``EnvConfig``'s observer supports it.

Reward: the time-trial reward terms of kart 0 plus two race terms (:data:`RACE_TERMS`): ``position``
(places gained this step, negative when lost) weighted by ``position_reward``, and ``finish``
((karts beaten + 1) / karts on the step it finishes) weighted by ``finish_reward``.
Episode end: finished the race (``laps``), retired (``max_damage``), or the time-trial ends
(wrong way, stuck, off the track for good, time limit).
Info: the time-trial keys plus ``position``, ``gap`` (s behind the kart ahead), ``gap_to_leader``,
``n_karts``, and ``standings`` at the end. ``reward_terms`` and the ``episode_stats`` sums
``reward_terms`` / ``reward_terms_raw`` include the two race terms, so the weighted terms add up to
the reward here too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from kartsim.envs.config import EnvConfig
from kartsim.envs.observations import make_observer
from kartsim.envs.render import TrackMaps, compose_frame
from kartsim.envs.tracks import load_track_stack
from kartsim.drivers.opponents import Opponents
from kartsim.errors import ConfigError, ModelFileError
from kartsim.sim.config import RaceConfig
from kartsim.sim.multikart import GridRace, RaceRules
from kartsim.sim.race import TERMINATION_REASONS, check_actions

__all__ = ["RaceOptions", "KartRaceEnv", "RACE_TERMS", "RaceTerms"]

RACE_TERMS = ("position", "finish")
"""The race envs' reward terms on top of :data:`kartsim.sim.race.REWARD_TERMS`, weighted by the
:class:`RaceOptions` fields ``position_reward`` and ``finish_reward``."""


@dataclass
class RaceOptions:
    """What makes a time-trial env a race."""

    opponents: int = 3
    """Number of opponent karts (0-11)."""
    opponent: str = "ai"
    """``"ai"`` (the AI driver) or the path of a trained model .zip (frozen self-play)."""
    ai_level: str = "medium"
    """AI opponents' level: easy, medium, hard, or ``"mixed"`` (a spread of the three)."""
    laps: int = 3
    """Race distance in laps."""
    collisions: bool = True
    weather: str | None = None
    """dry, damp, wet or random (one per race: domain randomisation). None: the env config's
    ``race.weather`` (dry by default), so ``race=RaceConfig(weather="wet")`` works here too."""
    grid_position: str | int = "random"
    """The agent's grid slot: ``"random"`` per race, ``"last"``, ``"pole"`` or 1..N."""
    max_damage: float | None = None
    """Retire (end the episode) when the agent's damage reaches this (None: the env config's
    ``race.max_damage``, never by default)."""
    position_reward: float = 1.0
    """Reward per place gained (and minus per place lost)."""
    finish_reward: float = 10.0
    """Reward at the finish × (karts beaten + 1) / karts."""

    def validate(self) -> None:
        if not 0 <= int(self.opponents) <= 11:
            raise ConfigError(f"opponents must be between 0 and 11, got {self.opponents}")
        if self.ai_level not in ("easy", "medium", "hard", "mixed"):
            raise ConfigError(f"ai_level must be easy, medium, hard or mixed, got {self.ai_level!r}")
        if isinstance(self.grid_position, str):
            if self.grid_position not in ("random", "last", "pole"):
                raise ConfigError(f"grid_position must be random, last, pole or a number, got {self.grid_position!r}")
        elif not 1 <= int(self.grid_position) <= int(self.opponents) + 1:
            raise ConfigError(f"grid_position must be between 1 and {int(self.opponents) + 1}, got {self.grid_position}")
        RaceRules(laps=self.laps, weather=self.weather or "dry", max_damage=self.max_damage).validate()

    def rules(self, race: RaceConfig) -> RaceRules:
        """The race's rules; weather and max_damage come from the env's `race` config unless given
        here (both given and different: ConfigError, rather than one of them silently ignored)."""
        merged = {}
        for name in ("weather", "max_damage"):
            mine, theirs, default = getattr(self, name), getattr(race, name), getattr(RaceConfig(), name)
            if mine is not None and theirs != default and mine != theirs:
                raise ConfigError(f"{name}={mine!r} conflicts with race.{name}={theirs!r}; give only one of them")
            merged[name] = theirs if mine is None else mine
        rules = RaceRules(laps=self.laps, collisions=self.collisions, **merged)
        rules.validate()
        return rules

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def split_options(fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword options -> (EnvConfig fields, RaceOptions fields); unknown names raise ConfigError."""
    race_names = {f.name for f in dataclasses.fields(RaceOptions)}
    env_names = {f.name for f in dataclasses.fields(EnvConfig)}
    env, race = {}, {}
    for k, v in fields.items():
        if k in race_names:
            race[k] = v
        elif k in env_names:
            env[k] = v
        else:
            raise ConfigError(f"unknown race env option {k!r}; env options: {', '.join(sorted(env_names))}; "
                              f"race options: {', '.join(sorted(race_names))}")
    return env, race


class RaceTerms:
    """The race terms (:data:`RACE_TERMS`) of every kart of a :class:`GridRace`, with per-episode sums.

    ``position``: places gained this step (negative when lost); ``finish``: (karts beaten + 1) / karts
    on the step a kart finishes. :meth:`step` computes them for the karts of a mask (the agents still
    racing) as whole arrays, like :class:`~kartsim.sim.race.Race` does for the time-trial terms.
    """

    def __init__(self, n: int, options: RaceOptions) -> None:
        self.weights = {"position": float(options.position_reward), "finish": float(options.finish_reward)}
        self.terms = np.zeros((n, len(RACE_TERMS)))  # this step's raw terms, columns in RACE_TERMS order
        self.episode_terms = np.zeros((n, len(RACE_TERMS)))  # their sums since the start
        self.prev_position = np.zeros(n, np.int64)

    def reset(self, race: GridRace) -> None:
        self.episode_terms[:] = 0.0
        self.prev_position[:] = race.position

    def step(self, race: GridRace, live: np.ndarray) -> np.ndarray:
        """This step's terms of the karts in mask ``live`` (zero for the others) added to the episode
        sums; returns every kart's reward: its time-trial reward plus the weighted race terms."""
        t = self.terms
        t[:, 0] = self.prev_position - race.position
        t[:, 1] = np.where(race.finished, (race.n - race.position + 1) / race.n, 0.0)
        t[~live] = 0.0
        self.episode_terms += t
        self.prev_position[:] = race.position
        return race.reward + self.weights["position"] * t[:, 0] + self.weights["finish"] * t[:, 1]

    def add_info(self, info: dict[str, Any], i: int) -> None:
        """Kart ``i``'s race terms into ``info["reward_terms"]`` (and into the sums of ``episode_stats``)."""
        position, finish = self.terms[i].tolist()
        info["reward_terms"].update(position=position, finish=finish)
        stats = info.get("episode_stats")
        if stats is not None:
            raw = dict(zip(RACE_TERMS, self.episode_terms[i].tolist()))
            stats["reward_terms"].update({name: self.weights[name] * v for name, v in raw.items()})
            stats["reward_terms_raw"].update(raw)


def kart_info(race: GridRace, i: int, telemetry: bool = True, terms: RaceTerms | None = None) -> dict[str, Any]:
    """The time-trial info keys of kart ``i`` plus its race position and gaps (and its race terms).

    At the end of its episode (time-trial end, finished or retired) also ``episode_stats`` and
    ``termination`` (the time-trial reason; the envs name ``finished`` and ``damage`` themselves).
    """
    new_lap = race.new_lap_time[i]
    info: dict[str, Any] = {
        "lap": int(race.laps[i]),
        "lap_times": list(race.stats.lap_times[i]),
        "best_lap": float(race.best_lap[i]) if np.isfinite(race.best_lap[i]) else None,
        "new_lap_time": None if np.isnan(new_lap) else float(new_lap),
        "progress": float(race.s[i]),
        "reward_terms": {name: float(v[i]) for name, v in race.terms.items()},
        "position": int(race.position[i]),
        "gap": float(race.gap[i]),
        "gap_to_leader": float(race.gap_to_leader[i]),
    }
    if telemetry:
        info["telemetry"] = race.telemetry(i)
    if race.terminated[i] or race.truncated[i] or race.finished[i] or race.retired[i]:
        info["episode_stats"] = race.episode_stats(i)
        info["termination"] = TERMINATION_REASONS[int(race.termination_reason[i])] or "time_limit"
    if terms is not None:
        terms.add_info(info, i)
    return info


def mixed_levels(n: int) -> list[str]:
    return [("hard", "medium", "easy")[k % 3] for k in range(n)]


class KartRaceEnv(gym.Env):
    """Race against ``opponents`` karts (see the module docstring)."""

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 10}

    def __init__(self, config: EnvConfig | None = None, race_options: RaceOptions | None = None,
                 render_mode: str | None = None, **fields: Any) -> None:
        env_fields, race_fields = split_options(fields)
        cfg = config if config is not None else EnvConfig()
        if env_fields:
            cfg = cfg.replace(**env_fields)
        opts = race_options or RaceOptions()
        if race_fields:
            opts = dataclasses.replace(opts, **race_fields)
        opts.validate()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.config = cfg
        self.options = opts
        stack = load_track_stack(cfg.track, cfg.random_pool_size)
        n = 1 + int(opts.opponents)
        rules = opts.rules(cfg.race)
        race_cfg = dataclasses.replace(cfg.race, random_start=False)
        self.race = GridRace(stack, n, race_cfg, cfg.reward, cfg.kart, rules)
        self.observer = make_observer(cfg, self.race)
        self.observation_space = self.observer.space
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.metadata = dict(self.metadata, render_fps=round(1.0 / self.race.step_dt))
        self.opp: Opponents | None = None
        self._opp_rng = np.random.default_rng(0)
        if opts.opponents:
            idx = np.arange(1, n)
            if opts.opponent == "ai":
                levels = mixed_levels(len(idx)) if opts.ai_level == "mixed" else opts.ai_level
                self.opp = Opponents(self.race, idx, "ai", levels, rng=self._opp_rng)
            else:
                self.opp = Opponents(self.race, idx, "model", model=self._opponent_model(opts.opponent))
        self._maps = TrackMaps(self.race.stack.tracks)
        self._window = None
        self.race_terms = RaceTerms(n, opts)
        self._agent = np.zeros(n, bool)
        self._agent[0] = True

    # ------------------------------------------------------------------------------ gym API
    def _opponent_model(self, path: str) -> Any:
        """The frozen model that drives the opponents, checked against this race's observations."""
        # The one import of the trainer from the envs (allowed in pyproject's import contracts): only
        # the trainer's model loader rebuilds a saved model without unpickling it.
        from kartsim.rl.modelio import describe_space, load_ppo, spaces_match

        model = load_ppo(path, device="cpu")
        if not spaces_match(model.observation_space, self.observation_space):
            raise ModelFileError(f"opponent model {path} expects observations {describe_space(model.observation_space)}"
                                 f" but this race gives {describe_space(self.observation_space)}; race it with the "
                                 "same vision/rays setting")
        return model

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        n = self.race.n
        order = self._grid_order(rng, n)
        self.race.start(rng, order=order)
        self._opp_rng.bit_generator.state = np.random.default_rng(int(rng.integers(2 ** 31))).bit_generator.state
        if self.opp is not None:
            self.opp.reset()
        self.observer.reset(np.arange(n), [rng] * n)
        self.race_terms.reset(self.race)
        return self.observer.single(0), self._info(reset=True)

    def _grid_order(self, rng, n):
        gp = self.options.grid_position
        if gp == "random":
            slot = int(rng.integers(n))
        elif gp == "last":
            slot = n - 1
        elif gp == "pole":
            slot = 0
        else:
            slot = int(gp) - 1
        others = list(rng.permutation(np.arange(1, n)))
        others.insert(slot, 0)
        return np.array(others)

    def step(self, action):
        race = self.race
        actions = np.zeros((race.n, 2))
        actions[0] = check_actions(action, 1)[0]
        if self.opp is not None:
            obs_all = None
            if self.opp.kind == "model":
                obs_all = self.observer.observe()
            actions[self.opp.idx] = self.opp.act(obs_all)
        race.step(actions)
        self.observer.observe(None if (self.opp is not None and self.opp.kind == "model") else np.array([0]))
        reward = float(self.race_terms.step(race, self._agent)[0])
        finished = bool(race.finished[0])
        retired = bool(race.retired[0])
        terminated = bool(race.terminated[0]) or finished or retired
        truncated = bool(race.truncated[0]) and not terminated
        info = self._info()
        if finished:
            info["termination"] = "finished"
        elif retired:
            info["termination"] = "damage"
        if terminated or truncated:  # kart_info has added episode_stats and termination
            info["standings"] = race.standings()
        if self.render_mode == "human":
            self.render()
        return self.observer.single(0), reward, terminated, truncated, info

    def _info(self, reset: bool = False) -> dict[str, Any]:
        r = self.race
        info = kart_info(r, 0, terms=self.race_terms) if not reset else {
            "lap": 0, "lap_times": [], "best_lap": None, "progress": float(r.s[0])}
        info.update({"position": int(r.position[0]), "gap": float(r.gap[0]),
                     "gap_to_leader": float(r.gap_to_leader[0]), "n_karts": int(r.n),
                     "weather": r.weather, "track": r.stack.tracks[int(r.state.track_idx[0])].name})
        return info

    def camera_image(self) -> np.ndarray | None:
        frame = self.observer.camera_frame(0)
        return None if frame is None else frame.copy()

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' or 'human'")
            return None
        st, r = self.race.state, self.race
        t = int(st.track_idx[0])
        frame = self._maps[t].draw(np.column_stack([st.x, st.y, st.yaw]))
        lines = [f"{st.speed[0] * 3.6:5.1f} km/h  lap {min(r.laps[0] + 1, self.options.laps)}/{self.options.laps}",
                 f"P{r.position[0]}/{r.n}" + (f"  +{r.gap[0]:.1f} s" if r.position[0] > 1 else "")]
        frame = compose_frame(frame, self.camera_image(), lines)
        if self.render_mode == "rgb_array":
            return frame
        from kartsim.envs.render import Window

        if self._window is None:
            self._window = Window("kartsim race")
        self._window.show(frame, self.metadata["render_fps"])
        return None

    def close(self) -> None:
        if self._window is not None:
            self._window.close()
            self._window = None
