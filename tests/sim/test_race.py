"""The race rules: forward progress only, exact laps through every gate, episode ends."""

import numpy as np
import pytest

from kartsim.envs import EnvConfig, KartEnv
from kartsim.errors import KartsimError
from kartsim.sim.config import RaceConfig, RewardConfig
from kartsim.sim.race import RACE_COLUMNS, REWARD_TERMS, Race, reward_terms, term_weights
from kartsim.sim.track import Track, TrackStack


def line_start_env(**race):
    """Starts behind the line with every early end switched off, so farming attempts run their course."""
    cfg = EnvConfig(track="oval.png", sensor_noise=0.0,
                    race=RaceConfig(random_start=False, stuck_time_s=1e9, wrong_way_m=1e9, off_track_time_s=1e9,
                                    **race))
    env = KartEnv(cfg)
    env.reset(seed=0)
    return env


def drive(env, actions):
    total_progress, laps, rewards = 0.0, 0, []
    for a in actions:
        _, r, term, trunc, info = env.step(np.asarray(a, dtype=np.float32))
        total_progress += info["reward_terms"]["progress"]
        laps += int(info["reward_terms"]["lap"])
        rewards.append(r)
        assert not term, f"unexpected termination: {info.get('termination')}"
    return total_progress, laps, rewards


def weighted_reward(terms, cfg):
    """The reward as the docs define it: each term times the weight of its name, summed."""
    return sum(weight * terms[name] for name, weight in cfg.weights().items())


def test_reward_is_weighted_sum_of_named_terms():
    terms = reward_terms(np.array([2.0]), np.array([1]), np.array([True]), np.array([3.0]), np.array([False]), 0.1)
    cfg = RewardConfig()
    expected = cfg.progress * 2 + cfg.lap * 1 + cfg.off_track * 0.1 + cfg.wall * 3.0
    assert weighted_reward(terms, cfg)[0] == pytest.approx(expected)
    assert tuple(terms) == REWARD_TERMS and set(REWARD_TERMS) == set(cfg.weights())
    assert term_weights(cfg).tolist() == [cfg.weights()[name] for name in REWARD_TERMS]  # the race's order


def test_lap_pace_pays_a_faster_lap_more_and_is_off_by_default():
    def pace_reward(lap_speed, cfg):
        terms = reward_terms(np.zeros(1), np.ones(1, dtype=np.int64), np.zeros(1, dtype=bool), np.zeros(1),
                             np.zeros(1, dtype=bool), 0.1, np.array([lap_speed]))
        return weighted_reward(terms, cfg)[0]

    assert pace_reward(20.0, RewardConfig()) == pace_reward(10.0, RewardConfig())  # weight 0: no change
    cfg = RewardConfig(lap_pace=0.5)
    assert pace_reward(20.0, cfg) - pace_reward(10.0, cfg) == pytest.approx(5.0)


def test_spinning_on_the_spot_earns_no_progress_and_no_lap():
    env = line_start_env()
    progress, laps, _ = drive(env, [[1.0, 1.0]] * 400)  # full lock, full throttle: donuts
    assert laps == 0
    assert progress < 15.0, f"spinning earned {progress:.1f} m of progress"


def test_forward_reverse_zigzag_earns_only_the_first_advance():
    env = line_start_env()
    pattern = [[0.0, 1.0]] * 15 + [[0.0, -1.0]] * 45  # forward, brake, reverse, repeated
    progress, laps, _ = drive(env, pattern * 6)
    first, _, _ = drive(line_start_env(), [[0.0, 1.0]] * 15 + [[0.0, -1.0]] * 45)
    assert laps == 0
    assert progress == pytest.approx(first, abs=1.0), "repeating the zigzag paid again"


