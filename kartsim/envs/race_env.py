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
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from kartsim.config import coerce_nested
from kartsim.drivers.opponents import Opponents
from kartsim.envs.config import EnvConfig, nested_option_names, unknown_option
from kartsim.envs.core import EnvCore, check_render_mode
from kartsim.errors import ConfigError, ModelFileError
from kartsim.sim.config import RaceRules
from kartsim.sim.multikart import GridRace
from kartsim.sim.race import TERMINATION_REASONS, check_actions
from kartsim.validation import check_config

__all__ = ["RaceOptions", "KartRaceEnv", "RACE_TERMS", "RaceTerms", "RaceCore"]

RACE_TERMS = ("position", "finish")
"""The race envs' reward terms on top of :data:`kartsim.sim.race.REWARD_TERMS`, weighted by the
:class:`RaceOptions` fields ``position_reward`` and ``finish_reward``."""


@dataclass
class RaceOptions:
    """What makes a time-trial env a race: who the opponents are, where the agent starts, the race
    reward, and the race's `RaceRules` (laps, collisions, weather, max_damage, the grid). The race envs
    take every field of both as a keyword (``KartRaceEnv(opponents=2, laps=1)``)."""

    opponents: int = 3
    """Number of opponent karts (0-11)."""
    opponent: str = "ai"
    """``"ai"`` (the AI driver) or the path of a trained model .zip (frozen self-play)."""
    ai_level: str = "medium"
    """AI opponents' level: easy, medium, hard, or ``"mixed"`` (a spread of the three)."""
    grid_position: str | int = "random"
    """The agent's grid slot: ``"random"`` per race, ``"last"``, ``"pole"`` or 1..N."""
    position_reward: float = 1.0
    """Reward per place gained (and minus per place lost)."""
    finish_reward: float = 10.0
    """Reward at the finish × (karts beaten + 1) / karts."""
    rules: RaceRules = field(default_factory=RaceRules)
    """Laps, collisions, weather, max_damage and the grid of the race."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "opponents": (0, 11), "position_reward": (-1e6, 1e6), "finish_reward": (-1e6, 1e6)}

    def __post_init__(self) -> None:
        coerce_nested(self)  # rules given as a dict
        check_config(self)
        if self.ai_level not in ("easy", "medium", "hard", "mixed"):
            raise ConfigError(f"ai_level must be easy, medium, hard or mixed, got {self.ai_level!r}")
        if isinstance(self.grid_position, str):
            if self.grid_position not in ("random", "last", "pole"):
                raise ConfigError(f"grid_position must be random, last, pole or a number, got {self.grid_position!r}")
        elif not 1 <= self.grid_position <= self.opponents + 1:
            raise ConfigError(f"grid_position must be between 1 and {self.opponents + 1}, got {self.grid_position}")


def race_setup(config: EnvConfig | None, race_options: RaceOptions | None, fields: dict[str, Any],
               **forced: Any) -> tuple[EnvConfig, RaceOptions]:
    """The env config and race options of a race env from its arguments: keyword ``fields`` are
    EnvConfig, RaceOptions or RaceRules fields (unknown names: ConfigError), ``forced`` set last."""
    names = {kind: {f.name for f in dataclasses.fields(kind)} for kind in (EnvConfig, RaceOptions, RaceRules)}
    names[RaceOptions].discard("rules")
    given: dict[type, dict[str, Any]] = {kind: {} for kind in names}
    nested = set(nested_option_names((config or EnvConfig()).to_dict()))
    for k, v in fields.items():
        kind = next((kind for kind, known in names.items() if k in known), None)
        if kind is None and (k in nested or any(n.endswith(f".{k}") for n in nested)):
            kind = EnvConfig  # a nested env field (stuck_time_s, race.stuck_time_s): EnvConfig.replace resolves it
        if kind is None:
            raise unknown_option(k, sorted(set().union(*names.values())) + sorted(nested), "the fields of "
                                 "kartsim.envs.EnvConfig (and its sections), RaceOptions and RaceRules", "race env option")
        given[kind][k] = v
    cfg = config if config is not None else EnvConfig()
    if given[EnvConfig]:
        cfg = cfg.replace(**given[EnvConfig])
    opts = race_options or RaceOptions()
    rules = dataclasses.replace(opts.rules, **given[RaceRules])
    return cfg, dataclasses.replace(opts, rules=rules, **{**given[RaceOptions], **forced})


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


class RaceCore(EnvCore):
    """The env core of the race envs: a :class:`GridRace` of ``n_karts`` on one track (grid start, no
    random starts), its opponents (:meth:`drive_opponents`), the race terms and the race start."""

    def __init__(self, config: EnvConfig, options: RaceOptions, n_karts: int) -> None:
        race_cfg = dataclasses.replace(config.race, random_start=False)
        super().__init__(config, n_karts, lambda stack: GridRace(stack, n_karts, race_cfg, config.reward,
                                                                 config.kart, options.rules))
        self.race_terms = RaceTerms(n_karts, options)
        self.opp: Opponents | None = None
        self._options = options
        self._opp_rng = np.random.default_rng(0)

    def drive_opponents(self, first: int, model: Any = None) -> None:
        """Karts ``first``.. are opponents: driven by the frozen ``model`` if given, else by the AI at the
        options' level."""
        idx = np.arange(first, self.race.n)
        if model is not None:
            self.opp = Opponents(self.race, idx, "model", model=model)
        else:
            level = self._options.ai_level
            self.opp = Opponents(self.race, idx, "ai", mixed_levels(len(idx)) if level == "mixed" else level,
                                 rng=self._opp_rng)

    def start(self, rng: np.random.Generator, order: np.ndarray) -> None:
        """A new race from the grid in ``order``; every draw (weather, opponents, noise) from ``rng``."""
        n = self.race.n
        self.race.start(rng, order=order)
        self._opp_rng.bit_generator.state = np.random.default_rng(int(rng.integers(2 ** 31))).bit_generator.state
        if self.opp is not None:
            self.opp.reset()
        self.observer.reset(np.arange(n), [rng] * n)
        self.race_terms.reset(self.race)

    def step_race(self, actions: np.ndarray, live: np.ndarray, observe: np.ndarray | None = None) -> np.ndarray:
        """One step: the opponents' actions into ``actions`` (N, 2), the race, the observations of karts
        ``observe`` (all when None) and the race terms of the karts in mask ``live``; returns every
        kart's reward."""
        if self.opp is not None:
            obs_all = self.observer.observe() if self.opp.kind == "model" else None
            actions[self.opp.idx] = self.opp.act(obs_all)
        self.step(actions, observe)
        return self.race_terms.step(self.race, live)


