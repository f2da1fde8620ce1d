"""`kartsim jobs --backend ray` against a real Ray head started on 127.0.0.1 by this module
(sync -> train --detach -> status -> fetch -> the model loads and plays; a killed job -> failed with
its reason, checkpoints kept, resume), and a clear, quick error for an address where nothing listens.

The head runs with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 so that every Ray process binds and talks on
127.0.0.1 only, and is stopped by signalling the process group it was started in (not `ray stop`,
which would stop every Ray process of the user on this machine)."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

pytest.importorskip("ray.job_submission", reason="Ray is not installed: pip install 'kartsim[ray]'")

from conftest import detached_job_with_checkpoint, free_port, wait_for

from kartsim.cli.jobs_cmd import main as jobs_main
from kartsim.jobs.store import steps_inside

TINY = ["--vector-envs", "2", "--n-steps", "64", "--batch-size", "64", "--n-epochs", "1",
        "--checkpoint-freq", "128", "--seed", "0"]


@pytest.fixture
def ray_env(tmp_path, monkeypatch, ray_head):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("KARTSIM_JOBS_CONFIG", raising=False)
    store = tmp_path / "shared-store"
    monkeypatch.setenv("KARTSIM_JOBS_BACKEND", "ray")
    monkeypatch.setenv("KARTSIM_RAY_ADDRESS", ray_head)
    monkeypatch.setenv("KARTSIM_JOB_STORE", str(store))
    yield store
    # stop whatever a failed test left running on the cluster
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_head)
    for job in client.list_jobs():
        if not job.status.is_terminal() and (job.metadata or {}).get("kartsim_job"):
            client.stop_job(job.submission_id)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = jobs_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_ray_workflow_sync_train_status_fetch_play(ray_env, ray_head, tmp_path, capsys):
    store = ray_env
    code, out, err = run(capsys, "sync", "--track-name", "circuit.png")
    assert code == 0, err
    code, out, err = run(capsys, "train", "--vision", "--track-name", "circuit.png", "--timesteps", "256",
                         "--save-name", "karting_vision_v1", "--tensorboard", *TINY, "--detach")
    assert code == 0, err
    job_id = re.search(r"started job (\S+) \(ray at http://127\.0\.0\.1:\d+, submission (\S+)\)", out).group(1)
    rec = json.loads((store / "jobs" / job_id / "job.json").read_text())
    assert rec["backend"] == "ray" and rec["address"] == ray_head and rec["attempts"][0]["submission_id"] == job_id
    assert rec["options"]["num_gpus_used"] == 0.0  # no GPU on this cluster

    code, out, _ = run(capsys, "status", job_id, "--wait", "--timeout", "240")
    assert code == 0, out + (store / "jobs" / job_id / "log.txt").read_text()
    assert re.search(r"state:\s+succeeded", out) and "256 / 256 steps" in out

    from ray.job_submission import JobSubmissionClient

    info = JobSubmissionClient(ray_head).get_job_info(job_id)
    assert str(info.status) in ("SUCCEEDED", "JobStatus.SUCCEEDED")
    assert "kartsim.jobs.runner" in info.entrypoint
    log = (store / "jobs" / job_id / "log.txt").read_text()
    assert "Creating new model with CnnPolicy" in log and "Trained 256 steps" in log
    # the code ran from the package Ray shipped with the job, in the job's working dir (synced tracks)
    assert (store / "runs" / "karting_vision_v1" / "tb").is_dir()
    assert json.loads((store / "runs" / "karting_vision_v1" / "config.json").read_text())["env"]["track"] == "circuit.png"

    code, out, err = run(capsys, "fetch", "--path", "karting_vision_v1_final.zip", "--out", "karting_vision_v1.zip")
    assert code == 0, err
    code, _, err = run(capsys, "fetch", "--path", "karting_vision_v1_final.zip", "--out", "karting_vision_v1.zip")
    assert code == 2 and "pass --force" in err
    assert run(capsys, "fetch", "--path", "karting_vision_v1_final.zip", "--out", "karting_vision_v1.zip",
               "--force")[0] == 0
    code, _, err = run(capsys, "fetch", "--path", "../../etc/passwd")
    assert code == 2 and "escapes the job store" in err

    from stable_baselines3 import PPO

    model = PPO.load(tmp_path / "karting_vision_v1.zip", device="cpu")
    assert model.num_timesteps == 256
    from kartsim.cli import main as kartsim_main

    assert kartsim_main(["play", "--model", "karting_vision_v1.zip", "--episodes", "1", "--max-steps", "50",
                         "--record", "x.gif", "--no-window"]) == 0
    assert (tmp_path / "x.gif").stat().st_size > 0

    code, out, _ = run(capsys, "list")
    assert job_id in out and "succeeded" in out and "ray" in out


@pytest.mark.slow
def test_ray_killed_job_fails_keeps_checkpoints_and_resumes(ray_env, ray_head, capsys):
    store = ray_env
    job_id, ckpts, s = detached_job_with_checkpoint(run, capsys, store, "rk", TINY, 180)
    runner = json.loads((store / "jobs" / job_id / "attempt-1.runner.json").read_text())
    os.killpg(runner["pgid"], signal.SIGKILL)  # the job's processes die, as on a lost node

    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_head)
    wait_for(lambda: client.get_job_status(job_id).is_terminal(), 60, "Ray to notice")
    code, out, _ = run(capsys, "status", job_id)
    assert re.search(r"state:\s+failed: process died", out), out
    assert not (store / "jobs" / job_id / "attempt-1.exit.json").exists()
    readable = [int(re.search(r"_(\d+)_steps", p.name).group(1)) for p in ckpts.glob("rk_*_steps.zip")
                if steps_inside(s, f"runs/rk/checkpoints/{p.name}") is not None]
    assert readable, "checkpoints survive"
    last = max(readable)

    code, out, err = run(capsys, "resume", job_id, "--timesteps", str(last + 128), "--detach")
    assert code == 0, err
    assert f"from runs/rk/checkpoints/rk_{last}_steps.zip ({last:,} steps)" in out
    assert json.loads((store / "jobs" / job_id / "job.json").read_text())["attempts"][1]["submission_id"] == f"{job_id}-2"
    code, out, _ = run(capsys, "status", job_id, "--wait", "--timeout", "240")
    assert code == 0 and re.search(r"state:\s+succeeded", out), out + (store / "jobs" / job_id / "log.txt").read_text()
    log = (store / "jobs" / job_id / "log.txt").read_text()
    assert f"({last:,} steps done)" in log
    from kartsim.rl.modelio import read_kartsim_config

    assert read_kartsim_config(store / "models" / "rk_final.zip")["num_timesteps"] >= last + 128


def test_unreachable_ray_address_is_one_quick_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("KARTSIM_JOB_STORE", str(tmp_path / "store"))
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    code, out, err = run(capsys, "train", "--backend", "ray", "--address", address, "--timesteps", "64", "--detach")
    assert time.monotonic() - started < 15
    assert code == 2 and err.count("\n") == 1
    assert err.strip() == (f"error: cannot reach a Ray cluster at {address}: start one with "
                           "`ray start --head --dashboard-host 127.0.0.1` or check --address")
    assert not (tmp_path / "store" / "jobs").exists() or not any((tmp_path / "store" / "jobs").iterdir())
