"""Training callbacks: the racing metrics and reward terms they log."""

import numpy as np
import pytest

from kartsim.envs import EnvConfig
from kartsim.sim.config import RaceConfig
from kartsim.sim.race import REWARD_TERMS


def test_racing_metrics_log_each_reward_term_and_they_add_up_to_the_episode_reward():
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import KVWriter, Logger
    from stable_baselines3.common.vec_env import VecMonitor

    from kartsim.envs.sb3 import KartVecEnv
    from kartsim.rl.callbacks import RacingMetricsCallback

    class Rows(KVWriter):
        def __init__(self):
            self.rows = []

        def write(self, key_values, key_excluded, step=0):
            self.rows.append(dict(key_values))

    venv = VecMonitor(KartVecEnv(EnvConfig(track="oval.png", race=RaceConfig(max_episode_steps=20)), 2, seed=0,
                                 telemetry_envs=[]))
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, device="cpu", seed=0)
    rows = Rows()
    model.set_logger(Logger(None, [rows]))
    callback = RacingMetricsCallback()
    model.learn(64, callback=callback)

    row = rows.rows[-1]
    terms = {k: v for k, v in row.items() if k.startswith("reward/")}
    assert set(terms) == {f"reward/{name}" for name in REWARD_TERMS}
    assert all(np.isfinite(v) for v in terms.values())
    assert terms["reward/progress"] > 0.0 and terms["reward/lap"] == 0.0
    # the same episodes as SB3's rollout/ep_rew_mean (VecMonitor; float32 rewards)
    assert len(callback.episodes) == len(model.ep_info_buffer) > 0
    assert sum(terms.values()) == pytest.approx(row["rollout/ep_rew_mean"], abs=1e-3)
