"""The job operations behind ``kartsim jobs ...``: submit, state, logs, cancel, resume, fetch.

A backend (`kartsim.jobs.local.LocalBackend`, `kartsim.jobs.ray_backend.RayBackend`) has
``check()``, ``launch(job, attempt)``, ``state(job) -> JobState``, ``cancel(job, grace_s)`` and
``describe(job)``; everything else is shared and works on the job store.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from kartsim.errors import ConfigError
from kartsim.jobs.config import Settings, is_loopback
from kartsim.jobs.store import (Attempt, JobError, JobRecord, LocalStore, Store, checkpoints_of,
                                JobState, find_in_store, job_ids, load_job, log_rel, new_job_id, now_iso, open_store,
                                progress_rel, save_job, steps_inside)


class StartInterrupted(KeyboardInterrupt):
    """Ctrl-C while a job was being started: it was started and recorded all the same. `result` is
    what `submit` / `resume` would have returned, so the caller can still offer to stop it."""

    def __init__(self, result: tuple) -> None:
        super().__init__()
        self.result = result


@contextmanager
def _sigint_held() -> Iterator[list[int]]:
    """Hold Ctrl-C off for the block; the list it yields tells whether one came (the caller raises it).

    A handler that only records, not `pthread_sigmask`: a blocked signal mask is inherited by the job's
    process through exec, and then `cancel` (SIGINT: save a checkpoint, stop) would no longer reach
    training. Left alone off the main thread or when SIGINT is not Python's default handler (ignored
    in a background shell job, or someone else's handler).
    """
    caught: list[int] = []
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield caught
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield caught
    finally:
        signal.signal(signal.SIGINT, previous)


# ------------------------------------------------------------------------------------- backends

def open_settings_store(settings: Settings) -> Store:
    if settings.backend == "ray" and "store" not in settings.explicit and not is_loopback(settings.address):
        raise ConfigError(f"the ray backend at {settings.address} needs --storage: a folder every node and this "
                          "machine can reach (e.g. /shared/kartsim-jobs) or a URI such as s3://bucket/kartsim")
    return open_store(settings.store)


def make_backend(name: str, store: Store, settings: Settings, address: str | None = None):
    if name == "local":
        from kartsim.jobs.local import LocalBackend

        return LocalBackend(store)
    if name == "ray":
        from kartsim.jobs.ray_backend import RayBackend

        # the address given now (flag / env / config) wins over the recorded one
        addr = settings.address if ("address" in settings.explicit or not address) else address
        return RayBackend(store, addr, settings)
    raise JobError(f"unknown backend {name!r} in the job record; use local or ray")


def backend_of(store: Store, settings: Settings, job: JobRecord):
    return make_backend(job.backend, store, settings, job.address)


# ---------------------------------------------------------------------------------- train flags

# Settings a job sets itself (they name folders on the machine that runs it).
JOB_OWNED = {"run.runs_dir": "--runs-dir", "run.models_dir": "--models-dir", "run.resume": "--resume"}


def given_train_values(args: argparse.Namespace) -> dict[str, Any]:
    """The train settings `args` (parsed with `kartsim.rl.train_cmd.add_train_arguments`) set, as
    {dotted TrainConfig path: value}: what a job records; ConfigError for one the job sets itself."""
    from kartsim.config_cli import given_values
    from kartsim.rl.train_cmd import train_dests

    values = given_values(args, train_dests())
    for dest, flag in JOB_OWNED.items():
        if dest in values:
            hint = "use `resume JOB`" if dest == "run.resume" else "the job store holds the run folders"
            raise ConfigError(f"{flag} cannot be used with jobs ({hint})")
    return values


def _running_with_save_name(store: Store, settings: Settings, save_name: str) -> str | None:
    for jid in reversed(job_ids(store)[-50:]):
        try:
            job = load_job(store, jid)
        except JobError:
            continue
        if job.save_name != save_name:
            continue
        try:
            st = backend_of(store, settings, job).state(job)
        except JobError:
            continue
        if not st.terminal:
            return job.id
    return None


def submit(settings: Settings, args: argparse.Namespace, echo: Callable[[str], None] = print) -> tuple[JobRecord, Any]:
    """Validate the train flags, sync the job's tracks, record the job (with the train settings
    given, as a dict) and start it."""
    from kartsim.rl.train_cmd import config_from_values
    from kartsim.rl.config import validate
    from kartsim.jobs.tracks import job_inputs, job_tracks

    store = open_settings_store(settings)
    values = given_train_values(args)
    backend = make_backend(settings.backend, store, settings)
    backend.check()  # e.g. the Ray cluster is reachable, before anything is written
    cfg, _ = config_from_values(values)
    resolved = cfg.resolved()
    if settings.backend == "ray" and resolved.run.device != "cpu":
        resolved.run.device = "cpu"  # the GPU is the cluster's business; checked there
    validate(resolved)  # with the EnvConfig: --env-option keys and values fail here, not minutes later in the job

    save_name = resolved.run.save_name
    other = _running_with_save_name(store, settings, save_name)
    if other:
        raise JobError(f"job {other} is still running with --save-name {save_name}; cancel it or pick another --save-name")
    if not resolved.run.force:
        for rel in (f"runs/{save_name}", f"models/{save_name}_final.zip"):
            if store.exists(rel):
                raise JobError(f"{store.display(rel)} already exists in the job store; pass --force to overwrite it, "
                               "another --save-name, or `resume` its job")
    tracks = job_tracks(store, list(resolved.task.track), echo=echo)
    values = {**values, "task.track": tracks}
    if resolved.eval.eval_tracks:  # the evaluation's PNGs go with the job as the training's do
        values["eval.eval_tracks"] = job_tracks(store, list(resolved.eval.eval_tracks), echo=echo)
        tracks = list(dict.fromkeys(tracks + values["eval.eval_tracks"]))
    job_id = new_job_id(store, save_name)
    values, inputs = job_inputs(store, values, job_id, echo=echo)

    # `tracks`: what the job's working folder holds (staged from the store's tracks/): tracks and inputs
    job = JobRecord(id=job_id, backend=settings.backend, config=values, save_name=save_name,
                    timesteps=int(resolved.run.timesteps), vision=resolved.vision, tracks=tracks + inputs,
                    address=settings.address if settings.backend == "ray" else None,
                    options={k: getattr(settings, k) for k in ("num_gpus", "num_cpus") if getattr(settings, k) is not None})
    job.attempts.append(Attempt(n=1, started=now_iso()))
    save_job(store, job)
    # No Ctrl-C from launch until the pid is saved: mid-launch it would drop the record of a process that
    # may already run (an orphan nobody can see or cancel), or leave it without its pid ("process died").
    with _sigint_held() as interrupted:
        try:
            backend.launch(job, job.attempt)
        except BaseException:
            store.remove(f"jobs/{job.id}")
            raise
        save_job(store, job)
    if interrupted:
        raise StartInterrupted((job, backend))
    return job, backend


def _check_job_config(store: Store, job: JobRecord) -> None:
    """JobError naming job.json when its config (edited by hand) is no training config or holds a
    value that cannot work (``"ppo.gamma": "abc"``), before an attempt is recorded and started only
    to fail. Files and the device are the worker's to check: the tracks and inputs are staged there."""
    from kartsim.rl.config import validate_values
    from kartsim.rl.train_cmd import config_from_values

    try:
        cfg, _ = config_from_values(job.config)
        validate_values(cfg.resolved())
    except ConfigError as exc:
        rel = store.display(f"jobs/{job.id}/job.json")
        raise JobError(f"{rel}: its 'config' is not a training config ({exc}); fix it there") from None