class KartRaceEnv(gym.Env):
    """Race against ``opponents`` karts (see the module docstring)."""

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 10}

    def __init__(self, config: EnvConfig | None = None, race_options: RaceOptions | None = None,
                 render_mode: str | None = None, **fields: Any) -> None:
        self.config, self.options = race_setup(config, race_options, fields)
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        n = 1 + self.options.opponents
        self.core = RaceCore(self.config, self.options, n)
        self.race, self.observer = self.core.race, self.core.observer
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self.metadata = dict(self.metadata, render_fps=self.core.fps)
        if self.options.opponents:
            model = None if self.options.opponent == "ai" else self._opponent_model(self.options.opponent)
            self.core.drive_opponents(1, model)
        self.opp = self.core.opp
        # the model opponents observe every kart; otherwise only the agent's observation is needed
        self._observe = None if self.opp is not None and self.opp.kind == "model" else np.array([0])
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
        self.core.start(self.np_random, self._grid_order(self.np_random, self.race.n))
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
        reward = float(self.core.step_race(actions, self._agent, self._observe)[0])
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
        info = kart_info(r, 0, terms=self.core.race_terms) if not reset else {
            "lap": 0, "lap_times": [], "best_lap": None, "progress": float(r.s[0])}
        info.update({"position": int(r.position[0]), "gap": float(r.gap[0]),
                     "gap_to_leader": float(r.gap_to_leader[0]), "n_karts": int(r.n),
                     "weather": r.weather, "track": r.stack.tracks[int(r.state.track_idx[0])].name})
        return info

    def camera_image(self) -> np.ndarray | None:
        return self.core.camera_image(0)

    def render(self) -> np.ndarray | None:
        return self.core.render(self.render_mode, lambda: self.core.frame(0, self._hud(), everyone=True), "kartsim race")

    def _hud(self) -> list[str]:
        st, r = self.race.state, self.race
        laps = r.rules.laps
        return [f"{st.speed[0] * 3.6:5.1f} km/h  lap {min(r.laps[0] + 1, laps)}/{laps}",
                f"P{r.position[0]}/{r.n}" + (f"  +{r.gap[0]:.1f} s" if r.position[0] > 1 else "")]

    def close(self) -> None:
        self.core.close()
