"""`kartsim jobs` / tools/track_cli.py with the local backend: the whole workflow on a tiny training
(sync -> train --detach -> status -> fetch -> the model loads and plays), a killed job (failed with a
reason, checkpoints kept, resume), cancel, fetch refusals, unknown ids, bad tracks, config, Ctrl-C."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import detached_job_with_checkpoint, wait_for

from kartsim.cli.jobs_cmd import main as jobs_main
from kartsim.jobs.store import steps_inside

ROOT = Path(__file__).resolve().parents[2]
SHIM = ROOT / "tools" / "track_cli.py"
# A few hundred steps: 2 karts x 64-step rollouts, one epoch, a checkpoint every rollout.
TINY = ["--vector-envs", "2", "--n-steps", "64", "--batch-size", "64", "--n-epochs", "1",
        "--checkpoint-freq", "128", "--seed", "0"]


@pytest.fixture
def jobs_env(job_store):
    """conftest's job_store; kills the job processes a test leaves behind."""
    yield job_store
    _kill_jobs(job_store)


def _kill_jobs(store: Path) -> None:
    from kartsim.jobs.local import process_alive

    for job_json in store.glob("jobs/*/job.json"):
        data = json.loads(job_json.read_text())
        for a in data.get("attempts", []):
            if process_alive(a.get("pid"), a.get("start_token"), data["id"]):
                try:
                    os.killpg(a["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = jobs_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def shim(*argv: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SHIM), *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


def job_record(store: Path, job_id: str) -> dict:
    return json.loads((store / "jobs" / job_id / "job.json").read_text())


# ------------------------------------------------------------------------------------- workflow

def test_local_workflow_sync_train_status_fetch_play(jobs_env, tmp_path, capsys):
    store = jobs_env
    # sync through the root shim (a separate process, as a user runs it)
    proc = shim("sync", "--track-name", "circuit.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "synced circuit.png:" in proc.stdout and "gates" in proc.stdout
    assert (store / "tracks" / "circuit.png").is_file()
    cp = json.loads((store / "tracks" / "circuit.checkpoints.json").read_text())
    assert cp["track"] == "circuit.png" and len(cp["gates"]) > 10

    # train without --detach streams the job; Ctrl-C with no terminal detaches (the job goes on)
    follower = subprocess.Popen([sys.executable, str(SHIM), "train", "--track-name", "circuit.png", "--timesteps",
                                 "256", "--save-name", "wf", "--tensorboard", *TINY], cwd=tmp_path,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = follower.stdout.readline()
        m = re.match(r"started job (\S+) \(local, pid \d+\)", first)
        assert m, first + follower.stdout.read()
        job_id = m.group(1)
        # Ctrl-C once the follower streams the job's own output: it is following (no sleep, no guess).
        # (Not "log.txt exists": the follower creates that file itself, before it prints anything.)
        seen = [first]
        for line in follower.stdout:
            seen.append(line)
            if f"=== job {job_id} attempt 1 started" in line:
                assert "(local backend)" in line, line  # the first line of the job's log names the backend
                break
        else:
            raise AssertionError("the follower ended before streaming the job's log:\n" + "".join(seen))
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=30)
        rest = follower.stdout.read()
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, "".join(seen) + rest
    assert "backend: local = a background process on this machine" in "".join(seen)
    assert "monitor: python tools/track_cli.py status" in "".join(seen) and "tensorboard --logdir" in "".join(seen)
    assert f"detached: job {job_id} keeps running. Follow it with: python tools/track_cli.py logs {job_id} --follow" in rest
    assert job_id.startswith("wf-")
    rec = job_record(store, job_id)
    assert rec["backend"] == "local" and rec["attempts"][0]["pid"]
    assert rec["config"]["task.track"] == ["circuit.png"] and rec["config"]["run.timesteps"] == 256
    assert "argv" not in rec  # the train settings as a dict, not a command line

    code, out, _ = run(capsys, "status", job_id, "--wait", "--timeout", "180")
    assert code == 0, out
    assert re.search(r"state:\s+succeeded", out)
    assert "256 / 256 steps" in out
    assert "models/wf_final.zip" in out

    code, out, _ = run(capsys, "list")
    assert code == 0 and job_id in out and "succeeded" in out

    code, out, _ = run(capsys, "logs", job_id)
    assert "Trained 256 steps" in out and f"=== job {job_id} attempt 1 succeeded" in out

    run_dir = store / "runs" / "wf"
    for part in ("config.json", "telemetry_log.csv", "checkpoints/wf_128_steps.zip", "tb"):
        assert (run_dir / part).exists(), part

    # fetch by bare name (found in models/), as the user guide shows
    code, out, err = run(capsys, "fetch", "--path", "wf_final.zip", "--out", "fetched.zip")
    assert code == 0, err
    assert (tmp_path / "fetched.zip").is_file()
    code, _, err = run(capsys, "fetch", "--path", "wf_final.zip", "--out", "fetched.zip")
    assert code == 2 and "already exists; pass --force" in err and err.count("\n") == 1
    code, _, err = run(capsys, "fetch", "--path", "wf_final.zip", "--out", "fetched.zip", "--force")
    assert code == 0, err
    # a checkpoint, the telemetry CSV and the TensorBoard folder
    assert run(capsys, "fetch", "--path", "wf_128_steps.zip")[0] == 0
    assert (tmp_path / "wf_128_steps.zip").is_file()
    assert run(capsys, "fetch", "--path", "telemetry_log.csv", "--out", "tele.csv")[0] == 0
    assert (tmp_path / "tele.csv").read_text().startswith("step,") or (tmp_path / "tele.csv").stat().st_size > 0
    assert run(capsys, "fetch", "--job", job_id, "--path", "tb", "--out", "tb_copy")[0] == 0
    assert any((tmp_path / "tb_copy").rglob("events.out.tfevents*"))

    # the fetched model loads with SB3 and drives (headless, recorded)
    from stable_baselines3 import PPO

    model = PPO.load(tmp_path / "fetched.zip", device="cpu")
    assert model.num_timesteps == 256
    from kartsim.cli import main as kartsim_main

    assert kartsim_main(["play", "--model", "fetched.zip", "--episodes", "1", "--max-steps", "50",
                         "--record", "x.gif", "--no-window"]) == 0
    assert (tmp_path / "x.gif").stat().st_size > 0


def test_killed_job_fails_with_reason_and_resumes_from_last_checkpoint(jobs_env, tmp_path, capsys):
    store = jobs_env
    job_id, ckpts, s = detached_job_with_checkpoint(run, capsys, store, "kill", TINY, 120)
    pid = job_record(store, job_id)["attempts"][0]["pid"]
    code, out, _ = run(capsys, "status", job_id)
    assert re.search(r"state:\s+running \(pid", out)

    os.killpg(pid, signal.SIGKILL)  # the wrapper and training die without writing an exit file
    from kartsim.jobs.local import process_alive

    wait_for(lambda: not process_alive(pid, None, job_id), 10, "the job to die")
    # its training process, if it outlived the wrapper, saves and stops (slowly on a loaded machine)
    wait_for(lambda: "saving and stopping" not in run(capsys, "status", job_id)[1], 120, "the training to stop")
    code, out, _ = run(capsys, "status", job_id)
    assert re.search(r"state:\s+failed: process died \(killed\?\)", out), out
    assert "resume" in out
    code, out, _ = run(capsys, "list")
    assert "failed" in out and "process died" in out
    survivors = sorted(ckpts.glob("kill_*_steps.zip"))
    assert survivors, "checkpoints survive the kill"

    last_steps = max(int(re.search(r"_(\d+)_steps", p.name).group(1)) for p in survivors
                     if steps_inside(s, f"runs/kill/checkpoints/{p.name}") is not None)

    # resume continues from the newest readable checkpoint, in the same run folder
    code, out, err = run(capsys, "resume", job_id, "--timesteps", "100000", "--detach")
    assert code == 0, err
    m = re.search(r"resumed job \S+ from (\S+) \(([\d,]+) steps\)", out)
    assert m and int(m.group(2).replace(",", "")) == last_steps
    assert m.group(1) == f"runs/kill/checkpoints/kill_{last_steps}_steps.zip"
    rec = job_record(store, job_id)
    assert len(rec["attempts"]) == 2 and rec["attempts"][1]["resume_from"] == m.group(1)
    log = store / "jobs" / job_id / "log.txt"
    wait_for(lambda: "Starting training" in log.read_text().partition("attempt 2 started")[2], 120,
             "the resumed training to start")
    assert f"Resuming model from {store / m.group(1)} ({last_steps:,} steps done)" in \
        (store / "jobs" / job_id / "log.txt").read_text()

    # cancel: training saves an _interrupted checkpoint and the job is cancelled
    code, out, _ = run(capsys, "cancel", job_id)
    assert code == 0 and "cancelled" in out
    code, out, _ = run(capsys, "status", job_id)
    assert re.search(r"state:\s+cancelled: cancelled by user", out), out
    interrupted = ckpts / "kill_interrupted.zip"
    assert interrupted.is_file()
    steps = steps_inside(s, "runs/kill/checkpoints/kill_interrupted.zip")
    assert steps >= last_steps

    # and a short resume from there, followed to its end (no --detach), finishes the job
    code, out, err = run(capsys, "resume", job_id, "--timesteps", str(steps + 128))
    assert code == 0, out + err
    assert "from runs/kill/checkpoints/kill_interrupted.zip" in out or f"_steps.zip ({steps:,} steps)" in out
    assert "attempt 3 started" in out and "attempt 2" not in out  # only the new attempt is streamed
    assert "Trained 128 steps" in out and f"job {job_id} succeeded" in out
    assert "fetch --path kill_final.zip" in out
    code, out, _ = run(capsys, "status", job_id)
    assert code == 0 and re.search(r"state:\s+succeeded", out), out
    from kartsim.rl.modelio import read_kartsim_config

    assert read_kartsim_config(store / "models" / "kill_final.zip")["num_timesteps"] >= steps + 128
    # a finished job resumes only towards a larger total
    code, _, err = run(capsys, "resume", job_id)
    assert code == 2 and "already finished" in err


# ------------------------------------------------------------------------------------ user errors

def _fake_store(store: Path) -> None:
    for rel in ("models/a_final.zip", "runs/a/a_final.zip", "runs/a/a_best.zip", "runs/a/telemetry_log.csv",
                "runs/b/telemetry_log.csv", "runs/a/checkpoints/a_128_steps.zip", "runs/a/tb/PPO_1/events.out.tfevents.1"):
        p = store / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)


def test_fetch_refuses_escapes_overwrites_and_ambiguity(jobs_env, tmp_path, capsys):
    store = jobs_env
    _fake_store(store)
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    (store / "runs" / "a" / "link.txt").symlink_to(secret)
    for bad in ("../../etc/passwd", "/etc/passwd", str(secret), "runs/../../secret.txt", "~/x", "runs/a/link.txt",
                "link.txt", "file:///etc/passwd", "..\\..\\etc\\passwd"):
        code, out, err = run(capsys, "fetch", "--path", bad, "--out", "got")
        assert code == 2, bad
        assert "escapes the job store" in err and err.count("\n") == 1, (bad, err)
    assert not (tmp_path / "got").exists()

    code, _, err = run(capsys, "fetch", "--path", "telemetry_log.csv")
    assert code == 2 and "ambiguous" in err and "runs/a/telemetry_log.csv" in err and "runs/b/telemetry_log.csv" in err
    code, _, err = run(capsys, "fetch", "--path", "runs/b/telemetry_log.csv", "--out", "b.csv")
    assert code == 0 and (tmp_path / "b.csv").read_text() == "runs/b/telemetry_log.csv"
    code, _, err = run(capsys, "fetch", "--path", "nothing_final.zip")
    assert code == 2 and "nothing to fetch" in err and "a_final.zip" in err

    # the final model is in models/ and in its run folder: the bare name picks models/
    (tmp_path / "a.zip").write_text("mine")
    code, _, err = run(capsys, "fetch", "--path", "a_final.zip", "--out", "a.zip")
    assert code == 2 and "already exists" in err
    assert (tmp_path / "a.zip").read_text() == "mine"
    code, _, err = run(capsys, "fetch", "--path", "a_final.zip", "--out", "a.zip", "--force")
    assert code == 0 and (tmp_path / "a.zip").read_text() == "models/a_final.zip"
    # the best evaluated model (kartsim train's periodic evaluation) is fetched by its name too
    code, _, err = run(capsys, "fetch", "--path", "a_best.zip", "--out", "best.zip")
    assert code == 0 and (tmp_path / "best.zip").read_text() == "runs/a/a_best.zip"
    # no --out: the file's own name here; a folder --out receives the file
    (tmp_path / "dl").mkdir()
    assert run(capsys, "fetch", "--path", "a_128_steps.zip", "--out", "dl")[0] == 0
    assert (tmp_path / "dl" / "a_128_steps.zip").is_file()
    assert run(capsys, "fetch", "--path", "runs/a/tb")[0] == 0
    assert (tmp_path / "tb" / "PPO_1" / "events.out.tfevents.1").is_file()


def test_unknown_job_lists_recent_ids(jobs_env, capsys):
    code, _, err = run(capsys, "status", "nope")
    assert code == 2 and "has no jobs yet" in err and err.count("\n") == 1
    from kartsim.jobs.store import Attempt, JobRecord, open_store, save_job

    s = open_store(jobs_env)
    for name in ("alpha-0001", "beta-0002"):
        job = JobRecord(id=name, backend="local", config={}, save_name=name[:-5], timesteps=10)
        job.attempts.append(Attempt(n=1, started="2026-01-01T00:00:00"))
        save_job(s, job)
    for cmd in (["status", "nope"], ["logs", "nope"], ["cancel", "nope"], ["resume", "nope"]):
        code, _, err = run(capsys, *cmd)
        assert code == 2 and "unknown job 'nope'" in err and "alpha-0001" in err and "beta-0002" in err, cmd
        assert err.count("\n") == 1
    # a unique prefix is enough; an ambiguous one says so
    code, out, _ = run(capsys, "status", "alp")
    assert code == 0 and "alpha-0001" in out and "process died" in out  # it never had a process
    code, _, err = run(capsys, "status", "")
    assert code == 2


def test_sync_rejects_a_bad_track_in_one_line(jobs_env, tmp_path, capsys):
    bad = tmp_path / "blank.png"
    Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(bad)  # all wall: no road
    code, out, err = run(capsys, "sync", "--track-name", str(bad))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not (jobs_env / "tracks" / "blank.png").exists()
    notpng = tmp_path / "fake.png"
    notpng.write_text("not an image")
    code, _, err = run(capsys, "sync", "--track-name", str(notpng))
    assert code == 2 and "not an image" in err
    code, _, err = run(capsys, "sync", "--track-name", "no-such-track.png")
    assert code == 2 and "not found" in err
    # train refuses the same track before starting anything
    code, _, err = run(capsys, "train", "--track-name", str(bad), "--timesteps", "64", "--detach")
    assert code == 2 and err.count("\n") == 1
    assert not list(jobs_env.glob("jobs/*"))


def test_sync_generates_missing_checkpoints(jobs_env, tmp_path, capsys):
    import shutil

    from kartsim.sim.track import BUNDLED_DIR

    own = tmp_path / "mytrack.png"
    shutil.copyfile(BUNDLED_DIR / "oval.png", own)  # no checkpoints file next to it
    code, out, _ = run(capsys, "sync", "--track-name", str(own))
    assert code == 0 and "generated automatically" in out
    stored = re.search(r"synced (mytrack-[0-9a-f]{8}\.png):", out).group(1)  # named by its content
    data = json.loads((jobs_env / "tracks" / stored.replace(".png", ".checkpoints.json")).read_text())
    assert data["track"] == stored and len(data["gates"]) > 5


def test_eval_tracks_are_synced_with_the_job(jobs_env, tmp_path, capsys):
    """--eval-tracks PNGs travel with the job as --track-name ones do (a Ray worker has only the store)."""
    import shutil

    from kartsim.sim.track import BUNDLED_DIR

    own = tmp_path / "evalme.png"
    shutil.copyfile(BUNDLED_DIR / "oval.png", own)
    code, out, err = run(capsys, "train", "--track-name", "oval.png", "--eval-tracks", str(own), "--timesteps", "128",
                         "--eval-freq", "128", "--save-name", "ev", *TINY, "--detach")
    assert code == 0, err
    stored = re.search(r"synced track (evalme-[0-9a-f]{8}\.png)", out).group(1)
    job_id = re.search(r"started job (\S+)", out).group(1)
    assert job_record(jobs_env, job_id)["config"]["eval.eval_tracks"] == [stored]
    own.unlink()  # the job evaluates on the store's copy
    code, out, _ = run(capsys, "status", job_id, "--wait", "--timeout", "180")
    assert code == 0 and re.search(r"state:\s+succeeded", out), out
    assert stored in (jobs_env / "jobs" / job_id / "log.txt").read_text()


def test_train_flag_errors_start_nothing(jobs_env, capsys):
    for argv, msg in ((["--batch-size", "7"], "--batch-size 7"), (["--runs-dir", "x"], "--runs-dir cannot be used"),
                      (["--resume", "x.zip"], "use `resume JOB`"), (["--frame-stack", "4"], "only applies to vision")):
        code, _, err = run(capsys, "train", "--timesteps", "64", *argv, "--detach")
        assert code == 2 and msg in err and err.count("\n") == 1, (argv, err)
    (jobs_env / "runs" / "taken").mkdir(parents=True)
    code, _, err = run(capsys, "train", "--timesteps", "64", "--save-name", "taken", "--detach")
    assert code == 2 and "already exists in the job store; pass --force" in err
    assert not list(jobs_env.glob("jobs/*"))


def test_train_flags_round_trip_every_train_flag():
    """A job's recorded settings (given_train_values) give back the command line that set them
    (train_flags: what `status` shows), and a job record of the old argv layout reads as the same dict."""
    import argparse

    from kartsim.jobs.service import given_train_values
    from kartsim.jobs.store import JobRecord
    from kartsim.rl.train_cmd import add_train_arguments, train_flags

    argv = ["--vision", "--track-name", "circuit.png", "oval", "--timesteps", "5_000_000", "--save-name", "v1",
            "--vector-envs", "16", "--checkpoint-freq", "500000", "--tensorboard", "--learning-rate", "0.0001",
            "--batch-size", "512", "--features-dim", "1024", "--frame-stack", "4", "--grayscale", "--no-progress",
            "--env-option", "max_episode_steps=3000", "--env-option", "camera=\"driver\"", "--seed", "3"]
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    args = p.parse_args(argv)
    values = given_train_values(args)
    assert values["task.track"] == ["circuit.png", "oval"] and values["run.timesteps"] == 5_000_000
    assert values["task.env_options"] == {"max_episode_steps": 3000, "camera": "driver"}
    again = p.parse_args(train_flags(values))
    assert vars(again) == vars(args)
    old = {"id": "j", "backend": "local", "argv": argv, "save_name": "v1", "timesteps": 5_000_000,
           "attempts": [{"n": 1, "started": "now"}]}
    assert JobRecord.from_dict(old).config == values
    with pytest.raises(Exception, match="job.json is damaged"):
        JobRecord.from_dict(dict(old, argv=["--no-such-flag"]))


def test_config_precedence_and_backend_errors(jobs_env, tmp_path, monkeypatch, capsys):
    from kartsim.jobs.config import resolve_settings

    (tmp_path / "config" / "kartsim").mkdir(parents=True)
    (tmp_path / "config" / "kartsim" / "jobs.json").write_text(json.dumps({"backend": "ray", "address": "10.0.0.9:8265"}))
    (tmp_path / "kartsim-jobs.json").write_text(json.dumps({"address": "127.0.0.1:1234"}))
    s = resolve_settings()
    assert s.backend == "ray" and s.address == "http://127.0.0.1:1234" and s.store == str(jobs_env)
    monkeypatch.setenv("KARTSIM_RAY_ADDRESS", "http://127.0.0.1:4321")
    assert resolve_settings().address == "http://127.0.0.1:4321"
    assert resolve_settings(address="127.0.0.1:9", backend="local").backend == "local"
    (tmp_path / "kartsim-jobs.json").write_text(json.dumps({"colour": "red"}))
    code, _, err = run(capsys, "list")
    assert code == 2 and "unknown key(s) colour" in err
    (tmp_path / "kartsim-jobs.json").unlink()
    code, _, err = run(capsys, "list", "--backend", "ray", "--address", "ray://x:10001")
    assert code == 2 and "not a ray:// client address" in err
    # a remote cluster needs a storage every node can see
    monkeypatch.delenv("KARTSIM_JOB_STORE")
    code, _, err = run(capsys, "train", "--backend", "ray", "--address", "http://10.1.2.3:8265", "--detach")
    assert code == 2 and "needs --storage" in err


def test_ray_backend_without_ray_says_how_to_install(jobs_env, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray.job_submission", None)  # import fails as if Ray were missing
    code, _, err = run(capsys, "train", "--backend", "ray", "--address", "http://127.0.0.1:9", "--timesteps", "64",
                       "--detach")
    assert code == 2 and "pip install 'kartsim[ray]'" in err and err.count("\n") == 1


def test_ctrl_c_on_a_followed_job_detaches_without_a_terminal(monkeypatch, capsys):
    from kartsim.cli import jobs_cmd

    class FakeBackend:
        cancelled = False

        def cancel(self, job, grace_s=60.0):
            FakeBackend.cancelled = True
            from kartsim.jobs.store import JobState

            return JobState("cancelled", "cancelled by user")

    class Job:
        id = "j-1"

    args = type("A", (), {"prog": "kartsim jobs", "store": None})()
    assert jobs_cmd._on_interrupt(args, Job(), FakeBackend(), stdin=io.StringIO("y\n")) == 0  # not a TTY
    out = capsys.readouterr().out
    assert "detached: job j-1 keeps running" in out and "kartsim jobs logs j-1 --follow" in out
    assert not FakeBackend.cancelled

    class Tty(io.StringIO):
        def isatty(self):
            return True

    for answer, cancelled, code in (("n", False, 0), ("", False, 0), ("y", True, 130)):
        FakeBackend.cancelled = False
        monkeypatch.setattr("builtins.input", lambda prompt, a=answer: a)
        assert jobs_cmd._on_interrupt(args, Job(), FakeBackend(), stdin=Tty()) == code
        assert FakeBackend.cancelled is cancelled


@pytest.mark.parametrize("detach", [False, True])
def test_ctrl_c_while_a_started_job_is_announced_detaches_too(detach, capsys):
    """A Ctrl-C that lands after the job id is printed but before following has begun (a loaded
    machine: the follower preempted right after its first lines) is handled like one while following,
    not a bare "interrupted" (exit 130) with the job left running unannounced."""
    from kartsim.cli import jobs_cmd

    class Backend:
        store = None

        def cancel(self, job, grace_s=60.0):
            raise AssertionError("a Ctrl-C without a terminal must not cancel the job")

    class Job:
        id = "j-1"

    def announce():
        print("started job j-1 (local, pid 1)")
        raise KeyboardInterrupt  # SIGINT between the announcement and the follow loop

    args = type("A", (), {"prog": "kartsim jobs", "store": None, "detach": detach})()
    assert jobs_cmd._stream(args, Job(), Backend(), announce) == 0
    assert "detached: job j-1 keeps running" in capsys.readouterr().out


def test_ctrl_c_while_a_job_is_launched_keeps_its_record_and_pid(jobs_env, monkeypatch, capsys):
    """SIGINT after the job's process started but before launch returned: the job stays recorded with
    its pid (not removed: an orphan; not pid-less: "process died" in status) and the Ctrl-C is still
    delivered right after, to the same handling as one while following (no terminal: detach)."""
    from kartsim.jobs import service
    from kartsim.jobs.local import LocalBackend, process_alive

    launch = LocalBackend.launch

    def interrupted_launch(self, job, attempt):
        launch(self, job, attempt)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the job's process runs already

    monkeypatch.setattr(LocalBackend, "launch", interrupted_launch)
    code, out, err = run(capsys, "train", "--timesteps", "1000000", "--save-name", "sigint", *TINY, "--detach")
    assert code == 0, out + err
    m = re.search(r"started job (\S+) \(local, pid (\d+)\)", out)
    assert m, out
    job_id, pid = m.group(1), int(m.group(2))
    assert f"detached: job {job_id} keeps running" in out  # the Ctrl-C was delivered, after the announcement
    a = job_record(jobs_env, job_id)["attempts"][0]
    assert a["pid"] == pid and process_alive(pid, a["start_token"], job_id)
    code, out, _ = run(capsys, "status", job_id)
    assert re.search(rf"state:\s+running \(pid {pid}\)", out), out
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works as before again

    # the service on its own: the KeyboardInterrupt comes out of submit once the pid is saved
    import argparse

    from kartsim.rl.train_cmd import add_train_arguments
    from kartsim.jobs.config import resolve_settings

    p = argparse.ArgumentParser()
    add_train_arguments(p)
    args = p.parse_args(["--timesteps", "1000000", "--save-name", "sigint2", *TINY])
    with pytest.raises(KeyboardInterrupt) as info:
        service.submit(resolve_settings(), args, echo=lambda _: None)
    job, _ = info.value.result
    a = job_record(jobs_env, job.id)["attempts"][0]
    assert a["pid"] == job.attempt.pid and process_alive(a["pid"], a["start_token"], job.id)
    # (jobs_env kills both job processes)


def test_process_alive_checks_identity():
    from kartsim.jobs.local import process_alive, start_token

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        token = start_token(proc.pid)
        assert token is not None
        assert not process_alive(proc.pid, token, "job-1")  # alive, but not our wrapper
        assert not process_alive(None, None, "job-1")
    finally:
        proc.kill()
        proc.wait()
    assert not process_alive(proc.pid, token, "job-1")


def test_remote_store_uri_and_mirror(tmp_path):
    """A job store behind a URI (fsspec; file:// here, s3:// etc. alike): read, write, fetch, mirror."""
    from kartsim.jobs.runner import Mirror
    from kartsim.jobs.service import fetch
    from kartsim.jobs.store import RemoteStore, open_store

    s = open_store((tmp_path / "remote").as_uri())
    assert isinstance(s, RemoteStore)
    scratch = tmp_path / "scratch"
    (scratch / "runs" / "m" / "checkpoints").mkdir(parents=True)
    (scratch / "runs" / "m" / "checkpoints" / "m_64_steps.zip").write_text("ck")
    (scratch / "models").mkdir()
    (scratch / "models" / "m_final.zip").write_text("final")
    old = time.time() - 5
    for f in scratch.rglob("*"):
        os.utime(f, (old, old))
    mirror = Mirror(s, scratch, ["runs/m", "models/m_final.zip"])
    mirror.sync()
    assert (tmp_path / "remote" / "runs" / "m" / "checkpoints" / "m_64_steps.zip").read_text() == "ck"
    s.write_json("jobs/x/job.json", {"a": 1})
    assert s.read_json("jobs/x/job.json") == {"a": 1} and s.list("jobs") == ["x"]
    rel, dest = fetch(s, "m_final.zip", str(tmp_path / "got.zip"), force=False)
    assert rel == "models/m_final.zip" and dest.read_text() == "final"
    from kartsim.jobs.store import JobError

    with pytest.raises(JobError, match="escapes"):
        fetch(s, "../../etc/passwd", str(tmp_path / "p"), force=False)


@pytest.mark.parametrize("config, problem", [
    ({"ppo.gama": 0.9}, "unknown config key 'ppo.gama'"),
    ({"ppo.gamma": "abc"}, "--gamma must be a finite number, not 'abc'"),  # a bad value, not only a bad key
    ({"task.env_options": {"action_repeat": 0}}, "race.action_repeat must be between 1 and 100, not 0"),
])
def test_resume_names_a_hand_edited_config_in_job_json(jobs_env, capsys, config, problem):
    from kartsim.jobs.store import Attempt, JobRecord, open_store, save_job

    job = JobRecord(id="edit-0001", backend="local", config=config, save_name="edit", timesteps=10)
    job.attempts.append(Attempt(n=1, started="2026-01-01T00:00:00"))
    save_job(open_store(jobs_env), job)
    code, _, err = run(capsys, "resume", "edit-0001", "--timesteps", "100")
    assert code == 2 and err.count("\n") == 1, err
    assert f"job.json: its 'config' is not a training config ({problem}" in err
    assert len(job_record(jobs_env, "edit-0001")["attempts"]) == 1  # no attempt started only to fail
