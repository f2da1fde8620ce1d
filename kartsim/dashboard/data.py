"""Read-only views of the run folders for the dashboard: runs, jobs, learning curves, telemetry laps.

Everything the dashboard reads goes through `Library`, which knows the *roots* it may read (the
``--runs`` folder, and the ``runs/`` folder of a local job store) and refuses any other path
(`Library.resolve`). Problems with files (missing, half-written, truncated, malformed, deleted while
open) become `DashboardError` with a one-line message for the page; nothing here raises anything
else on bad files.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kartsim.rl.config import flat_train_dict
from kartsim.telemetry.live import FEED_SUFFIX, LIVE_FILE, SESSIONS_DIR, read_live
from kartsim.telemetry.devices import sample_text

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_NAME = 200  # a file name longer than the file system allows (255 bytes) cannot be a run
STEPS_RE = re.compile(r"_(\d+)_steps\.zip$")
HOST = socket.gethostname()
RUN_MARKERS = ("config.json", LIVE_FILE, "telemetry_log.csv", "checkpoints", "tb")  # what makes a folder a run
STALE_S = 30.0  # a live document older than this, from a process we cannot see, is not live

# Columns the lap analysis needs (the rest of kartsim.telemetry.TELEMETRY_COLUMNS are optional).
LAP_COLUMNS = ("step", "episode", "lap", "time_s", "lap_time", "x", "y", "speed", "throttle", "steering",
               "progress", "lateral_g", "longitudinal_g")
# "env" (--telemetry-envs N) is checked too: a stray value there would otherwise drop the row silently
NUMERIC_COLUMNS = LAP_COLUMNS + ("reward", "off_track", "env")
_KEEP = frozenset(NUMERIC_COLUMNS + ("surface",))  # columns kept in memory

# TensorBoard tags shown on a run's page: (tag, title, y label).
CURVES: tuple[tuple[str, str, str], ...] = (
    ("rollout/ep_rew_mean", "episode reward (mean of the last 100)", "reward"),
    ("eval/ref_ratio", "evaluation: best lap / reference lap (deterministic, from the start line)", "x reference"),
    ("eval/completion_rate", "evaluation: lap completion", "share of evaluation runs with a lap"),
    ("eval/best_lap_time", "evaluation: best lap time", "s"),
    ("racing/lap_completion_rate", "lap completion rate", "share of episodes with a lap"),
    ("racing/best_lap_time", "best lap time", "s"),
    ("racing/lap_time", "mean lap time", "s"),
    ("racing/mean_speed", "mean speed", "m/s"),
    ("racing/off_track_share", "off-track share", "share of time on grass"),
    ("racing/progress_m", "progress per episode", "m"),
    ("train/loss", "loss", "loss"),
    ("train/value_loss", "value loss", "loss"),
    ("train/policy_gradient_loss", "policy-gradient loss", "loss"),
    ("train/entropy_loss", "entropy loss", "loss"),
    ("train/approx_kl", "approx KL", "KL"),
    ("time/fps", "training speed", "steps/s"),
)
# TensorBoard tag families shown as one figure with a line per tag the run has: (prefix, title, y label).
# The tags come from the logs, not a list: each env names its own reward terms (race envs add some).
CURVE_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("reward/", "reward terms (per episode)", "reward (mean of the last 100)"),
)


class DashboardError(Exception):
    """A problem to show in the page (``status`` is the HTTP status of the JSON answer)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class Root:
    key: str     # "runs" (the --runs folder) or "jobs" (the job store's runs/)
    path: Path   # resolved
    label: str


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _doc_time(doc: dict[str, Any] | None) -> float | None:
    try:
        return float(doc["t"]) if doc and doc.get("t") else None
    except (TypeError, ValueError):
        return None


def _read_json(path: Path) -> tuple[Any, str | None]:
    """(data, problem): problem is a message when the file exists but is not valid JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{path.name} cannot be read ({exc.strerror or exc})"
    try:
        return json.loads(text), None
    except RecursionError:
        return None, f"{path.name} is nested too deeply to be a kartsim file"
    except ValueError:
        return None, f"{path.name} is not complete JSON yet (half-written?)"


def pid_alive(pid: Any, host: Any = None) -> bool | None:
    """True/False for a process of this machine (zombies count as gone); None for another host."""
    if host not in (None, "", HOST):
        return None
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X", "x")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_state(doc: dict[str, Any] | None) -> tuple[bool, str]:
    """(is the producer alive, a short reason) for a live document."""
    if not doc:
        return False, "no live feed"
    if not doc.get("active"):
        return False, "ended"
    alive = pid_alive(doc.get("pid"), doc.get("host"))
    if alive is None:  # another machine (a Ray node): trust a recent frame
        try:
            alive = time.time() - float(doc.get("t") or 0) < STALE_S
        except (TypeError, ValueError):
            alive = False
    return bool(alive), "live" if alive else "the process is gone (killed or interrupted)"


def _checkpoints(run: Path) -> list[tuple[int, float, str]]:
    """(steps, mtime, file name) of a run's checkpoints, oldest first."""
    out = []
    try:
        entries = list(os.scandir(run / "checkpoints"))
    except OSError:
        return []
    for e in entries:
        if not e.name.endswith(".zip") or e.name.startswith("."):
            continue
        m = STEPS_RE.search(e.name)
        try:
            mt = e.stat().st_mtime
        except OSError:
            continue
        out.append((int(m.group(1)) if m else -1, mt, e.name))
    out.sort(key=lambda c: (c[1], c[0]))
    return out


