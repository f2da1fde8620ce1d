"""The live-driving side channel between the producers and ``kartsim dashboard``.

A producer publishes one small JSON document (about 2.5 KB with 64 karts) at most `DEFAULT_HZ`
times a second into a *feed file*: a fixed-size (64 KiB) memory-mapped file holding a header and the
latest document, guarded by a sequence lock (the writer makes the sequence number odd, copies the
document, then makes it even; a reader retries when it sees an odd or changed number). Publishing is
a memory copy: no system call, no waiting for a reader, nothing when no dashboard is open.
benchmarks/dashboard_overhead.py measures it against the alternatives (a new file renamed over the
old one, a UDP datagram to 127.0.0.1): the feed file is the cheapest, needs no port, outlives a
dashboard restart and tells the dashboard which sources exist. A plain JSON file in the same place is
read too (for other producers and for debugging).

Where the feeds are (``<runs>`` is the runs folder the dashboard serves, default ``runs``):

==========================================  ========================================================
``<runs>/<save-name>/live.feed``            a training run (``kartsim train``, ``train_ppo*.py``,
                                            jobs): written by `TrainingLiveFeed` from the telemetry
                                            callback (so not with ``--telemetry-every 0``)
``<runs>/_live/play-<model>-<pid>.feed``    ``kartsim play`` / ``play_ppo.py`` (removed at the end)
``<runs>/_live/drive-<track>-<pid>.feed``   ``kartsim drive`` (removed at the end)
==========================================  ========================================================

Play and drive publish only when the runs folder exists (``./runs``, or ``KARTSIM_RUNS_DIR``).
``KARTSIM_LIVE=0`` turns every producer off; ``KARTSIM_LIVE_HZ`` changes the rate (1-50).

File layout: bytes 0-7 `MAGIC`, 8-15 sequence number (little-endian u64, odd while writing), 16-19
document length (u32), then the UTF-8 JSON document from byte `HEADER` on. The document
(`SCHEMA_VERSION` 1)::

    {"v": 1, "kind": "train"|"play"|"drive", "name": str, "pid": int, "host": str,
     "started": unix s, "t": unix s, "seq": int, "active": bool,
     "track": {"name": str, "path": str|null, "size_m": [w, h]},
     "karts": [[x, y, yaw, speed], ...],     # metres, rad, m/s; the karts on the ego kart's track
     "ego": int,                             # index of the ego kart in "karts"
     "tel": {"speed", "throttle", "steering", "lap", "lap_time", "progress", "surface", "episode_time"},
     "progress": {"num_timesteps", "total_timesteps", "steps_per_second", "eta_s", "elapsed_s", "device"}}
                                             # training only

At the end of training the document stays with ``"active": false`` (and the final progress). A
document never has a key named ``type`` (the dashboard's own status messages do).
"""

from __future__ import annotations

import json
import mmap
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
LIVE_FILE = "live.feed"
FEED_SUFFIX = ".feed"
SESSIONS_DIR = "_live"
DEFAULT_HZ = 20.0
MAX_KARTS = 64
MAGIC = b"KSLIVE1\0"
HEADER = 32
FEED_SIZE = 64 * 1024
_SEQ = struct.Struct("<Q")
_LEN = struct.Struct("<I")
_OFF = ("0", "false", "no", "off")


def live_enabled() -> bool:
    """False when ``KARTSIM_LIVE`` is 0/false/no/off."""
    return os.environ.get("KARTSIM_LIVE", "1").strip().lower() not in _OFF


def live_hz() -> float:
    try:
        hz = float(os.environ.get("KARTSIM_LIVE_HZ", DEFAULT_HZ))
    except ValueError:
        hz = DEFAULT_HZ
    return min(50.0, max(1.0, hz))


def sessions_runs_dir() -> Path | None:
    """The runs folder play/drive publish into: ``KARTSIM_RUNS_DIR``, else ``./runs`` when it exists."""
    env = os.environ.get("KARTSIM_RUNS_DIR")
    if env:
        return Path(env).expanduser()
    runs = Path("runs")
    return runs if runs.is_dir() else None