def resume(settings: Settings, job_id: str, timesteps: int | None = None) -> tuple[JobRecord, Any, int, int]:
    """Start the job again from its last checkpoint (or final model, with a larger --timesteps).
    Returns (job, backend, steps of the checkpoint, log offset where the new attempt's output starts)."""
    store = open_settings_store(settings)
    job = load_job(store, job_id)
    _check_job_config(store, job)
    backend = backend_of(store, settings, job)
    backend.check()
    st = backend.state(job)
    if not st.terminal:
        raise JobError(f"job {job.id} is still {st.state}; cancel it first (`cancel {job.id}`) or let it finish")
    candidates = checkpoints_of(store, job.save_name)
    final = f"runs/{job.save_name}/{job.save_name}_final.zip"
    if store.exists(final):
        steps = steps_inside(store, final)
        if steps is not None:
            candidates = sorted(candidates + [(steps, final)])
    # the newest one that reads back (a checkpoint being written when the job was killed may be cut short)
    usable = next(((s, r) for s, r in reversed(candidates) if steps_inside(store, r) is not None), None)
    if usable is None:
        what = "only unreadable checkpoints" if candidates else "no checkpoint"
        raise JobError(f"job {job.id} has {what} to resume from (runs/{job.save_name}/checkpoints/); "
                       "start it again with `train ... --force`")
    steps, rel = usable
    total = timesteps or job.timesteps
    if st.state == "succeeded" and not timesteps:
        raise JobError(f"job {job.id} already finished ({steps:,} steps); to train on, pass --timesteps "
                       f"with a new total above {steps}")
    if total <= steps:
        raise JobError(f"the last checkpoint ({rel}) has {steps:,} steps already; --timesteps is the new total, "
                       f"so give more than {steps}")
    attempt = Attempt(n=job.attempt.n + 1, started=now_iso(), resume_from=rel, timesteps=timesteps)
    job.attempts.append(attempt)
    if timesteps:
        job.timesteps = int(timesteps)
    save_job(store, job)
    _, offset = read_log(store, job, 0)
    with _sigint_held() as interrupted:  # as in submit: a running attempt is never left without its pid
        backend.launch(job, attempt)
        save_job(store, job)
    if interrupted:
        raise StartInterrupted((job, backend, steps, offset))
    return job, backend, steps, offset


