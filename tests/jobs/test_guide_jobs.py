"""Issue 18, jobs side: fetch takes the latest job's file and says so (item 1), a final model brings its
run's telemetry beside it (item 1), fetch of a running job's model says it is running and a finished
job's status reads as finished (item 11), and the wording that maps the guide's Modal steps (item 4)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


from kartsim.cli.jobs_cmd import main as jobs_main
from kartsim.jobs.store import now_iso


def put(root: Path, rel: str, text: str | None = None) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(rel if text is None else text)


def fake_job(root: Path, job_id: str, save_name: str, created: str, pid: int | None = None, exit_code: int | None = 0,
             progress: dict | None = None) -> None:
    attempt = {"n": 1, "started": created, "pid": pid}
    put(root, f"jobs/{job_id}/job.json", json.dumps({
        "id": job_id, "backend": "local", "argv": ["--save-name", save_name], "save_name": save_name,
        "timesteps": 1000, "created": created, "attempts": [attempt]}))
    if exit_code is not None:
        put(root, f"jobs/{job_id}/attempt-1.exit.json", json.dumps({"state": "succeeded", "reason": "finished", "exit_code": exit_code, "ended": created}))
    if progress is not None:
        put(root, f"jobs/{job_id}/progress.json", json.dumps(progress))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = jobs_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_fetch_takes_the_latest_jobs_file_and_says_so(job_store, tmp_path, capsys):
    for name in ("old", "new"):
        put(job_store, f"runs/{name}/telemetry_log.csv")
    fake_job(job_store, "new-0001", "new", "2026-01-02T00:00:00")
    fake_job(job_store, "old-0002", "old", "2026-01-01T00:00:00")
    code, out, err = run(capsys, "fetch", "--path", "telemetry_log.csv")
    assert code == 0, err
    assert (tmp_path / "telemetry_log.csv").read_text() == "runs/new/telemetry_log.csv"
    assert "latest job's (new-0001)" in out and "--job" in out
    code, out, err = run(capsys, "fetch", "--path", "telemetry_log.csv", "--job", "old", "--out", "old.csv")
    assert code == 0 and (tmp_path / "old.csv").read_text() == "runs/old/telemetry_log.csv"


def test_fetching_a_final_model_brings_its_telemetry_beside_it(job_store, tmp_path, capsys):
    put(job_store, "models/v1_final.zip")
    put(job_store, "runs/v1/v1_final.zip")
    put(job_store, "runs/v1/telemetry_log.csv")
    fake_job(job_store, "v1-0001", "v1", "2026-01-01T00:00:00")
    # local training left a link to its own run's CSV: the link is replaced, the local CSV kept
    local = tmp_path / "runs" / "local" / "telemetry_log.csv"
    put(tmp_path, "runs/local/telemetry_log.csv", "local")
    (tmp_path / "telemetry_log.csv").symlink_to("runs/local/telemetry_log.csv")
    code, out, err = run(capsys, "fetch", "--path", "v1_final.zip", "--out", "v1.zip")
    assert code == 0, err
    link = tmp_path / "telemetry_log.csv"
    assert not link.is_symlink() and link.read_text() == "runs/v1/telemetry_log.csv"
    assert local.read_text() == "local"
    assert "the run's telemetry" in out
    # a real file is the user's: kept without --force, replaced with it
    link.write_text("mine")
    assert run(capsys, "fetch", "--path", "v1_final.zip", "--out", "v1.zip", "--force")[0] == 0
    assert link.read_text() == "runs/v1/telemetry_log.csv"
    link.write_text("mine")
    (tmp_path / "v1.zip").unlink()
    code, out, _ = run(capsys, "fetch", "--path", "v1_final.zip", "--out", "v1.zip")
    assert code == 0 and link.read_text() == "mine" and "kept" in out


def test_fetch_of_a_running_jobs_model_says_it_is_running(job_store, capsys):
    # a process that looks like the job's runner (the local backend checks the command line)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "kartsim.jobs.runner", "run-0001"])
    try:
        fake_job(job_store, "run-0001", "run", now_iso(), pid=proc.pid, exit_code=None)
        code, _, err = run(capsys, "fetch", "--path", "run_final.zip")
        assert code == 2 and "nothing to fetch" in err
        assert "job run-0001 is still running" in err and "status run-0001" in err
        assert err.count("\n") == 1
    finally:
        proc.kill()
        proc.wait()


def test_a_finished_jobs_status_reads_finished(job_store, capsys):
    fake_job(job_store, "done-0001", "done", "2026-01-01T00:00:00",
             progress={"num_timesteps": 1024, "total_timesteps": 1000, "steps_per_second": 500.0, "eta_s": 0})
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert "(100%)" in out and "102%" not in out
    assert "checkpoints: none\n" in out.replace("  ", " ").replace("  ", " ")
    assert "none yet" not in out


def test_train_help_says_local_or_ray_not_modal():
    import os
    import subprocess

    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, str(root / "tools" / "track_cli.py"), "train", "--help"], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(root), COLUMNS="200"))
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    assert "Remote Training (Modal)" in text and "local backend" in text and "Ray cluster" in text
    assert "not on Modal" in text


def test_fetch_of_a_run_name_zip_takes_its_final_model(job_store, tmp_path, capsys):
    """The guide's `fetch --path ppo_50m_master.zip --force`: kartsim names it ppo_50m_master_final.zip."""
    put(job_store, "models/ppo_50m_master_final.zip")
    code, out, err = run(capsys, "fetch", "--path", "ppo_50m_master.zip", "--force")
    assert code == 0, err
    assert (tmp_path / "ppo_50m_master.zip").read_text() == "models/ppo_50m_master_final.zip"
    assert "final model of run 'ppo_50m_master'" in out
    code, _, err = run(capsys, "fetch", "--path", "other.zip")
    assert code == 2 and "nothing to fetch" in err