def _safe_label(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "._-" else "_" for c in str(text))[:60].strip("._")
    return out or "kart"


class LivePublisher:
    """Publishes frames into the feed file at `path`, at most `hz` times a second.

    Usage per step: ``if pub.due(): pub.publish({...})`` (or `publish_race`). Any failure (disk
    full, folder deleted) turns the publisher off instead of disturbing the producer.
    """

    def __init__(self, path: str | Path, *, kind: str, name: str, hz: float | None = None,
                 remove_on_close: bool = False) -> None:
        self.path = Path(path)
        self.period = 1.0 / (hz if hz else live_hz())
        self.remove_on_close = remove_on_close
        self.failed = False
        self.closed = False
        self.seq = 0
        self._lock = 0
        self._next = 0.0
        self._mm: mmap.mmap | None = None
        self.meta: dict[str, Any] = {"v": SCHEMA_VERSION, "kind": kind, "name": name, "pid": os.getpid(),
                                     "host": socket.gethostname(), "started": round(time.time(), 3)}

    def _open(self) -> mmap.mmap:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size != FEED_SIZE:
                os.ftruncate(fd, FEED_SIZE)
            mm = mmap.mmap(fd, FEED_SIZE)
        finally:
            os.close(fd)
        old = _SEQ.unpack_from(mm, 8)[0] if mm[:8] == MAGIC else 0
        self._lock = old + (old & 1)  # continue after a previous writer (a resumed run)
        mm[:8] = MAGIC
        return mm

    def due(self) -> bool:
        return not self.failed and time.monotonic() >= self._next

    def publish(self, frame: dict[str, Any], *, active: bool = True) -> None:
        if self.failed:
            return
        self._next = time.monotonic() + self.period
        self.seq += 1
        doc = dict(self.meta, t=round(time.time(), 3), seq=self.seq, active=active)
        doc.update(frame)
        try:
            data = json.dumps(doc, separators=(",", ":"), allow_nan=False, default=float).encode()
        except ValueError:  # NaN/inf somewhere: JSON has no such numbers
            data = json.dumps(_finite(doc), separators=(",", ":")).encode()
        if len(data) > FEED_SIZE - HEADER:
            doc["karts"] = (doc.get("karts") or [])[:8]
            data = json.dumps(_finite(doc), separators=(",", ":")).encode()[: FEED_SIZE - HEADER]
        self.write(data)

    def write(self, data: bytes) -> None:
        """Put one encoded document into the feed file (the sequence lock around a memory copy)."""
        try:
            mm = self._mm if self._mm is not None else self._open()
            self._mm = mm
            self._lock += 1
            _SEQ.pack_into(mm, 8, self._lock)          # odd: being written
            mm[HEADER:HEADER + len(data)] = data
            _LEN.pack_into(mm, 16, len(data))
            self._lock += 1
            _SEQ.pack_into(mm, 8, self._lock)          # even: complete
        except (OSError, ValueError, TypeError):
            self.failed = True

    def publish_race(self, race: Any, ego: int = 0, **extra: Any) -> None:
        try:
            frame = race_frame(race, ego)
        except Exception:  # never break the producer over a live view
            self.failed = True
            return
        frame.update(extra)
        self.publish(frame)

    def close(self, final: dict[str, Any] | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        if self.remove_on_close:
            try:
                self.path.unlink()
            except OSError:
                pass
        elif not self.failed:
            self.publish(final or {}, active=False)
        if self._mm is not None:
            try:
                self._mm.close()
            except (OSError, ValueError):
                pass
            self._mm = None


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def race_frame(race: Any, ego: int = 0, max_karts: int = MAX_KARTS) -> dict[str, Any]:
    """The frame of a `kartsim.sim.race.Race` (or GridRace): the karts on the ego kart's track, the ego's
    inputs and timing."""
    import numpy as np

    st = race.state
    t_idx = int(st.track_idx[ego])
    same = np.nonzero(st.track_idx == t_idx)[0]
    others = same[same != ego][: max_karts - 1]
    rows = np.concatenate([[ego], others]).astype(int)
    karts = np.column_stack([st.x[rows], st.y[rows], st.yaw[rows], st.speed[rows]])
    track = race.stack.tracks[t_idx]
    h, w = track.surface.shape[:2]
    tel = race.telemetry(ego)
    return {
        "track": {"name": track.name, "path": str(track.path) if getattr(track, "path", None) else None,
                  "size_m": [round(w * track.scale, 2), round(h * track.scale, 2)]},
        "karts": np.round(karts, 2).tolist(),
        "ego": 0,
        "tel": {
            "speed": round(float(tel.get("speed", 0.0)), 2),
            "throttle": round(float(tel.get("throttle", 0.0)), 3),
            "steering": round(float(tel.get("steering", 0.0)), 3),
            "lap": int(tel.get("lap", 0)),
            "lap_time": round(float(tel.get("lap_time", 0.0)), 2),
            "progress": round(float(tel.get("progress", 0.0)), 1),
            "surface": str(tel.get("surface", "")),
            "episode_time": round(float(tel.get("time_s", 0.0)), 2),
        },
    }


def info_frame(infos: Any) -> dict[str, Any]:
    """A frame of env 0 alone from its step info (envs in other processes: no race to look at)."""
    tel = ((infos or [{}])[0] or {}).get("telemetry") or {}
    if "x" not in tel:
        return {}
    return {
        "track": {"name": tel.get("track"), "path": None, "size_m": None},
        "karts": [[round(float(tel.get(k, 0.0)), 2) for k in ("x", "y", "yaw", "speed")]],
        "ego": 0,
        "tel": {k: tel[k] for k in ("speed", "throttle", "steering", "lap", "lap_time", "progress", "surface")
                if k in tel},
    }


# ------------------------------------------------------------------------------------ producers


class TrainingLiveFeed:
    """``<run>/live.feed`` of a training run, driven by a training callback (see
    `kartsim.rl.callbacks.TelemetryCSVCallback`): kart positions of the batched env plus progress."""

    def __init__(self, run_dir: Path) -> None:
        self.pub = LivePublisher(Path(run_dir) / LIVE_FILE, kind="train", name=Path(run_dir).name)
        self._t0: float | None = None
        self._steps0 = 0
        self._race = None
        self._device = None
        self._monitor = None
        self._usage: dict[str, Any] | None = None
        self._usage_at = 0.0
        self._start: tuple[float, int] | None = None  # (time, steps) when training started

    def start(self, model: Any) -> None:
        """Training starts: the final rate counts from here, as `kartsim train` prints it (the live rate
        and ETA count from the first step, after JIT compilation and env set-up)."""
        self._start = (time.monotonic(), int(model.num_timesteps))

    @classmethod
    def for_run(cls, run_dir: str | Path) -> "TrainingLiveFeed | None":
        if not live_enabled():
            return None
        try:
            return cls(Path(run_dir))
        except Exception:
            return None

    def _progress(self, model: Any) -> dict[str, Any]:
        now = time.monotonic()
        done = int(model.num_timesteps)
        if self._t0 is None:
            self._t0, self._steps0 = now, done
            self._device = str(getattr(model, "device", "") or "")
            from kartsim.telemetry.devices import DeviceMonitor

            self._monitor = DeviceMonitor(self._device)
        if now - self._usage_at >= 1.0:  # the utilisation, once a second (a CPU sample spans that second)
            self._usage_at = now
            sample = self._monitor.sample()
            self._usage = sample.to_dict() if sample is not None else None
        elapsed = now - self._t0
        total = int(getattr(model, "_total_timesteps", 0) or 0)
        rate = (done - self._steps0) / elapsed if elapsed > 0.5 else 0.0
        return {"num_timesteps": done, "total_timesteps": total, "steps_per_second": round(rate, 1),
                "eta_s": round((total - done) / rate, 1) if rate > 0 and total > done else None,
                "elapsed_s": round(elapsed, 1), "device": self._device, "utilisation": self._usage}

    def _find_race(self, callback: Any) -> Any:
        env = getattr(callback, "training_env", None)
        for _ in range(8):
            if env is None:
                return None
            race = getattr(env, "race", None)
            if race is not None:
                return race
            env = getattr(env, "venv", None)
        return None

    def on_step(self, callback: Any) -> None:
        pub = self.pub
        if not pub.due():
            return
        try:
            if self._race is None:
                self._race = self._find_race(callback)
            progress = self._progress(callback.model)
            frame = race_frame(self._race) if self._race is not None else info_frame(callback.locals.get("infos"))
        except Exception:
            pub.failed = True
            return
        frame["progress"] = progress
        pub.publish(frame)

    def close(self, callback: Any | None = None) -> None:
        final: dict[str, Any] = {}
        if callback is not None and self._t0 is not None:
            try:
                progress = self._progress(callback.model)
            except Exception:
                progress = None
            if progress is not None:
                progress.update(eta_s=None, utilisation=None)
                if self._start is not None and time.monotonic() > self._start[0]:
                    whole = (progress["num_timesteps"] - self._start[1]) / (time.monotonic() - self._start[0])
                    progress["steps_per_second"] = round(whole, 1)
                if progress["num_timesteps"] < progress["total_timesteps"]:
                    # ended early by design (a callback stopped it, e.g. quickstart's first lap): that is
                    # the run's length, not 8 % of the cap it never needed
                    progress["stopped_early_of"] = progress["total_timesteps"]
                    progress["total_timesteps"] = progress["num_timesteps"]
                final["progress"] = progress
        self.pub.close(final)


def session_feed(kind: str, label: str) -> LivePublisher | None:
    """A publisher for a play / drive session (``<runs>/_live/<kind>-<label>-<pid>.json``), or None
    when live publishing is off or there is no runs folder."""
    if not live_enabled():
        return None
    runs = sessions_runs_dir()
    if runs is None:
        return None
    try:
        folder = runs / SESSIONS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{kind}-{_safe_label(label)}-{os.getpid()}"
        return LivePublisher(folder / f"{name}{FEED_SUFFIX}", kind=kind, name=f"{kind} {label}", remove_on_close=True)
    except OSError:
        return None


def feed_version(path: str | Path) -> int | None:
    """The feed's sequence number (changes with every frame; cheap: reads 16 bytes), or the file's
    modification time in ns for a plain JSON file; None when the file is missing."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            if head[:8] == MAGIC and len(head) == 16:
                return _SEQ.unpack_from(head, 8)[0]
            return os.fstat(fh.fileno()).st_mtime_ns
    except OSError:
        return None


def read_live(path: str | Path, retries: int = 20) -> dict[str, Any] | None:
    """The latest document of a feed file (or a plain JSON file), or None when it is missing,
    empty or not (yet) a valid document."""
    data = read_live_bytes(path, retries)
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def read_live_bytes(path: str | Path, retries: int = 20) -> bytes | None:
    """The latest document of a feed file as the producer encoded it (UTF-8 JSON), unparsed; None
    when the file is missing or nothing complete could be read."""
    try:
        with open(path, "rb") as fh:
            for _ in range(retries):
                fh.seek(0)
                head = fh.read(HEADER)
                if head[:8] != MAGIC:
                    data = head + fh.read()
                    break
                seq = _SEQ.unpack_from(head, 8)[0]
                if seq == 0:
                    return None  # created, nothing published yet
                if seq & 1:
                    time.sleep(0.0005)
                    continue
                n = min(_LEN.unpack_from(head, 16)[0], FEED_SIZE - HEADER)
                data = fh.read(n)
                fh.seek(8)
                if _SEQ.unpack(fh.read(8))[0] == seq:
                    break
            else:
                return None
    except OSError:
        return None
    return data or None


__all__ = ["LivePublisher", "TrainingLiveFeed", "session_feed", "race_frame", "read_live", "read_live_bytes",
           "feed_version",
           "live_enabled", "LIVE_FILE", "FEED_SUFFIX", "SESSIONS_DIR", "DEFAULT_HZ"]
