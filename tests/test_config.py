"""Issue 18 item 5: nested configs given as dicts, one recursive from_dict, unknown keys named."""

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import pytest

import kartsim.envs  # noqa: F401  (registers the ids)
from kartsim.config import from_dict
from kartsim.envs import EnvConfig
from kartsim.errors import ConfigError
from kartsim.sim.config import KartConfig, RaceConfig


@dataclass
class Inner:
    a: int = 1


@dataclass
class Middle:
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None


@dataclass
class Outer:
    middle: Middle = field(default_factory=Middle)
    name: str = "x"


def test_from_dict_builds_nested_dataclasses_at_any_depth():
    cfg = from_dict(Outer, {"middle": {"inner": {"a": 5}, "maybe": {"a": 7}}, "name": "y"})
    assert cfg == Outer(Middle(Inner(5), Inner(7)), "y")
    assert from_dict(Outer, {"middle": Middle()}).middle == Middle()  # instances pass through
    assert from_dict(Outer, {"middle": {"maybe": None}}).middle.maybe is None


def test_from_dict_names_the_unknown_key_with_its_path():
    with pytest.raises(ConfigError, match=r"'middle\.inner\.b'"):
        from_dict(Outer, {"middle": {"inner": {"b": 1}}})
    with pytest.raises(ConfigError, match=r"middle\.inner must be a Inner or a dict"):
        from_dict(Outer, {"middle": {"inner": 3}})


@pytest.mark.parametrize("env_id", ["kartsim/Kart-v0", "kartsim/KartVision-v0"])
def test_gym_make_takes_dict_race_and_kart_configs(env_id):
    env = gym.make(env_id, race={"weather": "wet", "max_episode_steps": 30}, kart={"tyre_start_condition": 0.5},
                   reward={"lap": 5.0})
    env.reset(seed=0)
    race = env.unwrapped.race
    assert env.unwrapped.config.race == RaceConfig(weather="wet", max_episode_steps=30)
    assert race.state.wetness[0] == 1.0
    assert race.state.tyre_condition[0] == pytest.approx(0.5)
    assert env.unwrapped.config.reward.lap == 5.0
    env.close()



def test_time_trial_envs_take_bare_and_dotted_nested_names_as_env_option_does():
    env = gym.make("kartsim/Kart-v0", weather="wet", **{"reward.lap": 5.0})  # race.weather, as KartRace-v0 takes it
    assert env.unwrapped.config.race.weather == "wet" and env.unwrapped.config.reward.lap == 5.0
    env.close()
    with pytest.raises(ConfigError, match=r"unknown env option 'wether'; did you mean race\.weather\?"):
        gym.make("kartsim/Kart-v0", wether="wet")
    race = gym.make("kartsim/KartRace-v0", track="oval.png", opponents=1, stuck_time_s=7.0)  # a bare nested field there too
    assert race.unwrapped.config.race.stuck_time_s == 7.0
    race.close()
    with pytest.raises(ConfigError, match=r"unknown race env option 'opponets'; did you mean opponents or opponent\?"):
        gym.make("kartsim/KartRace-v0", opponets=1)

def test_env_config_dicts_round_trip_and_reject_typos():
    cfg = EnvConfig(race={"weather": "damp"}, kart={"mass_kg": 150.0})
    assert isinstance(cfg.race, RaceConfig) and isinstance(cfg.kart, KartConfig)
    assert EnvConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"'race\.wether'"):
        gym.make("kartsim/Kart-v0", race={"wether": "wet"})
    with pytest.raises(ConfigError, match=r"'kart\.tyre_start'"):
        gym.make("kartsim/Kart-v0", kart={"tyre_start": 0.5})
    with pytest.raises(ConfigError, match="kart must be a KartConfig"):
        EnvConfig(kart=3)


@pytest.mark.parametrize("race", [RaceConfig(weather="wet"), {"weather": "wet"}])
def test_race_env_takes_the_weather_of_its_race_config(race):
    env = gym.make("kartsim/KartRace-v0", track="oval.png", opponents=1, race=race)
    _, info = env.reset(seed=0)
    assert info["weather"] == "wet"
    assert np.all(env.unwrapped.race.state.wetness == 1.0)
    env.close()


def test_race_env_refuses_two_different_weathers():
    with pytest.raises(ConfigError, match="conflicts with race.weather"):
        gym.make("kartsim/KartRace-v0", track="oval.png", opponents=1, race=RaceConfig(weather="wet"), weather="dry")


def test_a_misspelt_dotted_env_option_lists_its_sections_keys():
    from kartsim.envs.config import apply_env_options

    with pytest.raises(ConfigError, match=r"unknown env option 'reward\.progres'; known: reward\.lap, .*reward\.progress"):
        apply_env_options(EnvConfig().to_dict(), {"reward.progres": 2})
    with pytest.raises(ConfigError, match=r"unknown env option 'rewards\.progress'; known: kart\., race\., reward\."):
        apply_env_options(EnvConfig().to_dict(), {"rewards.progress": 2})


def test_an_unknown_bare_env_option_names_its_closest_matches_on_one_short_line():
    from kartsim.envs.config import apply_env_options

    with pytest.raises(ConfigError, match=r"'max_episode_step'; did you mean race\.max_episode_steps\b") as err:
        apply_env_options(EnvConfig().to_dict(), {"max_episode_step": 3})
    assert "\n" not in str(err.value) and len(str(err.value)) < 250  # not all ~90 names
    with pytest.raises(ConfigError, match=r"'nosuch'; no option is named like it; all options: the fields of kartsim\.envs\.EnvConfig"):
        apply_env_options(EnvConfig().to_dict(), {"nosuch": 1})
