"""Fault injection: SIGINT / SIGTERM / SIGKILL at chosen points of training and of a job, each
followed by the documented resume; afterwards no model is lost, the telemetry's steps are unique
and in order, and one trainer ran at a time.

Signals are sent at deterministic points (``KARTSIM_FAULT``, `kartsim.faults`): the n-th env step
of a rollout, the n-th PPO update, the n-th model save. Jobs are killed once their first complete
checkpoint exists (an event, not a sleep).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
# 2 karts x 32-step rollouts = 64 env steps per update; a checkpoint every update; 256 steps in all.
TINY = ["--vector-envs", "2", "--n-steps", "32", "--batch-size", "32", "--n-epochs", "1", "--checkpoint-freq", "64",
        "--seed", "0", "--no-progress", "--device", "cpu"]
TOTAL = 256


def _train(tmp_path: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), KARTSIM_LIVE="0")
    env.pop("KARTSIM_FAULT", None)
    if fault:
        env["KARTSIM_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "kartsim", "train", "--save-name", "f", *TINY, *extra], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)


def _steps(path: Path) -> int:
    from kartsim.rl.modelio import read_kartsim_config

    return int(read_kartsim_config(path)["num_timesteps"])


def _assert_telemetry_in_order(run: Path, last: int) -> None:
    steps = pd.read_csv(run / "telemetry_log.csv")["step"]
    assert steps.is_unique and steps.is_monotonic_increasing, "duplicated or reordered telemetry rows"
    assert steps.iloc[-1] == last


def _assert_finished(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "f"
    steps = _steps(tmp_path / "models" / "f_final.zip")
    assert TOTAL <= steps < TOTAL + 64  # SB3 trains whole rollouts (64 steps) past a resumed count
    assert _steps(run / "f_final.zip") == steps
    _assert_telemetry_in_order(run, steps)
    assert not list(tmp_path.rglob(".saving-*"))  # a SIGKILLed save's temporary file is cleared on resume
    assert not (tmp_path / "runs" / ".f.lock").exists()  # the lock ended with the last trainer


@pytest.mark.parametrize("fault", ["rollout@40:SIGINT", "update@3:SIGTERM"])
def test_interrupt_saves_and_the_resume_finishes(tmp_path, fault):
    """SIGINT / SIGTERM during a rollout or an update: _interrupted.zip, exit 130, the printed resume."""
    proc = _train(tmp_path, "--timesteps", str(TOTAL), fault=fault)
    assert proc.returncode == 130, proc.stdout + proc.stderr
    interrupted = tmp_path / "runs" / "f" / "checkpoints" / "f_interrupted.zip"
    steps = _steps(interrupted)
    assert 0 < steps < TOTAL
    assert f"Resume with: kartsim train --resume {Path('runs/f/checkpoints/f_interrupted.zip')}" in proc.stdout
    _assert_telemetry_in_order(tmp_path / "runs" / "f", steps)
    proc = _train(tmp_path, "--resume", str(interrupted), "--timesteps", str(TOTAL))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_finished(tmp_path)


@pytest.mark.parametrize("sig", ["SIGTERM"])  # SIGINT: test_reliability.test_3 (in-process)
def test_interrupt_during_the_final_save_keeps_the_final_model(tmp_path, sig):
    """The 5th save is the final one (checkpoints at 64, 128, 192, 256 come first)."""
    proc = _train(tmp_path, "--timesteps", str(TOTAL), fault=f"save@5:{sig}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Interrupted during the final save: waited for it to finish" in proc.stdout
    _assert_finished(tmp_path)


@pytest.mark.parametrize("fault, extra", [("rollout@70:SIGKILL", ()), ("update@3:SIGKILL", ()),
                                          ("save@3:SIGKILL", ("--checkpoint-freq", "96"))])
def test_sigkill_then_resume_from_the_last_checkpoint(tmp_path, fault, extra):
    """SIGKILL (the 3rd save is the final one with checkpoints at 96 and 192) leaves no
    _interrupted.zip: resume from the newest checkpoint; the telemetry rows logged after it are
    dropped, so none is duplicated."""
    proc = _train(tmp_path, "--timesteps", str(TOTAL), *extra, fault=fault)
    assert proc.returncode == -signal.SIGKILL
    ckpts = sorted((tmp_path / "runs" / "f" / "checkpoints").glob("f_*_steps.zip"), key=_steps)
    assert ckpts, "checkpoints survive the kill"
    proc = _train(tmp_path, "--resume", str(ckpts[-1]), "--timesteps", str(TOTAL))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_finished(tmp_path)


def test_a_second_trainer_of_the_same_run_is_refused(tmp_path):
    """One trainer per run folder: while a run is being trained, the same --save-name is refused."""
    from kartsim.errors import ConfigError
    from kartsim.rl.runfolder import RunLock
    from kartsim.rl.train import TrainConfig, train

    with RunLock(tmp_path / "runs", "f"):
        with pytest.raises(ConfigError, match=f"run 'f' is being trained by another process \\(pid {os.getpid()}\\)"):
            train(TrainConfig.from_dict(dict(save_name="f", timesteps=64, runs_dir=str(tmp_path / "runs"), device="cpu",
                              models_dir=str(tmp_path / "models"), progress_bar=False)))
        assert not (tmp_path / "runs" / "f").exists()
    with RunLock(tmp_path / "runs", "f"):  # released: free again
        pass


# ------------------------------------------------------------------------------------------ jobs

@pytest.fixture
def jobs_env(job_store, monkeypatch):
    """conftest's job_store without the live feed; kills the job processes a test leaves behind."""
    monkeypatch.setenv("KARTSIM_LIVE", "0")
    store = job_store
    yield store
    for runner in store.glob("jobs/*/attempt-*.runner.json"):  # leftovers of a failed test: ours only
        for key in ("pid", "child_pid"):
            pid = json.loads(runner.read_text()).get(key)
            if isinstance(pid, int) and _is_job_process(pid, runner.parent.name):
                os.kill(pid, signal.SIGKILL)


