"""What keeps a run folder whole: one trainer at a time (`RunLock`), signals that stop training
without losing it (`sigterm_as_interrupt`, `signals_deferred`), resume bookkeeping (the config
history in ``config.json``, telemetry rows after the checkpoint dropped)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

from kartsim.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: an exclusive-create lock file (a crash leaves it: the message says so)
    fcntl = None  # type: ignore[assignment]


class RunLock:
    """An exclusive lock on ``<runs_dir>/.<name>.lock`` (beside the run folder, so ``--force``
    can replace the folder while holding it). The OS releases it when the process ends, even by
    SIGKILL, so a crashed run never blocks its name; a clean end also removes the file."""

    def __init__(self, runs_dir: Path, name: str) -> None:
        self.path = Path(runs_dir) / f".{name}.lock"
        self.name = name
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            try:
                self._fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
            except FileExistsError:
                raise ConfigError(f"run {self.name!r} is being trained by another process ({self.path} exists; "
                                  "delete it if no training is running), or use another --save-name") from None
        else:
            self._fd = self._flock()
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())
        return self

    def _flock(self) -> int:
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise ConfigError(f"run {self.name!r} is being trained by another process (pid {holder}) right now; "
                                  "wait for it to end, or use another --save-name") from None
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)  # the holder removed the file as we locked it: lock the new one

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # before unlocking: a waiting process then locks a new file
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler, a job stopped) raises KeyboardInterrupt like Ctrl-C, so the
    trainer saves ``_interrupted.zip`` instead of dying silently."""
    if not _main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not break the save
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_deferred() -> Iterator[list[int]]:
    """SIGINT and SIGTERM wait until the block ends (the final save and its copy); the list holds
    the signals that arrived meanwhile."""
    arrived: list[int] = []
    if not _main_thread():
        yield arrived
        return
    previous = {s: signal.signal(s, lambda signum, frame: arrived.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield arrived
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def record_config(path: Path, doc: dict[str, Any], resume_from: Path | None) -> None:
    """Write the run's ``config.json``. On a resume into the same folder the first run's command
    and start time stay, and the resume is appended to ``resumes``."""
    if resume_from is not None and path.is_file():
        try:
            old = json.loads(path.read_text())
        except (ValueError, OSError, RecursionError):
            old = None
        if isinstance(old, dict):
            resumes = old.get("resumes") if isinstance(old.get("resumes"), list) else []
            resumes.append({"command": doc["command"], "started": doc["started"], "resume": str(resume_from),
                            "timesteps": doc["train"]["run"]["timesteps"]})
            doc = dict(doc, command=old.get("command", doc["command"]), started=old.get("started", doc["started"]),
                       resumes=resumes)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    os.replace(tmp, path)


def truncate_telemetry(path: Path, last_step: int) -> int:
    """Drop the rows of a telemetry CSV logged after env step `last_step` (the checkpoint a resume
    starts from: a killed run logged past it, and those steps are trained again). Returns the
    number of rows dropped; the file is replaced atomically."""
    if not path.is_file():
        return 0
    dropped = 0
    tmp = path.with_name(f".{path.name}.tmp")
    with open(path, encoding="utf-8", newline="") as src, open(tmp, "w", encoding="utf-8", newline="") as dst:
        header = src.readline()
        dst.write(header)
        names = header.strip().split(",")
        col = names.index("step") if "step" in names else 0
        for line in src:
            fields = line.split(",")
            try:
                step = float(fields[col]) if len(fields) == len(names) and line.endswith("\n") else float("inf")
            except ValueError:
                step = float("inf")  # a torn last line of a killed run
            if step <= last_step:
                dst.write(line)
            else:
                dropped += 1
    os.replace(tmp, path)
    return dropped
