"""The ``local`` backend: each job is a detached process on this machine.

The job wrapper (`kartsim.jobs.runner`) starts in a new session (its own process group, no
controlling terminal: closing the terminal does not stop it) with its output appended to
``jobs/<id>/log.txt``. Its state is derived, never trusted from a file alone:

* running   - the recorded pid is alive, not a zombie, has the recorded start time (no pid reuse) and
              its command line is our wrapper for this job;
* otherwise - the wrapper's ``attempt-<n>.exit.json`` (succeeded / failed / cancelled with a reason);
              no such file -> failed, "process died (killed?)" (cancelled when a cancel was asked).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from kartsim.jobs.store import (Attempt, JobError, JobRecord, LocalStore, cancel_rel, exit_rel, job_dir,
                                log_rel, now_iso, runner_rel)
from kartsim.jobs.store import JobState

RUNNER_MODULE = "kartsim.jobs.runner"
WORKER_MODULE = "kartsim.jobs.worker"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 = state first); None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def start_token(pid: int) -> str | None:
    """The process start time (clock ticks since boot) from /proc: with the pid, it names one process."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def process_alive(pid: int | None, token: str | None, job_id: str) -> bool:
    """True when `pid` is our job wrapper for `job_id`, still running (not a zombie)."""
    if not pid:
        return False
    if Path("/proc/self/stat").exists():
        fields = _proc_stat(pid)
        if not fields or fields[0] in ("Z", "X", "x"):
            return False
        if token and len(fields) > 19 and fields[19] != token:
            return False  # the pid now belongs to another process
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return RUNNER_MODULE.encode() in cmdline and job_id.encode() in cmdline
    try:  # no /proc (macOS): the pid alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalBackend:
    name = "local"

    def __init__(self, store) -> None:
        if not isinstance(store, LocalStore):
            raise JobError(f"the local backend needs a folder as the job store, not {store.location}; "
                           "use --backend ray for remote storage")
        self.store = store

    def check(self) -> None:
        self.store.root.mkdir(parents=True, exist_ok=True)

    def describe(self, job: JobRecord) -> str:
        return f"local, pid {job.attempt.pid}" if job.attempts and job.attempt.pid else "local"

    def launch(self, job: JobRecord, attempt: Attempt) -> None:
        store = self.store
        (store.p(job_dir(job.id))).mkdir(parents=True, exist_ok=True)
        (store.root / "tracks").mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-u", "-m", RUNNER_MODULE, "--store", store.location, "--job", job.id,
               "--attempt", str(attempt.n)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            with open(store.p(log_rel(job.id)), "ab") as log:
                proc = subprocess.Popen(cmd, cwd=store.root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise JobError(f"cannot start the job process ({sys.executable}): {exc.strerror or exc}") from None
        attempt.pid = proc.pid
        attempt.start_token = start_token(proc.pid)
        # Reap it when it ends if this process lives that long (tests, a followed job): no zombie.
        threading.Thread(target=proc.wait, daemon=True).start()

    def state(self, job: JobRecord) -> JobState:
        a = job.attempt
        ex = self.store.read_json(exit_rel(job.id, a.n))
        if isinstance(ex, dict):
            return JobState.from_exit(ex)
        if process_alive(a.pid, a.start_token, job.id):
            cancelling = self.store.exists(cancel_rel(job.id, a.n))
            return JobState("running", "cancel requested, stopping" if cancelling else "", pid=a.pid)
        ex = self.store.read_json(exit_rel(job.id, a.n))  # it may have ended just now
        if isinstance(ex, dict):
            return JobState.from_exit(ex)
        trainer = self._orphaned_trainer(job)
        if trainer:  # the wrapper was killed; its training process saves and stops (kartsim.jobs.worker)
            return JobState("running", "its wrapper died: training is saving and stopping", pid=trainer)
        if self.store.exists(cancel_rel(job.id, a.n)):
            return JobState("cancelled", "cancelled by user (process killed before it could save)")
        return JobState("failed", "process died (killed?)")

    def _orphaned_trainer(self, job: JobRecord) -> int | None:
        """The pid of the attempt's training process when it outlives its wrapper, else None."""
        info = self.store.read_json(runner_rel(job.id, job.attempt.n))
        pid = info.get("child_pid") if isinstance(info, dict) else None
        if not isinstance(pid, int) or isinstance(pid, bool) or not Path(f"/proc/{pid}/cmdline").exists():
            return None
        fields = _proc_stat(pid)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if fields and fields[0] not in "ZXx" else []
        return pid if WORKER_MODULE.encode() in cmdline else None

    def cancel(self, job: JobRecord, grace_s: float = 60.0) -> JobState:
        """Ask the wrapper to stop training (it sends SIGINT: an _interrupted checkpoint is saved);
        after `grace_s` without an end, SIGTERM then SIGKILL the process group."""
        a = job.attempt
        self.store.write_text(cancel_rel(job.id, a.n), now_iso() + "\n")
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and process_alive(a.pid, a.start_token, job.id):
            time.sleep(0.2)
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            if not process_alive(a.pid, a.start_token, job.id):
                break
            try:
                os.killpg(a.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            end = time.monotonic() + wait
            while time.monotonic() < end and process_alive(a.pid, a.start_token, job.id):
                time.sleep(0.2)
        return self.state(job)