def _is_job_process(pid: int, job_id: str) -> bool:
    """`pid` is still a kartsim job process of `job_id` (not a reused pid of some other process)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"kartsim.jobs." in cmdline and job_id.encode() in cmdline  # the worker's --progress-file names it


def _jobs(capsys, *argv: str) -> tuple[int, str]:
    from kartsim.cli.jobs_cmd import main as jobs_main

    capsys.readouterr()
    code = jobs_main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize("victim", ["pid", "child_pid"])
def test_killed_job_runner_or_worker_resumes_with_one_trainer(jobs_env, capsys, victim):
    """SIGKILL the job's wrapper (runner) or its training process (worker) once a checkpoint exists:
    no trainer survives its wrapper, the resume finishes the run with unique, ordered telemetry."""
    from kartsim.jobs.store import open_store, steps_inside

    store = jobs_env
    code, out = _jobs(capsys, "train", "--timesteps", "100000", "--save-name", "j", *TINY[:-3], "--detach")
    assert code == 0, out
    job_id = re.search(r"started job (\S+)", out).group(1)
    s = open_store(store)
    ckpts = store / "runs" / "j" / "checkpoints"
    wait_for(lambda: any(steps_inside(s, f"runs/j/checkpoints/{p.name}") for p in ckpts.glob("j_*_steps.zip")),
              180, "a complete checkpoint")
    runner = json.loads(next(store.glob(f"jobs/{job_id}/attempt-1.runner.json")).read_text())
    os.kill(runner[victim], signal.SIGKILL)
    wait_for(lambda: not _alive(runner["child_pid"]) and not _alive(runner["pid"]), 60,
              "the trainer to stop (no orphan)")
    code, out = _jobs(capsys, "status", job_id)
    assert "failed" in out, out
    # the kill lands anywhere from ~200 to ~1,500 steps in: resume to 512 steps past the newest checkpoint
    total = max(_steps(p) for p in ckpts.glob("j_*.zip")) + 512
    code, out = _jobs(capsys, "resume", job_id, "--timesteps", str(total))
    assert code == 0 and f"job {job_id} succeeded" in out, out
    steps = _steps(store / "models" / "j_final.zip")
    assert total <= steps < total + 64
    _assert_telemetry_in_order(store / "runs" / "j", steps)
    log = (store / "jobs" / job_id / "log.txt").read_text()
    assert "being trained by another process" not in log
