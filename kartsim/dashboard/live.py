"""The live-driving side channel between the producers and ``kartsim dashboard``.

A producer rewrites one small JSON document (about 1 KB) at most `DEFAULT_HZ` times a second,
atomically (write a temporary file, then ``os.replace``): readers never see half a document, and a
producer never waits for a reader. No dashboard open costs the producer only the rate check
(``time.monotonic()`` per step) and 20 small file writes a second (benchmarks/dashboard_overhead.py
measures both this and a UDP datagram per frame; the file costs more per frame but is still
negligible, and it needs no port, outlives a dashboard restart and tells which sources exist).

Where the documents are (``<runs>`` is the runs folder the dashboard serves, default ``runs``):

==========================================  ========================================================
``<runs>/<save-name>/live.json``            a training run (``kartsim train``, ``train_ppo*.py``,
                                            jobs): written by `TrainingLiveFeed` from the telemetry
                                            callback (so not with ``--telemetry-every 0``)
``<runs>/_live/play-<model>-<pid>.json``    ``kartsim play`` / ``play_ppo.py`` (removed at the end)
``<runs>/_live/drive-<track>-<pid>.json``   ``kartsim drive`` (removed at the end)
==========================================  ========================================================

Play and drive publish only when the runs folder exists (``./runs``, or ``KARTSIM_RUNS_DIR``).
``KARTSIM_LIVE=0`` turns every producer off; ``KARTSIM_LIVE_HZ`` changes the rate (1-50).

The document (`SCHEMA_VERSION` 1)::

    {"v": 1, "kind": "train"|"play"|"drive", "name": str, "pid": int, "host": str,
     "started": unix s, "t": unix s, "seq": int, "active": bool,
     "track": {"name": str, "path": str|null, "size_m": [w, h]},
     "karts": [[x, y, yaw, speed], ...],     # metres, rad, m/s; the karts on the ego kart's track
     "ego": int,                             # index of the ego kart in "karts"
     "tel": {"speed", "throttle", "steering", "lap", "lap_time", "progress", "surface", "episode_time"},
     "progress": {"num_timesteps", "total_timesteps", "steps_per_second", "eta_s", "elapsed_s", "device"}}
                                             # training only

At the end of training the document stays with ``"active": false`` (and the final progress).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
LIVE_FILE = "live.json"
SESSIONS_DIR = "_live"
DEFAULT_HZ = 20.0
MAX_KARTS = 64
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
    """Rewrites `path` with the latest frame, at most `hz` times a second.

    Usage per step: ``if pub.due(): pub.publish({...})`` (or `publish_race`). A write that fails
    (disk full, folder deleted) turns the publisher off instead of disturbing the producer.
    """

    def __init__(self, path: str | Path, *, kind: str, name: str, hz: float | None = None,
                 remove_on_close: bool = False) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.period = 1.0 / (hz if hz else live_hz())
        self.remove_on_close = remove_on_close
        self.failed = False
        self.closed = False
        self.seq = 0
        self._next = 0.0
        self.meta: dict[str, Any] = {"v": SCHEMA_VERSION, "kind": kind, "name": name, "pid": os.getpid(),
                                     "host": socket.gethostname(), "started": round(time.time(), 3)}

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
            data = json.dumps(doc, separators=(",", ":"), allow_nan=False, default=float)
        except ValueError:  # NaN/inf somewhere: JSON has no such numbers
            data = json.dumps(_finite(doc), separators=(",", ":"))
        try:
            with open(self.tmp, "w", encoding="utf-8") as fh:
                fh.write(data)
            os.replace(self.tmp, self.path)
        except OSError:
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
            for p in (self.path, self.tmp):
                try:
                    p.unlink()
                except OSError:
                    pass
        elif not self.failed:
            self.publish(final or {}, active=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def race_frame(race: Any, ego: int = 0, max_karts: int = MAX_KARTS) -> dict[str, Any]:
    """The frame of a `kartsim.race.Race` (or GridRace): the karts on the ego kart's track, the ego's
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


# ------------------------------------------------------------------------------------ producers


class TrainingLiveFeed:
    """``<run>/live.json`` of a training run, driven by a training callback (see
    `kartsim.rl.callbacks.TelemetryCSVCallback`): kart positions of the batched env plus progress."""

    def __init__(self, run_dir: Path) -> None:
        self.pub = LivePublisher(Path(run_dir) / LIVE_FILE, kind="train", name=Path(run_dir).name)
        self._t0: float | None = None
        self._steps0 = 0
        self._race = None
        self._device = None

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
        elapsed = now - self._t0
        total = int(getattr(model, "_total_timesteps", 0) or 0)
        rate = (done - self._steps0) / elapsed if elapsed > 0.5 else 0.0
        return {"num_timesteps": done, "total_timesteps": total, "steps_per_second": round(rate, 1),
                "eta_s": round((total - done) / rate, 1) if rate > 0 and total > done else None,
                "elapsed_s": round(elapsed, 1), "device": self._device}

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
            frame = race_frame(self._race) if self._race is not None else {}
        except Exception:
            pub.failed = True
            return
        frame["progress"] = progress
        pub.publish(frame)

    def close(self, callback: Any | None = None) -> None:
        final: dict[str, Any] = {}
        if callback is not None and self._t0 is not None:
            try:
                final["progress"] = self._progress(callback.model)
            except Exception:
                pass
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
        return LivePublisher(folder / f"{name}.json", kind=kind, name=f"{kind} {label}", remove_on_close=True)
    except OSError:
        return None


def read_live(path: str | Path) -> dict[str, Any] | None:
    """The document at `path`, or None when it is missing or not (yet) valid JSON."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


__all__ = ["LivePublisher", "TrainingLiveFeed", "session_feed", "race_frame", "read_live", "live_enabled",
           "LIVE_FILE", "SESSIONS_DIR", "DEFAULT_HZ"]
