"""`kartsim sweep`: a 4-trial local search with its report, a seed sweep killed with SIGKILL and
resumed without rerunning finished trials, and one-line errors for bad search spaces."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kartsim.cli import main as kartsim_main
from kartsim.errors import ConfigError

# tiny trials: 4 karts x 64-step rollouts, evaluations of 100 steps
TINY = ["--vector-envs", "4", "--n-steps", "64", "--batch-size", "64", "--eval-max-steps", "100"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = kartsim_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, message", [
    (["--set", "learning_rate=loguniform:-1:2"], "error: --set learning_rate=loguniform:-1:2: loguniform bounds "
                                                 "must be > 0 (it samples log(x)); use uniform for ranges that "
                                                 "reach 0 or below"),
    (["--set", "learning_rat=uniform:0:1"], "error: --set learning_rat: unknown TrainConfig field; sweepable fields: "),
    (["--set", "learning_rate=gauss:0:1"], "error: --set learning_rate=gauss:0:1: unknown distribution 'gauss'"),
    (["--set", "n_epochs=uniform:1:5"], "error: --set n_epochs=uniform:1:5: n_epochs is a whole number; use int:A:B"),
    (["--set", "learning_rate=uniform:0.1"], "error: --set learning_rate=uniform:0.1: uniform needs two bounds"),
    (["--set", "n_epochs=int:2:8", "--sampler", "bayes"], "error: unknown --sampler 'bayes'; use tpe, random, grid"),
    (["--set", "learning_rate=uniform:1e-4:1e-3", "--sampler", "grid"],
     "error: --sampler grid needs choice: or int: dimensions, but learning_rate is uniform:"),
    (["--env", "reward.nope=uniform:0:1"], "error: unknown env option 'reward.nope'"),
    (["--seeds", "7-3"], "error: --seeds '7-3': the range 7-3 runs backwards; write it as 3-7"),
    (["--set", "save_name=choice:a,b"], "error: --set save_name: the sweep sets save_name itself"),
    (["--seed", "3"], "error: --seed does not apply to a sweep; give --seeds 0-7"),
    (["--resume", "x.zip"], "error: --resume does not apply to a sweep (every trial trains from scratch; to continue"),
    (["--metric", "speed"], "error: unknown --metric 'speed'; use ref_ratio, lap_time, return"),
    (["--set", "n_epochs=choice:2,3", "--baseline"], "error: --baseline: the base config has n_epochs=5, outside"),
])
def test_bad_search_spaces_are_one_line_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "sweep", "run", "bad", *argv)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(message), err
    assert not (tmp_path / "sweeps" / "bad").exists()  # nothing written


def test_status_of_an_unknown_sweep(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "sweep", "status", "nope")
    assert code == 2 and err.strip() == "error: no sweep 'nope' in sweeps; start one with `kartsim sweep run nope ...`"


def test_space_parsing_follows_the_dataclass():
    from kartsim.sweep.space import parse_env, parse_seeds, parse_set

    d = parse_set("learning_rate=loguniform:1e-4:3e-3")
    assert (d.kind, d.low, d.high) == ("loguniform", 1e-4, 3e-3)
    assert parse_set("n_epochs=choice:2,3,4").choices == (2, 3, 4)
    assert parse_set("normalize_reward=choice:true,false").choices == (True, False)
    assert parse_set("n_steps=int:64:256").grid_values()[:2] == [64, 65]
    assert parse_env("reward.progress=uniform:0.5:2").env_key == "reward.progress"
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(ConfigError, match="loguniform bounds must be > 0"):
        parse_set("ent_coef=loguniform:0:0.01")


@pytest.mark.slow
def test_local_sweep_of_four_trials_with_report(tmp_path, monkeypatch, capfd):
    capsys = capfd  # the worker processes print to the file descriptors
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "sweep", "run", "lr", "--set", "learning_rate=loguniform:1e-4:3e-3",
                         "--set", "n_epochs=choice:1,2", "--trials", "4", "--n-epochs", "2", "--baseline", "--workers", "2", "--timesteps", "512",
                         "--eval-every", "256", *TINY)
    assert code == 0, out + err
    assert out.count(" finished: ref_ratio ") + out.count(" pruned at ref_ratio ") == 4, out
    assert "sweep lr: 4 / 4 trials finished" in out and "train it: kartsim train" in out
    db = sqlite3.connect(tmp_path / "sweeps" / "lr" / "study.db")
    states = [s for (s,) in db.execute("select state from trials")]
    assert len(states) == 4 and set(states) <= {"COMPLETE", "PRUNED"}
    baseline = json.loads((tmp_path / "runs" / "lr-0" / "config.json").read_text())["train"]["ppo"]
    assert (baseline["learning_rate"], baseline["n_epochs"]) == (1e-3, 2)  # --baseline: the base config first
    for n in range(4):  # every trial trained its own run folder
        assert (tmp_path / "runs" / f"lr-{n}" / "config.json").is_file()

    code, out, err = run(capsys, "sweep", "report", "lr", "--out", "rep")
    assert code == 0, err
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Best config" in md and "kartsim train --timesteps 512 --save-name lr-best" in md
    assert "--learning-rate" in md and "## Trials" in md
    rows = (tmp_path / "rep" / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("rank,trial,state,ref_ratio") and len(rows) == 5
    table = [r.split(",") for r in rows[1:]]
    states = [r[2] for r in table]
    assert states == sorted(states)  # complete trials first, then the pruned (their values are partial)
    for state in set(states):
        values = [float(r[3]) for r in table if r[2] == state]
        assert values == sorted(values)  # best (lowest ref_ratio) first
    for png in ("params.png", "curves.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:4] == b"\x89PNG"
    assert run(capsys, "sweep", "report", "lr", "--out", "rep")[0] == 2  # no overwrite without --force

    from starlette.testclient import TestClient

    from kartsim.dashboard.app import create_app

    with TestClient(create_app(tmp_path / "runs", sweeps_dir=tmp_path / "sweeps")) as client:
        sweeps = client.get("/api/runs").json()["sweeps"]["sweeps"]
    assert [(s["name"], s["done"], s["target"]) for s in sweeps] == [("lr", 4, 4)]
    assert sweeps[0]["best"]["command"].startswith("kartsim train ") and len(sweeps[0]["rows"]) == 4
    code, _, err = run(capsys, "sweep", "run", "lr", "--set", "n_epochs=choice:1,2", *TINY)
    assert code == 2 and "sweep resume lr" in err and "--force" in err


def _trials(db: Path) -> list[tuple[int, str]]:
    try:
        with sqlite3.connect(db, timeout=30) as con:
            return list(con.execute("select number, state from trials order by number"))
    except sqlite3.OperationalError:  # not created yet
        return []


@pytest.mark.slow
def test_sweep_killed_with_sigkill_resumes_without_rerunning_finished_trials(tmp_path):
    """A seed sweep (--seeds 0-2: one trial per seed) killed in its second trial."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    argv = [sys.executable, "-m", "kartsim", "sweep", "run", "k", "--seeds", "0-2", "--workers", "1",
            "--heartbeat", "1", "--timesteps", "3072", "--eval-every", "1024", *TINY]
    log = open(tmp_path / "run.log", "wb")
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    db = tmp_path / "sweeps" / "k" / "study.db"
    try:
        end = time.monotonic() + 300
        while time.monotonic() < end and proc.poll() is None:
            trials = _trials(db)
            if [s for _, s in trials] == ["COMPLETE", "RUNNING"]:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"no second trial running: {_trials(db)}\n{(tmp_path / 'run.log').read_text()}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its worker, mid-trial
        proc.wait()
        log.close()
    first = tmp_path / "models" / "k-0_final.zip"
    stamp = first.stat().st_mtime_ns
    with sqlite3.connect(db) as con:
        value0 = con.execute("select value from trial_values where trial_id = 1").fetchone()[0]

    # two workers: the killed trial must be queued again once, not once per worker
    out = subprocess.run([sys.executable, "-m", "kartsim", "sweep", "resume", "k", "--workers", "2"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "trial 0 " not in out.stdout  # the finished trial is not trained again
    assert first.stat().st_mtime_ns == stamp
    states = dict(_trials(db))
    assert states[0] == "COMPLETE" and states[1] == "FAIL"  # the killed trial, failed by its silent heartbeat
    assert sorted(states.values()).count("COMPLETE") == 3 and len(states) == 4
    import optuna

    study = optuna.load_study(study_name="k", storage=f"sqlite:///{db}")
    assert study.trials[0].value == value0
    seeds = sorted(t.params["seed"] for t in study.trials if t.state.name == "COMPLETE")
    assert seeds == [0, 1, 2]  # the killed seed was run again, none twice
    assert "3 seeds: ref_ratio median" in out.stdout and "share of seeds whose best lap reached" in out.stdout


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # a trial asked for outside Study.optimize
def test_a_trial_killed_before_its_first_heartbeat_is_failed_and_queued_again(tmp_path):
    """Optuna ignores a RUNNING trial that never sent a heartbeat (its process was killed right after
    creating it); the sweep's workers then waited on it for ever (seen in CI)."""
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    from kartsim.sweep.local import settle_stale_trials
    from kartsim.sweep.study import SweepSpec, create_study, default_storage, load_study

    spec = SweepSpec(name="z", train={}, seeds=[0, 1], sampler="grid", heartbeat_s=1, eval_every=1000,
                     storage=default_storage(tmp_path))
    silent = create_study(spec).ask()  # RUNNING, and no heartbeat thread: as if killed at once
    silent.suggest_categorical("seed", [0, 1])
    study = load_study(spec)
    fail_stale_trials(study)  # just created: not failed yet (its heartbeat may be on its way)
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]
    settle_stale_trials(spec)  # silent for longer than the grace period: failed, and queued again
    trials = load_study(spec).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].params == trials[0].params


def test_a_lap_always_scores_better_than_no_lap():
    from kartsim.sweep.trial import track_score

    info = {"ref_lap": 45.0, "length_m": 600.0}
    row = {"eval_return": 10.0, "eval_best_lap": None, "eval_progress_m": 300.0}
    slow_lap = track_score("ref_ratio", {**row, "eval_best_lap": 149.0}, info, cap_s=150.0)
    half, most = (track_score("ref_ratio", {**row, "eval_progress_m": m}, info, cap_s=150.0) for m in (300.0, 590.0))
    assert slow_lap < most < half  # the slowest lap the evaluation can time beats no lap; further is better
    assert track_score("ref_ratio", {**row, "eval_best_lap": 54.0}, info, cap_s=150.0) == pytest.approx(1.2)
    # an evaluation too short to time a lap still ranks by progress, above any lap
    assert 1.0 < track_score("ref_ratio", row, info, cap_s=10.0) < 2.0
    assert track_score("lap_time", {**row, "eval_best_lap": 50.0}, info, cap_s=150.0) == 50.0
    assert track_score("return", row, info, cap_s=150.0) == 10.0
