"""Periodic evaluation during training (best model, stop rule, report) and the generated track pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kartsim.errors import ConfigError

TINY = dict(vector_envs=2, n_steps=32, batch_size=32, n_epochs=1, progress_bar=False, checkpoint_freq=0,
            telemetry_every=0, device="cpu", seed=0)


def _cfg(tmp_path: Path, **kw):
    from kartsim.rl.train import TrainConfig

    return TrainConfig.from_dict({**TINY, "runs_dir": str(tmp_path / "runs"), "models_dir": str(tmp_path / "models"), **kw})


def _row(completion, ratio=None, lap=None, progress=0.0):
    return {"completion": completion, "ref_ratio": ratio, "eval_best_lap": lap, "eval_progress_m": progress}


def test_evaluations_rank_completion_first_then_the_ratio_then_the_distance():
    from kartsim.rl.callbacks import eval_key

    ranked = [_row(0.0, progress=10), _row(0.0, progress=300), _row(0.5, 1.01, 50.0), _row(1.0, 1.3, 60.0),
              _row(1.0, 1.1, 55.0)]
    assert sorted(ranked, key=eval_key) == ranked
    # without a reference the lap time decides
    assert eval_key(_row(1.0, None, 50.0)) > eval_key(_row(1.0, None, 51.0))


def test_training_keeps_the_best_evaluated_model_and_reports_the_final_one(tmp_path):
    from kartsim.rl.modelio import read_kartsim_config
    from kartsim.rl.train import train

    lines: list[str] = []
    result = train(_cfg(tmp_path, timesteps=256, eval_freq=128, save_name="ev", track=["oval.png"],
                        env_options={"max_episode_steps": 40}), echo=lines.append)
    best = tmp_path / "models" / "ev_best.zip"
    assert best.is_file() and (tmp_path / "runs" / "ev" / "ev_best.zip").is_file()
    assert result.best_model == best
    evaluation = read_kartsim_config(best)["evaluation"]
    assert evaluation == result.best_eval and evaluation["steps"] in (128, 256)
    assert result.final_eval["steps"] == 256
    assert any(line.startswith("Evaluation of the final model") for line in lines)
    assert any(line.startswith(("Best model:", "The final model is worse")) for line in lines)
    # --force removes the old best copy with the rest of the run
    train(_cfg(tmp_path, timesteps=64, save_name="ev", force=True), echo=lambda s: None)
    assert not best.exists()


def test_a_pre_trained_run_is_evaluated_before_ppo_and_can_keep_its_clone(tmp_path):
    from kartsim.rl.modelio import read_kartsim_config
    from kartsim.rl.train import train

    lines: list[str] = []
    result = train(_cfg(tmp_path, timesteps=128, eval_freq=128, save_name="pre", track=["oval.png"], demos="ai:hard",
                        demos_laps=1, bc_epochs=1, dagger_rounds=0, env_options={"max_episode_steps": 40}),
                   echo=lines.append)
    assert any(line.startswith("  evaluation at 0 steps") for line in lines)
    assert read_kartsim_config(result.best_model)["evaluation"]["steps"] in (0, 128)


def test_a_policy_that_meets_the_stop_condition_before_ppo_stops_at_the_first_step():
    from stable_baselines3 import PPO

    from kartsim.envs import EnvConfig
    from kartsim.rl.callbacks import LapEvalCallback
    from kartsim.rl.train import build_vec_env

    cfg = EnvConfig(track="oval.png").replace(max_episode_steps=20)
    model = PPO("MlpPolicy", build_vec_env(cfg, 2, 0), n_steps=32, batch_size=32, device="cpu", seed=0)
    evaluator = LapEvalCallback(cfg, 10_000, stop_when_laps=0, evaluate_start=True)
    model.learn(total_timesteps=640, callback=evaluator)
    assert model.num_timesteps == 2 and [r["steps"] for r in evaluator.rows] == [0]


def test_a_run_that_ends_worse_than_its_best_says_so(tmp_path):
    from kartsim.rl.train import TrainResult, _report_evaluation, _Run

    run = _Run(_cfg(tmp_path, save_name="w").resolved())
    run.best_copy.parent.mkdir(parents=True)
    run.best_copy.write_bytes(b"zip")

    class Done:
        best = {**_row(1.0, 1.08, 49.0), "steps": 300_000}
        final = {**_row(0.0, progress=420.0), "steps": 1_000_000}

    lines: list[str] = []
    result = TrainResult(final_model=None, run_dir=run.dir, num_timesteps=1_000_000)
    _report_evaluation(Done(), run, result, lines.append)
    assert "worse than the best" in lines[-1] and str(run.best_copy) in lines[-1] and "300,000 steps" in lines[-1]


def test_stop_at_ratio_needs_every_track_lapped_within_it():
    from kartsim.envs import EnvConfig
    from kartsim.rl.callbacks import LapEvalCallback

    cb = LapEvalCallback(EnvConfig(track="oval.png"), 1000, stop_at_ratio=1.10)
    assert cb._should_stop({**_row(1.0, 1.09), "min_laps": 1})
    assert not cb._should_stop({**_row(1.0, 1.11), "min_laps": 1})
    assert not cb._should_stop({**_row(0.5, 1.02), "min_laps": 0})


@pytest.mark.parametrize("changes, message", [
    (dict(eval_freq=-1), "--eval-freq"),
    (dict(eval_episodes=0), "--eval-episodes"),
    (dict(stop_at_ratio=1.1, eval_freq=0), "--stop-at-ratio needs"),
    (dict(track_pool=20), "--track-pool only applies"),
    (dict(track=["random"], track_pool=0), "--track-pool must be"),
])
def test_evaluation_and_pool_flags_are_validated(tmp_path, changes, message):
    from kartsim.rl.train import validate

    with pytest.raises(ConfigError, match=message):
        validate(_cfg(tmp_path, **changes).resolved())


def test_random_pool_varies_style_and_width_and_is_sized_by_track_pool(tmp_path, monkeypatch):
    import kartsim.envs.tracks as tracks
    from kartsim.rl.train import env_config_for

    monkeypatch.setattr(tracks, "CACHE_DIR", tmp_path)
    specs = [tracks.generated_track_spec(s) for s in range(10_000, 10_040)]
    assert {style for style, _ in specs} == set(tracks.GENERATED_STYLES) | {tracks.LONG_STRAIGHTS_STYLE, tracks.DRAWN_STYLE}
    assert all(7.0 <= w <= 14.0 for _, w in specs) and len({w for _, w in specs}) > 5
    assert tracks.generated_track_spec(10_003) == specs[3]  # the seed alone decides

    env_cfg = env_config_for(_cfg(tmp_path, track=["random", "bundled"], track_pool=3).resolved())
    assert env_cfg.random_pool_size == 3
    paths = tracks.track_paths(env_cfg.track, env_cfg.random_pool_size)
    assert len(paths) == 6 and paths[3:] == ["circuit.png", "oval.png", "technical.png"]
    assert len({Path(p).name for p in paths[:3]}) == 3 and all(Path(p).is_file() for p in paths[:3])


def test_a_pool_is_evaluated_on_a_few_tracks_spread_over_it(tmp_path):
    from kartsim.envs import EnvConfig
    from kartsim.rl.train import MAX_EVAL_TRACKS, eval_tracks_for

    pool = [f"t{i}.png" for i in range(12)]
    cfg = _cfg(tmp_path).resolved()
    picked = eval_tracks_for(cfg, EnvConfig(track=pool))
    assert len(picked) == MAX_EVAL_TRACKS and picked[0] == "t0.png" and len(set(picked)) == MAX_EVAL_TRACKS
    assert eval_tracks_for(_cfg(tmp_path, eval_tracks=["oval.png"]).resolved(), EnvConfig(track=pool)) == ["oval.png"]


@pytest.mark.slow
def test_benchmark_learning_summarises_a_run(tmp_path):
    """benchmarks/learning.py end to end on a tiny budget: a curve row per evaluation, train and test."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "learning.py"), "--timesteps", "128", "--eval-every", "64",
         "--track-name", "oval.png", "--test-tracks", "technical.png", "--set", "vector_envs=2", "--set", "n_steps=32",
         "--set", "batch_size=32", "--set", "n_epochs=1", "--env", "max_episode_steps=30", "--json", str(out)],
        capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin",
                                                         "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads(out.read_text())["runs"][0]
    assert [r["steps"] for r in run["curve"]] == [64, 128]
    assert [t["track"] for t in run["curve"][0]["tracks"]] == ["oval", "technical"]
    assert run["final"]["test"]["completion"] == 0.0 and "median of 1 seed" in proc.stdout