def test_steering_zigzag_pays_no_more_than_distance_along_track():
    env = line_start_env()
    steer = np.where(np.arange(300) // 5 % 2 == 0, 1.0, -1.0)
    actions = np.stack([steer, np.full(300, 0.3)], axis=1)
    progress, _, _ = drive(env, actions)
    assert progress <= env.race.best[0] - env.race.start_progress[0] + 1e-6


def test_reversing_over_the_start_line_counts_no_lap():
    env = line_start_env()
    # cross the line forwards, reverse back over it, cross again: three times
    pattern = [[0.0, 1.0]] * 20 + [[0.0, -1.0]] * 80
    progress, laps, rewards = drive(env, pattern * 3)
    assert laps == 0
    assert env.race.laps[0] == 0


def test_a_clean_lap_counts_once_with_its_time(follower):
    env = line_start_env(max_episode_steps=10_000)
    laps_seen, lap_times = 0, []
    length = env.race.stack.tracks[0].length
    for _ in range(4000):
        _, _, term, trunc, info = env.step(follower(env.race).astype(np.float32))
        assert not term, info.get("termination")
        pace = info["reward_terms"]["lap_pace"]
        if info["new_lap_time"] is not None:
            lap_times.append(info["new_lap_time"])
            assert pace == pytest.approx(length / info["new_lap_time"])  # the lap's mean speed
            laps_seen += 1
            if laps_seen == 2:
                break
        else:
            assert pace == 0.0
    assert laps_seen == 2
    for t in lap_times:
        assert length / 20.0 < t < length / 5.0, f"lap time {t:.1f}s implausible for {length:.0f} m"
    assert info["lap"] == 2 and info["lap_times"] == lap_times
    assert info["best_lap"] == min(lap_times)


def test_a_lap_that_skips_gates_does_not_count(follower):
    env = line_start_env(max_episode_steps=10_000)
    race = env.race
    track = race.stack.tracks[0]
    for _ in range(30):  # over the line: the lap timer runs
        env.step(follower(race).astype(np.float32))
    assert race.lap_started[0]
    # jump ahead to 60 % of the lap, skipping the gates in between (like a cut across the infield)
    x, y, yaw = (v[0] for v in track.pose_at(np.array([track.length * 0.6])))
    race.state.reset(np.array([0]), np.array([x]), np.array([y]), np.array([yaw]))
    race._update_frame()
    crossed_line = False
    for _ in range(3000):
        s_before = race.s[0]
        _, _, term, _, info = env.step(follower(race).astype(np.float32))
        assert not term
        if race.s[0] < 0.1 * track.length and s_before > 0.9 * track.length:
            crossed_line = True
            break
    assert crossed_line
    assert race.laps[0] == 0 and info["new_lap_time"] is None


def test_wrong_way_terminates():
    cfg = EnvConfig(track="oval.png", race=RaceConfig(random_start=False, wrong_way_m=10.0, stuck_time_s=1e9))
    env = KartEnv(cfg)
    env.reset(seed=0)
    for _ in range(600):
        _, _, term, trunc, info = env.step(np.array([0.0, -1.0], np.float32))
        if term:
            break
    assert term and info["termination"] == "wrong_way"


def test_standing_still_terminates_as_stuck():
    env = KartEnv(EnvConfig(track="oval.png", race=RaceConfig(stuck_time_s=3.0)))
    env.reset(seed=1)
    for step in range(100):
        _, _, term, trunc, info = env.step(np.array([0.0, 0.0], np.float32))
        if term:
            break
    assert term and info["termination"] == "stuck"
    assert info["reward_terms"]["termination"] == 1.0


def test_time_limit_truncates_not_terminates(follower):
    env = KartEnv(EnvConfig(track="oval.png", race=RaceConfig(max_episode_steps=25)))
    env.reset(seed=2)
    for step in range(25):
        _, _, term, trunc, info = env.step(follower(env.race).astype(np.float32))
    assert trunc and not term
    assert info["termination"] == "time_limit"
    assert info["episode_stats"]["steps"] == 25


@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((2, 2)), np.array([np.nan, 0.0])])
def test_bad_actions_get_a_clear_error(bad):
    env = KartEnv(EnvConfig(track="oval.png"))
    env.reset(seed=0)
    with pytest.raises(KartsimError, match="actions"):
        env.step(bad)


# ---------------------------------------------------------------- per-episode reward terms

def _episode(env, policy, max_steps=5000):
    """Drives one episode; returns the per-step term sums, the total reward and the last info."""
    sums, total = dict.fromkeys(REWARD_TERMS, 0.0), 0.0
    for _ in range(max_steps):
        _, r, term, trunc, info = env.step(np.asarray(policy(env.race), dtype=np.float32))
        total += r
        for name in REWARD_TERMS:
            sums[name] += info["reward_terms"][name]
        if term or trunc:
            return sums, total, info
    raise AssertionError("the episode did not end")


def test_episode_stats_sum_each_reward_term_and_its_weighted_share(follower):
    weights = RewardConfig(progress=0.3, lap=7.0, off_track=-2.0, wall=-0.5, termination=-4.0)
    env = KartEnv(EnvConfig(track="oval.png", sensor_noise=0.0, reward=weights,
                            race=RaceConfig(random_start=False, max_episode_steps=900, stuck_time_s=3.0)))
    env.reset(seed=0)
    seen = dict.fromkeys(REWARD_TERMS, 0.0)
    # a lap and the time limit; full throttle straight into the grass and a wall; standing still (stuck)
    for policy in (follower, lambda race: [0.0, 1.0], lambda race: [0.0, 0.0]):
        sums, total, info = _episode(env, policy)
        stats = info["episode_stats"]
        assert set(stats["reward_terms_raw"]) == set(stats["reward_terms"]) == set(REWARD_TERMS)
        for name in REWARD_TERMS:
            assert stats["reward_terms_raw"][name] == pytest.approx(sums[name], rel=1e-9, abs=1e-9), name
            assert stats["reward_terms"][name] == pytest.approx(getattr(weights, name) * sums[name], abs=1e-9)
            seen[name] += abs(sums[name])
        assert sum(stats["reward_terms"].values()) == pytest.approx(total, rel=1e-9, abs=1e-9)
        env.reset()  # the sums start again from zero
        assert not env.race.episode_terms.any()
    assert all(seen.values()), f"a term never occurred: {seen}"