def _tail_step(csv: Path) -> int | None:
    """The ``step`` of the last complete row of a telemetry CSV (reads only its end)."""
    try:
        with open(csv, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 8192))
            lines = fh.read().split(b"\n")
    except OSError:
        return None
    for line in reversed(lines[:-1] if len(lines) > 1 else []):
        head = line.split(b",", 1)[0]
        try:
            return int(float(head))
        except (ValueError, OverflowError):  # a step of inf / nan: not a step count
            continue
    return None


# ------------------------------------------------------------------------------------ CSV reading


@dataclass
class _CsvCache:
    ino: int
    offset: int = 0
    header: bytes = b""
    frames: list[Any] = field(default_factory=list)
    df: Any = None
    laps: Any = None
    laps_offset: Any = None


class TelemetryReader:
    """Incremental, tolerant reading of telemetry CSVs: only whole lines are parsed (a line being
    written is left for the next read), only new bytes are parsed when the file grows, and any
    malformed content becomes a DashboardError naming the line."""

    def __init__(self, keep: int = 8) -> None:
        from collections import OrderedDict

        self._cache: OrderedDict[str, _CsvCache] = OrderedDict()  # the `keep` most recently read files
        self.keep = keep
        self._lock = threading.Lock()

    def read(self, path: Path, label: str) -> Any:
        import pandas as pd

        try:
            st = path.stat()
        except FileNotFoundError:
            self._cache.pop(str(path), None)
            raise DashboardError(f"{label} no longer exists (deleted?)", 404) from None
        except OSError as exc:
            raise DashboardError(f"{label} cannot be read ({exc.strerror or exc})", 400) from None
        with self._lock:
            c = self._cache.get(str(path))
            if c is None or c.ino != st.st_ino or st.st_size < c.offset:
                c = _CsvCache(ino=st.st_ino)
                self._cache[str(path)] = c
            self._cache.move_to_end(str(path))
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
            if st.st_size > c.offset:
                try:
                    with open(path, "rb") as fh:
                        fh.seek(c.offset)
                        data = fh.read(st.st_size - c.offset)
                except FileNotFoundError:
                    self._cache.pop(str(path), None)
                    raise DashboardError(f"{label} no longer exists (deleted?)", 404) from None
                cut = data.rfind(b"\n") + 1
                data = data[:cut]
                if not c.header:
                    nl = data.find(b"\n")
                    if nl < 0:
                        raise DashboardError(f"{label} has no complete header line yet (empty or half-written)", 422)
                    self._check_header(data[: nl + 1], label)
                    c.header = data[: nl + 1]
                    first_line = 2
                    body = data[nl + 1:]
                    c.offset = nl + 1
                else:
                    first_line = None
                    body = data
                if body:
                    line0 = first_line or (2 + sum(len(f) for f in c.frames))
                    frame = self._parse(c.header + body, label, line0)
                    c.frames.append(frame)
                    c.df = None
                c.offset += len(body)
            if not c.header:
                raise DashboardError(f"{label} has no complete header line yet (empty or half-written)", 422)
            if c.df is None:
                if not c.frames:
                    raise DashboardError(f"{label} has no rows yet (train or drive for a few steps first)", 422)
                c.df = c.frames[0] if len(c.frames) == 1 else pd.concat(c.frames, ignore_index=True)
                c.frames = [c.df]
            return c.df

    def laps(self, path: Path, label: str, track_length: float | None) -> list[Any]:
        """compare.extract_laps of the CSV (cached while the file does not change)."""
        from kartsim.telemetry.laps import extract_laps

        df = self.read(path, label)
        c = self._cache.get(str(path)) or _CsvCache(ino=-1)  # (evicted meanwhile: not cached)
        key = (c.offset, track_length)
        if c.laps is None or c.laps_offset != key:
            try:
                laps = extract_laps(df, label, track_length)
            except Exception as exc:  # a malformed column that survived parsing
                raise DashboardError(f"{label}: cannot find laps ({exc.__class__.__name__}: {exc})", 422) from None
            c.laps, c.laps_offset = laps, key
        return c.laps

    @staticmethod
    def _check_header(header: bytes, label: str) -> None:
        cols = header.decode("utf-8", "replace").strip().split(",")
        missing = [c for c in LAP_COLUMNS if c not in cols]
        if missing:
            raise DashboardError(f"{label} is not a kartsim telemetry CSV: missing column(s) {', '.join(missing)}", 422)

    @staticmethod
    def _parse(data: bytes, label: str, line0: int) -> Any:
        import pandas as pd

        try:
            df = pd.read_csv(io.BytesIO(data), low_memory=False, usecols=lambda c: c in _KEEP)
        except Exception as exc:  # pandas.errors.ParserError, UnicodeDecodeError, ...
            msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else exc.__class__.__name__
            m = re.search(r"line (\d+)", msg)
            if m:  # pandas counts lines of this chunk (header = line 1)
                msg = msg.replace(m.group(0), f"line {int(m.group(1)) + line0 - 2}")
            raise DashboardError(f"{label} is malformed: {msg}", 422) from None
        for col in NUMERIC_COLUMNS:
            if col in df.columns and not pd.api.types.is_numeric_dtype(df[col]):
                conv = pd.to_numeric(df[col], errors="coerce")
                bad = conv.isna() & df[col].notna() & (df[col].astype(str).str.strip() != "")
                if bad.any():
                    i = int(np.argmax(bad.to_numpy()))
                    raise DashboardError(f"{label} is malformed: line {i + line0}: column {col!r} has "
                                         f"{str(df[col].iloc[i])[:30]!r}, not a number", 422)
                df[col] = conv
        if "env" in df.columns:  # --telemetry-envs N: the laps and curves are env 0's
            env = pd.to_numeric(df["env"], errors="coerce")
            df = df[(env == 0) | env.isna()].drop(columns="env").reset_index(drop=True)
        return df


