"""The wrapper process a job runs as (both backends):
``python -m kartsim.jobs.runner --store LOCATION --job ID --attempt N [--tracks-dir DIR] [--tee]``.

It reads the job record from the store, starts the training process (`kartsim.jobs.worker`, i.e.
`kartsim train` with the job's flags, ``--runs-dir``/``--models-dir`` in the store and, on a resume,
``--resume <checkpoint>``) in the tracks folder, waits for it, and writes
``jobs/<id>/attempt-<N>.exit.json`` (exit code, signal, reason, end time). A job whose wrapper is
killed never writes that file; the backends report it as failed ("process died").

With a remote store (``s3://...``) training writes to a scratch folder that is mirrored to the store
every few seconds (checkpoints survive a lost node) and once more at the end. A cancel request
(``attempt-<N>.cancel`` in the store) makes it send SIGINT to training, which saves
``<name>_interrupted.zip`` and stops.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from kartsim.jobs.store import (Attempt, JobRecord, LocalStore, Store, cancel_rel, exit_rel, log_rel, now_iso,
                                open_store, progress_rel, runner_rel)

CANCEL_POLL_S = 1.0
CANCEL_KILL_AFTER_S = 120.0
MIRROR_EVERY_S = 10.0


class Mirror:
    """Copies new / changed files of a scratch folder to the same paths in a remote store."""

    def __init__(self, store: Store, scratch: Path, roots: list[str]) -> None:
        self.store, self.scratch, self.roots = store, scratch, roots
        self.sent: dict[str, tuple[int, int]] = {}

    def sync(self, final: bool = False) -> None:
        now = time.time()
        for root in self.roots:
            base = self.scratch / root
            files = [base] if base.is_file() else (sorted(base.rglob("*")) if base.is_dir() else [])
            for f in files:
                if not f.is_file() or f.name.startswith("."):
                    continue
                st = f.stat()
                key = (st.st_size, st.st_mtime_ns)
                rel = f.relative_to(self.scratch).as_posix()
                if self.sent.get(rel) == key or (not final and now - st.st_mtime < 1.0):
                    continue  # unchanged, or still being written
                try:
                    self.store.upload(f, rel)
                    self.sent[rel] = key
                except Exception as exc:  # a flaky network must not kill training
                    print(f"[job] warning: could not copy {rel} to the store: {exc}", flush=True)


def _reason(code: int, cancelled: bool, tail: list[str]) -> str:
    if cancelled:
        return "cancelled by user"
    if code == 0:
        return "finished"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"training process killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    if code == 130:
        return "interrupted (SIGINT/SIGTERM)"
    errors = [line[len("error: "):] for line in tail if line.startswith("error: ")]
    if errors:
        return errors[-1]
    lines = [line for line in tail if line.strip() and not line.startswith(("[progress]", "==="))]
    return f"exit code {code}" + (f": {lines[-1].strip()[:300]}" if lines else "")


def _read_tail(path: Path, n: int = 40) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            return fh.read().decode("utf-8", "replace").splitlines()[-n:]
    except OSError:
        return []


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kartsim.jobs.runner")
    parser.add_argument("--store", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--attempt", type=int, required=True)
    parser.add_argument("--tracks-dir", default=None, help="folder of the synced tracks (default <store>/tracks)")
    parser.add_argument("--tee", action="store_true", help="copy the training output to the store's log.txt too")
    return parser.parse_args(argv)


def _prepare_work(store: Store, job: JobRecord, attempt: Attempt) -> tuple[Path, Path | None]:
    """The folder training writes to (the store itself, or a scratch copy of what a remote store holds)."""
    if isinstance(store, LocalStore):
        return store.root, None
    scratch = Path(tempfile.mkdtemp(prefix=f"kartsim-job-{job.id}-"))
    run_rel = f"runs/{job.save_name}"
    if attempt.resume_from:  # the run folder, but of the checkpoints only the one we resume from
        for rel in store.files(run_rel):
            if "/checkpoints/" not in rel or rel == attempt.resume_from:
                store.download(rel, scratch / rel)
    for rel in (log_rel(job.id),):
        if store.exists(rel):
            store.download(rel, scratch / rel)
    return scratch, scratch


def _train_cmd(job: JobRecord, attempt: Attempt, work: Path, progress: Path) -> list[str]:
    """The training process: the job's train config plus what this attempt sets (its folders, no
    progress bar or ./telemetry_log.csv link, the checkpoint it resumes and the new total)."""
    config = {**job.config, "run.runs_dir": str(work / "runs"), "run.models_dir": str(work / "models"),
              "run.progress_bar": False, "run.telemetry_link": False}
    if attempt.resume_from:
        config["run.resume"] = str(work / attempt.resume_from)
    if attempt.timesteps:
        config["run.timesteps"] = attempt.timesteps
    return [sys.executable, "-u", "-m", "kartsim.jobs.worker", "--progress-file", str(progress),
            "--config", json.dumps(config)]


def _start_pump(child: subprocess.Popen, log_file: BinaryIO, tail: collections.deque[str]) -> threading.Thread:
    """--tee: child output -> our stdout (Ray's log) + the store's log.txt (and the tail for the reason)."""
    def pump() -> None:
        assert child.stdout is not None
        for raw in iter(child.stdout.readline, b""):
            sys.stdout.buffer.write(raw)
            sys.stdout.flush()
            log_file.write(raw)
            log_file.flush()
            tail.append(raw.decode("utf-8", "replace").rstrip("\n"))

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    return pumper


def _forward_signals(child: subprocess.Popen) -> None:
    # Ctrl-C / killpg(SIGINT) reaches training, which saves and stops; we wait for it.
    signal.signal(signal.SIGINT, lambda *_: None)

    def on_term(signum, frame):
        try:
            child.send_signal(signal.SIGTERM)
        except OSError:
            pass

    signal.signal(signal.SIGTERM, on_term)


def _wait(child: subprocess.Popen, store: Store, job: JobRecord, attempt: Attempt,
          say: Callable[[str], None], mirror: Mirror | None) -> int:
    """Waits for training, passing on a cancel request (SIGINT, then a kill) and mirroring the scratch folder."""
    cancel_sent: float | None = None
    next_poll = next_mirror = time.monotonic()
    while True:
        try:
            return child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now >= next_poll:
            next_poll = now + CANCEL_POLL_S
            if cancel_sent is None:
                try:
                    if store.exists(cancel_rel(job.id, attempt.n)):
                        say("[job] cancel requested: stopping training (it saves an _interrupted checkpoint)")
                        child.send_signal(signal.SIGINT)
                        cancel_sent = now
                except Exception:
                    pass
            elif now - cancel_sent > CANCEL_KILL_AFTER_S:
                child.kill()
        if mirror and now >= next_mirror:
            next_mirror = now + MIRROR_EVERY_S
            mirror.sync()


def _signal_name(code: int) -> str | None:
    if code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return str(-code)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    store = open_store(args.store)
    data = store.read_json(f"jobs/{args.job}/job.json")
    if not isinstance(data, dict):
        print(f"error: no job {args.job} in the job store {store.location}", flush=True)
        return 2
    job = JobRecord.from_dict(data)
    attempt = next((a for a in job.attempts if a.n == args.attempt), None)
    if attempt is None:
        print(f"error: job {job.id} has no attempt {args.attempt}", flush=True)
        return 2
    host = socket.gethostname()

    work, scratch = _prepare_work(store, job, attempt)
    tracks_dir = Path(args.tracks_dir) if args.tracks_dir else work / "tracks"
    tracks_dir.mkdir(parents=True, exist_ok=True)
    progress = work / progress_rel(job.id)
    progress.parent.mkdir(parents=True, exist_ok=True)
    cmd = _train_cmd(job, attempt, work, progress)

    log_path = work / log_rel(job.id)
    log_file = open(log_path, "ab") if args.tee else None

    def say(text: str) -> None:
        line = (text + "\n").encode()
        sys.stdout.buffer.write(line)
        sys.stdout.flush()
        if log_file is not None:
            log_file.write(line)
            log_file.flush()

    from kartsim.rl.train_cmd import train_flags

    what = f"resuming from {attempt.resume_from}" if attempt.resume_from else shlex.join(["kartsim", "train",
                                                                                           *train_flags(job.config)])
    say(f"=== job {job.id} attempt {attempt.n} started {now_iso()} on {host} ({job.backend} backend): {what} ===")

    env = dict(os.environ, PYTHONUNBUFFERED="1", KARTSIM_JOB_RUNNER_PID=str(os.getpid()))
    child = subprocess.Popen(cmd, cwd=tracks_dir, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE if args.tee else None,
                             stderr=subprocess.STDOUT if args.tee else None)
    store.write_json(runner_rel(job.id, attempt.n), {"pid": os.getpid(), "pgid": os.getpgid(0), "child_pid": child.pid,
                                                     "host": host, "started": now_iso()})
    tail: collections.deque[str] = collections.deque(maxlen=40)
    pumper = _start_pump(child, log_file, tail) if log_file is not None else None
    _forward_signals(child)

    mirror = Mirror(store, work, [f"runs/{job.save_name}", f"models/{job.save_name}_final.zip",
                                  f"models/{job.save_name}_best.zip",
                                  progress_rel(job.id), log_rel(job.id)]) if scratch else None
    code = _wait(child, store, job, attempt, say, mirror)
    if pumper:
        pumper.join(timeout=5)

    cancelled = store.exists(cancel_rel(job.id, attempt.n))
    lines = list(tail) if args.tee else _read_tail(log_path)
    reason = _reason(code, cancelled, lines)
    state = "succeeded" if code == 0 else ("cancelled" if cancelled else "failed")
    say(f"=== job {job.id} attempt {attempt.n} {state} {now_iso()}: {reason} (exit code {code}) ===")
    if log_file is not None:
        log_file.close()
    if mirror:
        mirror.sync(final=True)
    store.write_json(exit_rel(job.id, attempt.n), {
        "attempt": attempt.n, "exit_code": code, "signal": _signal_name(code), "state": state, "reason": reason,
        "cancelled": cancelled, "ended": now_iso(), "host": host,
    })
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    if code == 0:
        return 0
    return code if code > 0 else 128 + (-code)


if __name__ == "__main__":
    sys.exit(main())
