"""Issue 18 item 10: play and eval say why each episode ended (stuck, off track, wrong way, damage,
time limit), play per episode and eval in an `ended` column."""

from __future__ import annotations

import numpy as np

from kartsim.envs import KartEnv
from kartsim.sim.config import RaceConfig
from kartsim.rl.evaluate import format_table, score
from kartsim.rl.play import END_REASONS, end_text, run_episodes


class Still:
    """A driver that never touches the throttle (stuck), or floors it (reaches the time limit)."""

    def __init__(self, throttle: float) -> None:
        self.throttle = throttle

    def predict(self, obs, deterministic=True):
        return np.array([0.0, self.throttle], np.float32), None


class Driver:
    def __init__(self, throttle: float) -> None:
        self.model = Still(throttle)


def test_episode_end_reasons_reach_play_and_the_eval_table():
    env = KartEnv(track="oval.png", race=RaceConfig(random_start=False, max_episode_steps=80, stuck_time_s=2.0))
    stuck = run_episodes(Driver(0.0), env, episodes=1)
    moving = run_episodes(Driver(0.6), env, episodes=1)
    stopped = run_episodes(Driver(0.6), env, episodes=1, max_steps=5)
    assert [stuck[0].end, moving[0].end, stopped[0].end] == ["stuck", "time_limit", "stopped"]
    assert {"stuck", "time_limit", "wrong_way", "off_track", "damage"} <= set(END_REASONS)
    table = format_table([score("m.zip", "rays", "oval.png", stuck + moving + moving)])
    header, _, row = table.splitlines()
    assert header.split()[-1] == "ended"
    assert row.endswith("time limit 2, stuck (no progress) 1")
    assert end_text("wrong_way") == "wrong way"


def test_standings_are_rounded():
    """Issue 18 item 11: info["standings"] showed floats like 102.59999999999845."""
    import gymnasium as gym

    import kartsim.envs  # noqa: F401

    env = gym.make("kartsim/KartRace-v0", track="oval.png", opponents=2, laps=1)
    env.reset(seed=0)
    for _ in range(30):
        env.step(np.array([0.0, 1.0], np.float32))
    board = env.unwrapped.race.standings()
    assert len(board) == 3
    for row in board:
        assert row["distance_m"] == round(row["distance_m"], 2) and row["gap_s"] == round(row["gap_s"], 3)
        assert len(repr(row["distance_m"]).split(".")[-1]) <= 2
    env.close()