# ----------------------------------------------------------------------------------------- library


class TrackShelf:
    """Tracks the dashboard draws and measures laps on, loaded once (bundled names or a run's own path)."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Any:
        """A track by bundled name or by the path a run's own files name (cached)."""
        from kartsim.errors import KartsimError
        from kartsim.sim.track import Track

        with self._lock:
            hit = self._cache.get(name)
            if hit is not None:
                return hit
            try:
                t = Track.load(name)
            except KartsimError as exc:
                raise DashboardError(f"cannot load track {name!r}: {exc}", 422) from None
            except Exception as exc:
                raise DashboardError(f"cannot load track {name!r} ({exc.__class__.__name__})", 422) from None
            self._cache[name] = t
            return t

    def image(self, name: str, max_px: int = 900) -> dict[str, Any]:
        """The track as a PNG data URI with its placement in metres (for a Plotly image trace)."""
        key = f"img:{name}:{max_px}"
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        import base64

        from PIL import Image

        t = self.get(name)
        h, w = t.rgb.shape[:2]
        f = min(1.0, max_px / max(h, w))
        img = Image.fromarray(t.rgb)
        if f < 1.0:
            img = img.resize((max(1, int(round(w * f))), max(1, int(round(h * f)))), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        px = t.scale * w / img.width
        out = {"name": t.name, "source": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(),
               "dx": px, "dy": t.scale * h / img.height, "width_m": w * t.scale, "height_m": h * t.scale,
               "length_m": t.length}
        self._cache[key] = out
        return out

    @staticmethod
    def bundled() -> list[str]:
        """The bundled track images' names (circuit.png, ...)."""
        import kartsim

        folder = Path(kartsim.__file__).parent / "tracks"
        return sorted(p.name for p in folder.glob("*.png"))


class JobBoard:
    """The dashboard's view of a job store (none: an empty list): every job's state (a Ray cluster asked
    at most every 5 s a job), progress, device, last checkpoint and the runs root of its run folder."""

    def __init__(self, roots: dict[str, Root], location: str | None, settings: Any = None) -> None:
        self.roots = roots  # the library's: a local store's runs folder is added to them as "jobs"
        self.store = None
        self.problem: str | None = None
        self.settings = settings
        self._ray_cache: dict[str, tuple[float, Any]] = {}
        if location:
            self._open(location)

    def _open(self, location: str) -> None:
        from kartsim.jobs.store import LocalStore, open_store

        try:
            store = open_store(location)
        except Exception as exc:
            self.problem = f"cannot open the job store {location}: {exc}"
            return
        self.store = store
        if isinstance(store, LocalStore):
            if (store.root / "runs").resolve() != self.roots["runs"].path:
                self.roots["jobs"] = Root("jobs", (store.root / "runs").resolve(), store.display("runs"))

    def rows(self) -> dict[str, Any]:
        """Jobs of the job store with their state and progress (``{"jobs": [...], "problem": str|None}``)."""
        if self.store is None:
            return {"jobs": [], "problem": self.problem, "store": None}
        from kartsim.jobs.service import progress_of
        from kartsim.jobs.store import JobError, checkpoints_of, job_ids, load_job

        store = self.store
        out = []
        try:
            ids = job_ids(store)
        except Exception as exc:
            return {"jobs": [], "problem": f"cannot list jobs in {store.location}: {exc}", "store": store.location}
        for jid in reversed(ids[-200:]):
            try:
                job = load_job(store, jid)
            except (JobError, Exception):
                continue
            st, reason = self._state(job)
            progress = progress_of(store, job) or {}
            try:
                ckpts = checkpoints_of(store, job.save_name)
            except Exception:
                ckpts = []
            device = None
            if job.backend == "ray":
                used = job.options.get("num_gpus_used")
                device = None if used is None else ("GPU" if used else "CPU")
            run_key = self._runs_key()
            if run_key and (self.roots[run_key].path / job.save_name).is_dir():
                live = read_live(self.roots[run_key].path / job.save_name / LIVE_FILE) or {}
                device = device or (live.get("progress") or {}).get("device")
            else:
                run_key = None
            running = st in ("running", "pending", "starting")
            out.append({
                "id": job.id, "backend": job.backend, "state": st, "reason": reason, "save_name": job.save_name,
                "steps": progress.get("num_timesteps"), "total": progress.get("total_timesteps") or job.timesteps,
                "steps_per_second": progress.get("steps_per_second"),
                "eta_s": progress.get("eta_s") if running else None,
                "device": device, "created": job.created, "attempts": len(job.attempts),
                "usage": sample_text(progress.get("utilisation")) if running else None,
                "last_checkpoint": ckpts[-1][1].rsplit("/", 1)[-1] if ckpts else None,
                "run": {"root": run_key, "name": job.save_name} if run_key else None,
                "address": job.address,
            })
        return {"jobs": out, "problem": None, "store": store.location}

    def _runs_key(self) -> str | None:
        """The root holding the job store's run folders: "jobs", or "runs" when --runs is that very
        folder; None for a remote store."""
        if "jobs" in self.roots:
            return "jobs"
        root = getattr(self.store, "root", None)
        if root is not None and (root / "runs").resolve() == self.roots["runs"].path:
            return "runs"
        return None

    def _state(self, job: Any) -> tuple[str, str]:
        from kartsim.jobs.service import make_backend

        try:
            if job.backend == "ray":
                return self._ray_state(job)
            st = make_backend(job.backend, self.store, self._settings(), job.address).state(job)
            return st.state, st.reason
        except Exception as exc:
            return "unknown", str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__

    def _settings(self) -> Any:
        if self.settings is None:
            from kartsim.jobs.config import Settings

            self.settings = Settings()
        return self.settings

    def _ray_state(self, job: Any) -> tuple[str, str]:
        """Ray job states, asked at most every 5 s per job; an unreachable cluster is remembered for 15 s."""
        from kartsim.jobs.service import make_backend

        now = time.monotonic()
        address = job.address or ""
        down = self._ray_cache.get("down:" + address)
        if down and now - down[0] < 15.0:
            return "unknown", down[1]
        hit = self._ray_cache.get(job.id)
        if hit and now - hit[0] < 5.0:
            return hit[1]
        try:
            backend = make_backend("ray", self.store, self._settings(), job.address)
            backend.timeout_s = 2.0
            st = backend.state(job)
            value = (st.state, st.reason)
        except Exception as exc:
            msg = str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__
            self._ray_cache["down:" + address] = (now, msg)
            return "unknown", msg
        self._ray_cache[job.id] = (now, value)
        return value


class Library:
    """The dashboard's read-only view of the runs folder and (optionally) a job store."""

    def __init__(self, runs_dir: str | Path, job_store: str | None = None, jobs_settings: Any = None,
                 sweeps_dir: str | Path = "sweeps") -> None:
        self.runs_dir = Path(runs_dir).expanduser()
        self.sweeps_dir = Path(sweeps_dir).expanduser()
        self._sweep_cache: dict[str, tuple[Any, dict[str, Any]]] = {}
        self.roots: dict[str, Root] = {"runs": Root("runs", self.runs_dir.resolve(), str(runs_dir))}
        self.jobs = JobBoard(self.roots, job_store, jobs_settings)
        self.csv = TelemetryReader()
        self._tb: dict[str, Any] = {}
        self._tb_lock = threading.Lock()
        self.tracks = TrackShelf()

    # ------------------------------------------------------------------------------- paths

    def root(self, key: str) -> Root:
        root = self.roots.get(key)
        if root is None:
            raise DashboardError(f"unknown folder {key!r}; the dashboard reads only {', '.join(self.roots)}", 404)
        return root

    def resolve(self, key: str, rel: str) -> Path:
        """The path `rel` inside root `key`; DashboardError (403) when it leaves the root (``..``,
        an absolute path, a symlink pointing out)."""
        root = self.root(key)
        text = str(rel or "").replace("\\", "/")
        if not text or text.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", text) or "\0" in text:
            raise DashboardError(f"{rel!r} is outside the runs folder {root.label}; the dashboard reads only "
                                 "run folders", 403)
        parts = [p for p in text.split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            raise DashboardError(f"{rel!r} is outside the runs folder {root.label}; the dashboard reads only "
                                 "run folders", 403)
        path = root.path.joinpath(*parts)
        real = Path(os.path.realpath(path))
        try:
            real.relative_to(root.path)
        except ValueError:
            raise DashboardError(f"{rel!r} leads outside the runs folder {root.label} (a symlink?); refused", 403) from None
        return path

    def run_dir(self, key: str, name: str, must_exist: bool = True) -> Path:
        if not NAME_RE.match(name or "") or len(name) > MAX_NAME:
            raise DashboardError(f"{name!r} is not a run name (letters, digits, '.', '_', '-'; no folders)", 403)
        path = self.resolve(key, name)
        if must_exist and not path.is_dir():
            raise DashboardError(f"run {name} no longer exists in {self.root(key).label} (deleted?)", 404)
        return path

    # -------------------------------------------------------------------------------- runs

    def run_names(self, key: str) -> list[str]:
        root = self.root(key)
        try:
            entries = list(os.scandir(root.path))
        except OSError:
            return []
        names = []
        for e in entries:
            if e.name.startswith((".", "_")) or not NAME_RE.match(e.name):
                continue
            try:
                if not e.is_dir() or not any(os.path.exists(os.path.join(e.path, m)) for m in RUN_MARKERS):
                    continue
            except OSError:
                continue
            names.append(e.name)
        return sorted(names)

    def list_runs(self) -> list[dict[str, Any]]:
        out = []
        for key in self.roots:
            for name in self.run_names(key):
                try:
                    out.append(self.run_summary(key, name))
                except DashboardError:
                    continue  # deleted between the listing and the read
        out.sort(key=lambda r: r.get("updated") or 0, reverse=True)
        return out

    def run_summary(self, key: str, name: str) -> dict[str, Any]:
        run = self.run_dir(key, name)
        warnings: list[str] = []
        config, problem = _read_json(run / "config.json")
        if problem:
            warnings.append(problem)
        elif config is None:
            warnings.append("no config.json yet (a run being created, or not a kartsim run folder)")
        if not isinstance(config, dict):
            config = {}
        train = flat_train_dict(config.get("train"))  # either layout: flat (before the parts) or nested
        env = config.get("env") if isinstance(config.get("env"), dict) else {}
        live_path = run / LIVE_FILE
        live = read_live(live_path)
        live_mtime = _doc_time(live) or _mtime(live_path)
        progress = (live or {}).get("progress") if isinstance((live or {}).get("progress"), dict) else {}
        alive, live_reason = live_state(live)
        ckpts = _checkpoints(run)
        final = run / f"{name}_final.zip"
        telemetry = run / "telemetry_log.csv"
        tb = run / "tb"

        steps = progress.get("num_timesteps")
        if steps is None:
            numbered = [c[0] for c in ckpts if c[0] >= 0]
            steps = max(numbered) if numbered else None
            tail = _tail_step(telemetry) if telemetry.is_file() else None
            if tail is not None and (steps is None or tail > steps):
                steps = tail
        total = progress.get("total_timesteps") or train.get("timesteps")

        interrupted = [c for c in ckpts if c[2].endswith("_interrupted.zip")]
        if alive:
            state, reason = "running", ""
        elif final.is_file() and (not interrupted or (_mtime(final) or 0) >= interrupted[-1][1]):
            state, reason = "finished", ""
        elif interrupted:
            state, reason = "interrupted", "stopped with Ctrl-C / cancel; resume from the _interrupted checkpoint"
        elif live and live.get("active"):
            state, reason = "stopped", live_reason
        elif live and not live.get("active"):
            state, reason = "finished", ""
        else:
            recent = max([t for t in (_mtime(telemetry), _mtime(tb), _mtime(run)) if t] or [0])
            if time.time() - recent < STALE_S:
                state, reason = "running?", "files are changing but there is no live feed (KARTSIM_LIVE=0?)"
            else:
                state, reason = "stopped", "no final model, no live feed"
        track = env.get("track")
        if isinstance(track, list):
            track = ", ".join(map(str, track))
        updated = max([t for t in (live_mtime, _mtime(telemetry), _mtime(run), ckpts[-1][1] if ckpts else None) if t]
                      or [0])
        last = ckpts[-1] if ckpts else None
        return {
            "root": key, "name": name, "state": state, "reason": reason,
            "steps": steps, "total": total,
            "steps_per_second": progress.get("steps_per_second"),  # the last known rate (also of ended runs)
            "eta_s": progress.get("eta_s") if alive else None,
            "device": progress.get("device") or train.get("device"),
            "usage": sample_text(progress.get("utilisation")) if alive else None,  # GPU/CPU busy %, memory
            "last_checkpoint": None if last is None else {"name": last[2], "steps": last[0] if last[0] >= 0 else None,
                                                          "time": last[1]},
            "checkpoints": len(ckpts),
            "track": track, "vision": bool(env.get("vision", train.get("vision", False))),
            "started": config.get("started"), "updated": updated,
            "live": bool(alive), "live_reason": live_reason,
            "tensorboard": tb.is_dir(), "telemetry": telemetry.is_file(),
            "final_model": final.name if final.is_file() else None,
            "warnings": warnings,
            "train": {k: train.get(k) for k in ("timesteps", "vector_envs", "n_steps", "batch_size", "n_epochs",
                                                 "learning_rate", "gamma", "ent_coef", "seed", "device")
                      if k in train},
        }

    # ------------------------------------------------------------------------------ sweeps

    def list_sweeps(self) -> dict[str, Any]:
        """The sweeps of the sweeps folder (``kartsim sweep``): states, best trial, top trials.
        Each study is read again only when its database file changed (a few times a minute)."""
        out, problems = [], []
        if not self.sweeps_dir.is_dir():
            return {"sweeps": [], "problems": [], "dir": str(self.sweeps_dir)}
        for spec_file in sorted(self.sweeps_dir.glob("*/sweep.json")):
            try:
                out.append(self._sweep_summary(spec_file))
            except Exception as exc:  # a sweep being created, a database busy or unreadable
                problems.append(f"{spec_file.parent.name}: {str(exc).splitlines()[0][:200] if str(exc) else exc}")
        return {"sweeps": out, "problems": problems, "dir": str(self.sweeps_dir)}

    def _sweep_summary(self, spec_file: Path) -> dict[str, Any]:
        from kartsim.sweep.report import summary
        from kartsim.sweep.study import SweepSpec, load_study

        spec = SweepSpec.from_dict(json.loads(spec_file.read_text()))
        db = Path(spec.storage[len("sqlite:///"):]) if spec.storage.startswith("sqlite:///") else None
        stamp = (_mtime(db) if db else None, _mtime(spec_file), time.time() // 10 if db is None else 0)
        cached = self._sweep_cache.get(str(spec_file))
        if cached and cached[0] == stamp:
            return cached[1]
        data = summary(spec, load_study(spec))
        self._sweep_cache[str(spec_file)] = (stamp, data)
        return data

    # ------------------------------------------------------------------------ learning curves

    def curves(self, key: str, name: str) -> dict[str, Any]:
        """Scalars of the run's TensorBoard logs ({tag: {"steps": [...], "values": [...]}}) and
        per-episode curves from its telemetry CSV, with a message for each source that is missing or
        unreadable."""
        run = self.run_dir(key, name)
        out: dict[str, Any] = {"tb": {}, "episodes": None, "messages": []}
        tb = run / "tb"
        if tb.is_dir():
            try:
                out["tb"] = self._tb_scalars(tb)
            except DashboardError as exc:
                out["messages"].append(exc.message)
            if not out["tb"]:
                out["messages"].append("the TensorBoard logs have no scalars yet (they appear after the first "
                                       "rollout)")
        else:
            out["messages"].append("no TensorBoard logs (train with --tensorboard for losses and racing metrics)")
        csv = run / "telemetry_log.csv"
        if csv.is_file():
            try:
                out["episodes"] = self._episode_curves(csv, f"{name}/telemetry_log.csv")
            except DashboardError as exc:
                out["messages"].append(exc.message)
        if not run.is_dir():
            raise DashboardError(f"run {name} no longer exists (deleted?)", 404)
        return out

    def _tb_scalars(self, tb: Path) -> dict[str, dict[str, list[float]]]:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        dirs = sorted({p.parent for p in tb.rglob("events.out.tfevents.*")})
        merged: dict[str, dict[int, float]] = {}
        for d in dirs:
            with self._tb_lock:
                acc = self._tb.get(str(d))
                if acc is None:
                    acc = EventAccumulator(str(d), size_guidance={"scalars": 0})
                    self._tb[str(d)] = acc
                try:
                    acc.Reload()
                except Exception as exc:  # a corrupt or vanished event file
                    self._tb.pop(str(d), None)
                    if not d.exists():
                        raise DashboardError("the TensorBoard logs were deleted", 404) from None
                    raise DashboardError(f"cannot read the TensorBoard logs in {d.name} ({exc.__class__.__name__})",
                                         422) from None
                tags = acc.Tags().get("scalars", [])
                for tag in tags:
                    series = merged.setdefault(tag, {})
                    for ev in acc.Scalars(tag):
                        series[int(ev.step)] = float(ev.value)
        return {tag: {"steps": sorted(s), "values": [s[k] for k in sorted(s)]} for tag, s in merged.items()}

    def _episode_curves(self, csv: Path, label: str) -> dict[str, list[float]]:
        df = self.csv.read(csv, label)
        if "episode" not in df.columns or len(df) == 0:
            return {}
        g = df.groupby("episode", sort=True)
        agg = {"step": g["step"].max()}
        if "reward" in df.columns:
            agg["reward"] = g["reward"].sum()
        agg["laps"] = g["lap"].max()
        agg["mean_speed"] = g["speed"].mean()
        if "off_track" in df.columns:
            agg["off_track_share"] = g["off_track"].mean()
        import pandas as pd

        table = pd.DataFrame(agg).dropna(subset=["step"])
        if len(table) > 1:
            table = table.iloc[:-1]  # the last episode is still running
        out = {k: [None if not np.isfinite(v) else float(v) for v in table[k].to_numpy(dtype=float)] for k in table}
        return out

    # ------------------------------------------------------------------------------ telemetry CSVs

    def list_csvs(self) -> list[dict[str, Any]]:
        """Telemetry CSVs under the roots (a run's telemetry_log.csv, drives saved under the runs
        folder), newest first."""
        out = []
        for key, root in self.roots.items():
            try:
                found = list(root.path.rglob("*.csv"))
            except OSError:
                continue
            for p in found:
                rel = p.relative_to(root.path).as_posix()
                if any(part.startswith(".") for part in rel.split("/")) or rel.count("/") > 3:
                    continue
                try:
                    self.resolve(key, rel)  # a symlink out of the root is not listed
                except DashboardError:
                    continue
                try:
                    st = p.stat()
                except OSError:
                    continue
                run = rel.split("/")[0] if "/" in rel else None
                out.append({"csv": f"{key}/{rel}", "root": key, "rel": rel, "size": st.st_size, "mtime": st.st_mtime,
                            "label": self.csv_label(key, rel), "run": run})
        out.sort(key=lambda c: c["mtime"], reverse=True)
        return out

    @staticmethod
    def csv_label(key: str, rel: str) -> str:
        parts = rel.split("/")
        if len(parts) >= 2 and parts[-1] == "telemetry_log.csv":
            return parts[-2]
        return rel[:-4] if rel.endswith(".csv") else rel

    def csv_path(self, ref: str) -> tuple[str, str, Path]:
        """``<root>/<rel>`` -> (root key, rel, path); refuses what is not a CSV inside a root."""
        text = str(ref or "")
        key, _, rel = text.partition("/")
        if key not in self.roots:
            raise DashboardError(f"{ref!r} is outside the runs folder; pick a CSV from the list "
                                 f"(the dashboard reads only {', '.join(r.label for r in self.roots.values())})", 403)
        path = self.resolve(key, rel)
        if path.suffix.lower() != ".csv":
            raise DashboardError(f"{rel!r} is not a .csv file", 403)
        return key, rel, path

    def track_for_csv(self, key: str, rel: str) -> str | None:
        """The track named by the config.json of the run folder holding the CSV (None when unknown)."""
        parts = rel.split("/")
        if len(parts) < 2:
            return None
        config, _ = _read_json(self.root(key).path / parts[0] / "config.json")
        if not isinstance(config, dict):
            return None
        track = (config.get("env") or {}).get("track") if isinstance(config.get("env"), dict) else None
        if isinstance(track, list):
            track = track[0] if track else None
        if not isinstance(track, str) or track == "random":
            return None
        return track

    def guess_track(self, path: Path, label: str) -> str | None:
        """The bundled track a CSV without a run config (a `kartsim drive` log) was driven on: the one
        whose length matches the lap distance and whose road holds the driven points."""
        try:
            df = self.csv.read(path, label)
        except DashboardError:
            return None
        if len(df) < 20:
            return None
        top = float(np.nanmax(df["progress"].to_numpy(dtype=float)))
        sample = df.iloc[np.linspace(0, len(df) - 1, min(len(df), 400)).astype(int)]
        x, y = sample["x"].to_numpy(dtype=float), sample["y"].to_numpy(dtype=float)
        for name in self.tracks.bundled():
            try:
                t = self.tracks.get(name)
            except DashboardError:
                continue
            if not 0.8 * t.length <= top <= 1.01 * t.length:
                continue
            if float(np.mean(t.surface_at(x, y) != 0)) >= 0.97:  # 0 = wall
                return name
        return None

    def _csv_laps(self, ref: str) -> tuple[list[Any], str | None, str, str]:
        """The laps of a telemetry CSV, measured along its track when that is known (the run's own, or
        guessed from the driven line); also the track name, the CSV's label and its key/rel name."""
        key, rel, path = self.csv_path(ref)
        label = self.csv_label(key, rel)
        track_name = self.track_for_csv(key, rel) or self.guess_track(path, label)
        length = None
        if track_name:
            try:
                length = self.tracks.get(track_name).length
            except DashboardError:
                track_name = None
        return self.csv.laps(path, label, length), track_name, label, f"{key}/{rel}"

    def laps(self, ref: str) -> dict[str, Any]:
        laps, track_name, label, name = self._csv_laps(ref)
        rows = [{"episode": lap.episode, "lap": lap.number, "time": round(lap.time, 3),
                 "top_speed": round(float(lap.data["speed"].max()), 2),
                 "off_track": round(float(lap.data["off_track"].mean()), 3) if "off_track" in lap.data else None}
                for lap in laps]
        rows.sort(key=lambda r: r["time"])
        return {"csv": name, "label": label, "track": track_name, "laps": rows, "count": len(rows)}

    def lap(self, ref: str, episode: int, number: int) -> tuple[Any, str | None, str]:
        laps, track_name, label, _ = self._csv_laps(ref)
        for lap in laps:
            if lap.episode == int(episode) and lap.number == int(number):
                return lap, track_name, label
        raise DashboardError(f"{label}: no lap {number} in episode {episode} (the file changed?)", 404)

    # ------------------------------------------------------------------------------------ live

    def live_sources(self) -> list[dict[str, Any]]:
        """Training runs with a live feed, and play / drive sessions (``_live/*.json``)."""
        out = []
        for key, root in self.roots.items():
            for name in self.run_names(key):
                p = root.path / name / LIVE_FILE
                if not p.is_file():
                    continue
                doc = read_live(p)
                alive, reason = live_state(doc)
                out.append(self._live_entry("run", key, name, doc, alive, reason, _doc_time(doc) or _mtime(p)))
            folder = root.path / SESSIONS_DIR
            try:
                files = sorted(folder.glob("*" + FEED_SUFFIX))
            except OSError:
                files = []
            for p in files:
                if not NAME_RE.match(p.stem):
                    continue
                doc = read_live(p)
                alive, reason = live_state(doc)
                if not alive:
                    continue  # a session whose process was killed: its file stays, it is not live
                out.append(self._live_entry("session", key, p.stem, doc, alive, reason, _doc_time(doc) or _mtime(p)))
        out.sort(key=lambda s: (not s["live"], -(s["updated"] or 0)))
        return out

    @staticmethod
    def _live_entry(kind: str, key: str, name: str, doc: dict | None, alive: bool, reason: str,
                    mtime: float | None) -> dict[str, Any]:
        doc = doc or {}
        return {"id": f"{kind}/{key}/{name}", "kind": kind, "root": key, "name": name,
                "source": doc.get("kind"), "title": doc.get("name") or name, "live": alive, "reason": reason,
                "track": (doc.get("track") or {}).get("name"), "updated": mtime,
                "karts": len(doc.get("karts") or [])}

    def live_path(self, kind: str, key: str, name: str) -> Path:
        if kind == "run":
            return self.run_dir(key, name, must_exist=False) / LIVE_FILE
        if kind == "session":
            if not NAME_RE.match(name or ""):
                raise DashboardError(f"{name!r} is not a live session name", 403)
            return self.resolve(key, f"{SESSIONS_DIR}/{name}{FEED_SUFFIX}")
        raise DashboardError(f"unknown live source kind {kind!r} (run or session)", 404)

    def live_track(self, kind: str, key: str, name: str) -> dict[str, Any]:
        """The track image of a live source (from its document, else its run's config)."""
        path = self.live_path(kind, key, name)
        doc = read_live(path)
        if doc is None:
            raise DashboardError("the live feed is not there (ended, or not started yet)", 404)
        track = doc.get("track") or {}
        candidates = [c for c in (track.get("path"), track.get("name")) if c]
        problems = []
        for cand in candidates:
            try:
                return self.tracks.image(str(cand))
            except DashboardError as exc:
                problems.append(exc.message)
        size = track.get("size_m") or [0, 0]
        return {"name": track.get("name"), "source": None, "width_m": size[0], "height_m": size[1],
                "problem": "; ".join(problems) or "the track is not known (a generated track?)"}


__all__ = ["Library", "DashboardError", "TelemetryReader", "CURVES", "CURVE_GROUPS", "pid_alive", "live_state"]