def test_batched_env_episode_terms_match_the_steps_across_auto_resets():
    from kartsim.envs.sb3 import KartVecEnv

    n = 6
    venv = KartVecEnv(EnvConfig(track="oval.png", race=RaceConfig(max_episode_steps=40, stuck_time_s=2.0)),
                      n, seed=3, telemetry_envs=[])
    venv.reset()
    rng = np.random.default_rng(1)
    sums, totals, ended = np.zeros((n, len(REWARD_TERMS))), np.zeros(n), 0
    for _ in range(130):
        _, rewards, dones, infos = venv.step(rng.uniform(-1, 1, (n, 2)).astype(np.float32))
        for i, info in enumerate(infos):
            sums[i] += [info["reward_terms"][name] for name in REWARD_TERMS]
            totals[i] += rewards[i]
            if dones[i]:
                stats = info["episode_stats"]
                np.testing.assert_allclose([stats["reward_terms_raw"][k] for k in REWARD_TERMS], sums[i], atol=1e-9)
                assert sum(stats["reward_terms"].values()) == pytest.approx(totals[i], abs=1e-3)  # float32 rewards
                sums[i], totals[i] = 0.0, 0.0
                ended += 1
    assert ended >= 2 * n


def test_corner_starts_land_before_the_sharpest_bends():
    from kartsim.sim.race import Race
    from kartsim.sim.track import Track, TrackStack

    track = Track.load("technical.png")
    kappa = np.abs(track.curvature)

    def start_curvature(share):
        race = Race(TrackStack.from_tracks([track]), 400, RaceConfig(start_corner_share=share))
        race.reset_karts(np.arange(400), [np.random.default_rng(i) for i in range(400)])
        # the sharpest bend within 60 m ahead of each start
        ahead = (race.s[:, None] + np.linspace(0, 60, 31)[None]) % track.length
        return kappa[np.searchsorted(track.s, ahead) % len(kappa)].max(axis=1)

    uniform, corners = start_curvature(0.0), start_curvature(1.0)
    assert np.median(corners) > 1.5 * np.median(uniform)
    mixed = Race(TrackStack.from_tracks([track]), 1, RaceConfig(start_corner_share=0.5))
    mixed.reset_karts(np.array([0]), [np.random.default_rng(0)])  # draws from the uniform and the corner density
    assert 0.0 <= mixed.s[0] < track.length
    with pytest.raises(KartsimError):
        RaceConfig(start_corner_share=1.5)


def test_race_columns_reset_and_cannot_be_rebound():
    race = Race(TrackStack.from_tracks([Track.load("oval.png")]), 3)
    assert race.laps is race.arrays.laps and np.isnan(race.new_lap_time).all() and np.isinf(race.best_lap).all()
    race.reset_karts(np.arange(3), [np.random.default_rng(i) for i in range(3)])
    for _ in range(5):
        race.step(np.tile([0.0, 1.0], (3, 1)))
    race.laps[:] = 2
    race.reset_karts(np.array([1]), [np.random.default_rng(9)])
    assert race.laps.tolist() == [2, 0, 2] and race.steps.tolist() == [5, 0, 5]
    assert race.total_progress[1] == race.best[1] == race.start_progress[1]
    resets = {c.name for c in RACE_COLUMNS.columns if c.reset is not None}
    assert {"laps", "steps", "lap_time", "terminated", "episode_terms"} <= resets
    with pytest.raises(AttributeError, match="write into it"):
        race.laps = np.zeros(3, np.int64)


def test_steer_change_costs_weaving_not_a_steady_line():
    cfg = RewardConfig(steer_change=-0.1)
    weave = line_start_env()
    weave.race.reward_cfg = cfg
    _, _, weave_rewards = drive(weave, [[(-1.0) ** i * 0.5, 0.5] for i in range(20)])
    steady = line_start_env()
    steady.race.reward_cfg = cfg
    _, _, steady_rewards = drive(steady, [[0.0, 0.5]] * 20)
    assert weave.race.episode_terms[0, REWARD_TERMS.index("steer_change")] == pytest.approx(0.5 + 19 * 1.0)
    assert steady.race.episode_terms[0, REWARD_TERMS.index("steer_change")] == 0.0
    assert sum(weave_rewards) < sum(steady_rewards)