# ------------------------------------------------------------------------------- logs & progress

def read_log(store: Store, job: JobRecord, offset: int) -> tuple[str, int]:
    """New log text from byte `offset` on, and the next offset."""
    if isinstance(store, LocalStore):
        try:
            with open(store.p(log_rel(job.id)), "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return "", offset
    else:
        whole = store.read_bytes(log_rel(job.id)) or b""
        data = whole[offset:]
    # only whole lines, so a line is never printed in two halves
    cut = data.rfind(b"\n") + 1
    return data[:cut].decode("utf-8", "replace"), offset + cut


def progress_of(store: Store, job: JobRecord) -> dict[str, Any] | None:
    data = store.read_json(progress_rel(job.id))
    return data if isinstance(data, dict) else None


def follow(store: Store, backend: Any, job: JobRecord, out: TextIO | None = None, poll_s: float = 0.5,
           offset: int = 0, timeout_s: float | None = None) -> JobState:
    """Print the job's log (from byte `offset`) as it grows until the job ends; returns its final state."""
    out = out or sys.stdout
    deadline = time.monotonic() + timeout_s if timeout_s else None
    next_state = 0.0
    st = JobState("unknown")
    while True:
        now = time.monotonic()
        if now >= next_state:
            st = backend.state(job)
            next_state = now + 1.0
        text, offset = read_log(store, job, offset)
        if text:
            out.write(text)
            out.flush()
        if st.terminal:
            time.sleep(0.2)
            text, offset = read_log(store, job, offset)
            if text:
                out.write(text)
                out.flush()
            return st
        if deadline and now > deadline:
            return st
        time.sleep(poll_s)


def wait(backend: Any, job: JobRecord, timeout_s: float | None = None, poll_s: float = 1.0) -> JobState:
    deadline = time.monotonic() + timeout_s if timeout_s else None
    while True:
        st = backend.state(job)
        if st.terminal or (deadline and time.monotonic() > deadline):
            return st
        time.sleep(poll_s)


# ------------------------------------------------------------------------------------------ fetch

def fetch(store: Store, path: str, out: str | None, force: bool, job: JobRecord | None = None,
          echo: Callable[[str], None] | None = None) -> tuple[str, Path]:
    """Copy a file or folder from the store (see `find_in_store`; `echo` hears which job's file was
    taken when several have it) to `out` (default: its name, here).

    An existing folder `out` receives it (``out/<name>``, files and folders alike, as ``cp`` does);
    `force` replaces only that one path, and never a folder that holds the current directory. The
    copy is downloaded beside it first, so a failed download leaves the old one in place."""
    rel = find_in_store(store, path, job, echo)
    asked = path.strip()
    # a bare name keeps the name asked for (`--path ppo_50m_master.zip` found as ..._final.zip)
    name = asked if "/" not in asked and "\\" not in asked else rel.rsplit("/", 1)[-1]
    dest = Path(out).expanduser() if out else Path(name)
    if dest.is_dir() and not dest.is_symlink():
        dest = dest / name
    replace = dest.exists() or dest.is_symlink()
    if replace:
        if not force:
            raise JobError(f"{dest} already exists; pass --force to overwrite it (or choose another --out)")
        if dest.is_dir() and not dest.is_symlink():
            here = Path.cwd().resolve()
            if dest.resolve() in (here, *here.parents):
                raise JobError(f"--out {dest} is the current folder or one above it; fetch into another folder")
    if not dest.parent.exists():
        raise JobError(f"cannot write {dest}: folder {dest.parent} does not exist")
    tmp = dest.with_name(f".{dest.name}.part")
    _remove(tmp)
    store.download(rel, tmp)
    if replace:
        old = dest.with_name(f".{dest.name}.old")
        _remove(old)
        dest.rename(old)
        tmp.rename(dest)
        _remove(old)
    else:
        tmp.rename(dest)
    return rel, dest


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


__all__ = ["JobState", "submit", "resume", "follow", "wait", "fetch", "read_log", "progress_of", "open_settings_store",
           "backend_of", "make_backend", "open_store", "StartInterrupted"]
