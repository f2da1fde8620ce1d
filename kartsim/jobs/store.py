"""The job store: a folder (or an fsspec URI) holding synced tracks, job records, logs and the run
artifacts of every job (layout: see `kartsim.jobs`). Paths inside the store are POSIX strings
relative to its root (``runs/x/checkpoints/x_128_steps.zip``)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from kartsim.errors import ConfigError, KartsimError


class JobError(KartsimError):
    """A job, job store or backend problem caused by user input (unknown job id, bad path, ...)."""


_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(location: str) -> bool:
    return bool(_SCHEME_RE.match(location))


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# ------------------------------------------------------------------------------------------ stores


class Store:
    """Where jobs keep their files. `LocalStore` (a folder) or `RemoteStore` (an fsspec URI)."""

    location: str  # absolute path or URI, as jobs are told it
    local: bool

    # file API (rel = POSIX path inside the store)
    def read_text(self, rel: str) -> str | None: ...
    def read_bytes(self, rel: str) -> bytes | None: ...
    def write_text(self, rel: str, text: str) -> None: ...
    def exists(self, rel: str) -> bool: ...
    def is_dir(self, rel: str) -> bool: ...
    def list(self, rel: str) -> list[str]: ...          # names in a folder ([] if missing)
    def files(self, rel: str) -> list[str]: ...         # rel paths of all files under a folder
    def upload(self, local: Path, rel: str) -> None: ...    # file or folder
    def download(self, rel: str, local: Path) -> None: ...  # file or folder
    def remove(self, rel: str) -> None: ...             # file or folder; missing is fine

    def display(self, rel: str = "") -> str:
        return self.location.rstrip("/") + ("/" + rel if rel else "")

    def read_json(self, rel: str) -> Any | None:
        text = self.read_text(rel)
        if text is None:
            return None
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return None

    def write_json(self, rel: str, data: Any) -> None:
        self.write_text(rel, json.dumps(data, indent=2, default=str) + "\n")


class LocalStore(Store):
    local = True

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.location = str(self.root)

    def p(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def read_text(self, rel: str) -> str | None:
        try:
            return self.p(rel).read_text()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            return self.p(rel).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def write_text(self, rel: str, text: str) -> None:
        path = self.p(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)  # atomic: readers never see half a file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, rel: str) -> bool:
        return self.p(rel).exists()

    def is_dir(self, rel: str) -> bool:
        return self.p(rel).is_dir()

    def list(self, rel: str) -> list[str]:
        try:
            return sorted(x.name for x in self.p(rel).iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def files(self, rel: str) -> list[str]:
        base = self.p(rel)
        if base.is_file():
            return [rel]
        return sorted(str(f.relative_to(self.root).as_posix()) for f in base.rglob("*") if f.is_file())

    def upload(self, local: Path, rel: str) -> None:
        dst = self.p(rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if Path(local).is_dir():
            shutil.copytree(local, dst, dirs_exist_ok=True)
        else:
            tmp = dst.with_name(f".{dst.name}.part")
            shutil.copyfile(local, tmp)
            os.replace(tmp, dst)

    def download(self, rel: str, local: Path) -> None:
        src = self.p(rel)
        local = Path(local)
        if src.is_dir():
            shutil.copytree(src, local, symlinks=True, dirs_exist_ok=True)  # links stay links: no data from outside
        else:
            local.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, local)

    def remove(self, rel: str) -> None:
        path = self.p(rel)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class RemoteStore(Store):
    """A store behind an fsspec URI (``s3://bucket/prefix``, ``gs://...``, ``file:///...``);
    falls back to pyarrow.fs when fsspec has no implementation for the scheme."""

    local = False

    def __init__(self, uri: str) -> None:
        self.location = uri.rstrip("/")
        try:
            from fsspec.core import url_to_fs

            self.fs, self.base = url_to_fs(self.location)
        except ImportError as exc:
            raise JobError(f"cannot open job store {uri}: {exc}; install the filesystem package "
                           "for that scheme (e.g. `pip install s3fs` for s3://)") from None
        except ValueError as exc:
            try:
                import pyarrow.fs as pafs  # noqa: F401
            except ImportError:
                raise JobError(f"cannot open job store {uri}: {exc}") from None
            from fsspec.implementations.arrow import ArrowFSWrapper

            fs, base = pafs.FileSystem.from_uri(self.location)
            self.fs, self.base = ArrowFSWrapper(fs), base
        self.base = self.base.rstrip("/")

    def p(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            with self.fs.open(self.p(rel), "rb") as fh:
                return fh.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def read_text(self, rel: str) -> str | None:
        data = self.read_bytes(rel)
        return None if data is None else data.decode("utf-8", "replace")

    def write_text(self, rel: str, text: str) -> None:
        path = self.p(rel)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(path, "wb") as fh:
            fh.write(text.encode())

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.p(rel)))

    def is_dir(self, rel: str) -> bool:
        return bool(self.fs.isdir(self.p(rel)))

    def list(self, rel: str) -> list[str]:
        try:
            return sorted(PurePosixPath(x).name for x in self.fs.ls(self.p(rel), detail=False))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def files(self, rel: str) -> list[str]:
        root = self.p(rel)
        if self.fs.isfile(root):
            return [rel]
        try:
            found = self.fs.find(root)
        except FileNotFoundError:
            return []
        prefix = self.base + "/"
        return sorted(f[len(prefix):] if f.startswith(prefix) else f for f in found)

    def upload(self, local: Path, rel: str) -> None:
        dst = self.p(rel)
        local = Path(local)
        if local.is_dir():
            for f in sorted(local.rglob("*")):
                if f.is_file():
                    self.upload(f, f"{rel}/{f.relative_to(local).as_posix()}")
            return
        self.fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
        self.fs.put_file(str(local), dst)

    def download(self, rel: str, local: Path) -> None:
        local = Path(local)
        if self.is_dir(rel):
            for f in self.files(rel):
                self.download(f, local / PurePosixPath(f).relative_to(rel))
            return
        local.parent.mkdir(parents=True, exist_ok=True)
        self.fs.get_file(self.p(rel), str(local))

    def remove(self, rel: str) -> None:
        try:
            self.fs.rm(self.p(rel), recursive=True)
        except FileNotFoundError:
            pass


def open_store(location: str | Path) -> Store:
    """A plain path (``./kartsim-jobs``) opens a `LocalStore`; a URI (``s3://...``, ``file://...``)
    a `RemoteStore`."""
    text = str(location)
    if not text:
        raise ConfigError("the job store location is empty; pass --store PATH")
    if is_uri(text):
        return RemoteStore(text)
    if Path(text).expanduser().exists() and not Path(text).expanduser().is_dir():
        raise ConfigError(f"the job store {text} is a file; give a folder (--store DIR)")
    return LocalStore(text)


# ----------------------------------------------------------------------------------- job records

JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class JobState:
    state: str                    # starting | pending | running | succeeded | failed | cancelled | unknown
    reason: str = ""
    exit_code: int | None = None
    ended: str | None = None
    pid: int | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @classmethod
    def from_exit(cls, ex: dict[str, Any]) -> "JobState":
        return cls(str(ex.get("state", "failed")), str(ex.get("reason", "")), ex.get("exit_code"), ex.get("ended"))


@dataclass
class Attempt:
    """One start of a job (the first run, then one per `resume`)."""

    n: int
    started: str
    resume_from: str | None = None   # store path of the checkpoint this attempt continues from
    timesteps: int | None = None     # --timesteps given to `resume` (the new total)
    pid: int | None = None           # local: the wrapper process (its process group has the same id)
    start_token: str | None = None   # local: the process start time from /proc, to detect pid reuse
    submission_id: str | None = None  # ray: the Ray job submission id


@dataclass
class JobRecord:
    id: str
    backend: str
    config: dict[str, Any]           # the `kartsim train` settings given: {dotted TrainConfig path: value}
    #                                  (tracks rewritten to synced names, input files to staged ones)
    save_name: str
    timesteps: int
    vision: bool = False
    tracks: list[str] = field(default_factory=list)  # track names the job passes (synced ones by file name)
    address: str | None = None       # ray: the dashboard address it was submitted to
    created: str = field(default_factory=now_iso)
    attempts: list[Attempt] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # backend extras (ray: num_gpus, num_cpus)

    @property
    def attempt(self) -> Attempt:
        return self.attempts[-1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "job.json") -> "JobRecord":
        """A record from its JSON; JobError naming `source` when a field is missing or of the wrong
        type (a job store is shared: a damaged or hand-edited file must not crash a command)."""
        def damaged(what: str) -> JobError:
            return JobError(f"{source} is damaged ({what}); fix it, or delete the job's folder")

        if not isinstance(data, dict):
            raise damaged("not a JSON object")
        attempts = data.get("attempts")
        if not isinstance(attempts, list) or not attempts or not all(isinstance(a, dict) for a in attempts):
            raise damaged("'attempts' must be a non-empty list of objects")
        names = {f.name for f in dataclasses.fields(Attempt)}
        records = []
        for a in attempts:
            attempt = Attempt(**{k: v for k, v in a.items() if k in names}) if {"n", "started"} <= set(a) else None
            if attempt is None:
                raise damaged("an attempt without 'n' and 'started'")
            _check_types(attempt, damaged)
            records.append(attempt)
        if not {"id", "backend", "save_name", "timesteps"} <= set(data) or not {"config", "argv"} & set(data):
            raise damaged("missing id, backend, config, save_name or timesteps")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names and k != "attempts"}
        if "config" not in values:  # a job recorded before jobs kept the config dict: its command line
            values["config"] = _config_of_argv(data["argv"], damaged)
        job = cls(**values, attempts=records)
        _check_types(job, damaged)
        if not all(isinstance(v, str) for v in job.tracks) or not all(isinstance(k, str) for k in job.config):
            raise damaged("'tracks' must be a list of strings, 'config' an object of TrainConfig paths")
        return job


def _config_of_argv(argv: Any, damaged: Any) -> dict[str, Any]:
    from kartsim.errors import ConfigError
    from kartsim.rl.train_cmd import values_from_argv

    if not isinstance(argv, list) or not all(isinstance(v, str) for v in argv):
        raise damaged("'argv' must be a list of strings")
    try:
        return values_from_argv(argv)
    except ConfigError as exc:
        raise damaged(f"'argv': {exc}") from None


def _check_types(record: Any, damaged: Any) -> None:
    """Each field of a job-store dataclass holds its annotated type (int / str / bool / list / dict, or None)."""
    kinds = {"int": int, "str": str, "bool": bool, "list": list, "dict": dict}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        allowed = [kinds.get(part.split("[", 1)[0]) for part in str(f.type).replace(" ", "").split("|")]
        if value is None and "None" in str(f.type):
            continue
        if not any(t is not None and isinstance(value, t) and not (t is int and isinstance(value, bool)) for t in allowed):
            raise damaged(f"{f.name!r} is {value!r}")


def job_dir(job_id: str) -> str:
    return f"jobs/{job_id}"


def exit_rel(job_id: str, n: int) -> str:
    return f"jobs/{job_id}/attempt-{n}.exit.json"


def cancel_rel(job_id: str, n: int) -> str:
    return f"jobs/{job_id}/attempt-{n}.cancel"


def runner_rel(job_id: str, n: int) -> str:
    return f"jobs/{job_id}/attempt-{n}.runner.json"


def log_rel(job_id: str) -> str:
    return f"jobs/{job_id}/log.txt"


def progress_rel(job_id: str) -> str:
    return f"jobs/{job_id}/progress.json"


def save_job(store: Store, job: JobRecord) -> None:
    store.write_json(f"{job_dir(job.id)}/job.json", job.to_dict())


def job_ids(store: Store) -> list[str]:
    """Ids of the jobs in the store, oldest first."""
    jobs = []
    for name in store.list("jobs"):
        data = store.read_json(f"jobs/{name}/job.json")
        if isinstance(data, dict):
            jobs.append((str(data.get("created", "")), name))
    return [name for _, name in sorted(jobs)]


def load_job(store: Store, job_id: str) -> JobRecord:
    """The job with this id (or a unique prefix of one); JobError listing recent ids otherwise."""
    if job_id and JOB_ID_RE.match(job_id):
        rel = f"jobs/{job_id}/job.json"
        if store.exists(rel):
            data = store.read_json(rel)
            if data is None:
                raise JobError(f"{store.display(rel)} is not valid JSON (damaged?); fix it, or delete the job's folder")
            return JobRecord.from_dict(data, store.display(rel))
    ids = job_ids(store)
    matches = [i for i in ids if i.startswith(job_id)] if job_id else []
    if len(matches) == 1:
        rel = f"jobs/{matches[0]}/job.json"
        return JobRecord.from_dict(store.read_json(rel), store.display(rel))
    if len(matches) > 1:
        raise JobError(f"job id {job_id!r} is ambiguous: {', '.join(matches[-8:])}")
    if ids:
        recent = ", ".join(reversed(ids[-5:]))
        raise JobError(f"unknown job {job_id!r} in the job store {store.location}; recent jobs: {recent} "
                       "(the `list` command shows all)")
    raise JobError(f"unknown job {job_id!r}: the job store {store.location} has no jobs yet "
                   "(start one with `kartsim jobs train ... --detach`, or check --store)")


def new_job_id(store: Store, save_name: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", save_name)[:40] or "job"
    while True:
        cand = f"{base}-{os.urandom(2).hex()}"
        if not store.exists(job_dir(cand)):
            return cand


# ---------------------------------------------------------------------------------- checkpoints

_STEPS_RE = re.compile(r"_(\d+)_steps\.zip$")


def checkpoints_of(store: Store, save_name: str) -> list[tuple[int, str]]:
    """(env steps, store path) of the run's checkpoints, oldest first. The step count comes from the
    file name (``<name>_<N>_steps.zip``) or, for ``<name>_interrupted.zip``, from inside the zip."""
    rel = f"runs/{save_name}/checkpoints"
    found: list[tuple[int, float, str]] = []
    for name in store.list(rel):
        if not name.endswith(".zip") or name.startswith("."):
            continue
        m = _STEPS_RE.search(name)
        if m:
            steps = int(m.group(1))
        else:
            steps = steps_inside(store, f"{rel}/{name}")
            if steps is None:
                continue
        mtime = 0.0
        if isinstance(store, LocalStore):
            try:
                mtime = store.p(f"{rel}/{name}").stat().st_mtime
            except OSError:
                pass
        found.append((steps, mtime, f"{rel}/{name}"))
    found.sort()
    return [(s, r) for s, _, r in found]


def steps_inside(store: Store, rel: str) -> int | None:
    import io
    import zipfile

    data = store.read_bytes(rel)
    if data is None:
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            payload = json.loads(zf.read("kartsim_config.json"))
        return int(payload.get("num_timesteps"))
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError):
        return None


# ---------------------------------------------------------------------------------------- fetch

def _escape_error(path: str) -> JobError:
    return JobError(f"--path {path!r} escapes the job store; give a path inside it (e.g. models/NAME_final.zip, "
                    "runs/NAME/telemetry_log.csv) or just a file name")


def clean_store_path(path: str) -> str:
    """A store-relative POSIX path from user input; JobError for absolute paths and ``..``."""
    raw = path.strip()
    if not raw:
        raise JobError("--path is empty; give a file name such as NAME_final.zip")
    if is_uri(raw) or raw.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", raw):
        raise _escape_error(path)
    parts = [p for p in PurePosixPath(raw.replace("\\", "/")).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        raise _escape_error(path)
    return "/".join(parts)


def find_in_store(store: Store, path: str, job: JobRecord | None = None,
                  echo: Callable[[str], None] | None = None) -> str:
    """The store path that `path` names: a path inside the store, or a bare file / folder name looked
    up in models/ and the run folders (with `job`: only that job's run). When the name is in several
    jobs' runs, the latest job's is taken and `echo` says so. JobError when it escapes the store,
    matches nothing, or matches several files none of which is the latest job's."""
    rel = _inside(store, clean_store_path(path), path)
    return _inside(store, _find(store, rel, job, echo), path)


def _inside(store: Store, rel: str, path: str) -> str:
    if isinstance(store, LocalStore):
        real = os.path.realpath(store.p(rel))
        if os.path.commonpath([real, str(store.root)]) != str(store.root):
            raise _escape_error(path)  # a symlink inside the store that points out of it
    return rel


def _latest_job_hit(store: Store, hits: list[str]) -> tuple[str, str] | None:
    """(hit, job id) for the newest job whose run folder holds one of `hits` (``runs/<name>/...``)."""
    by_run = {h.split("/")[1]: h for h in hits if h.startswith("runs/")}
    for jid in reversed(job_ids(store)):
        data = store.read_json(f"jobs/{jid}/job.json") or {}
        hit = by_run.get(str(data.get("save_name")))
        if hit is not None:
            return hit, jid
    return None


def _find(store: Store, rel: str, job: JobRecord | None, echo: Callable[[str], None] | None = None) -> str:
    scope = f"runs/{job.save_name}/" if job else ""
    models = (f"{job.save_name}_final.zip", f"{job.save_name}_best.zip") if job else ()
    if store.exists(rel) and (not job or rel.startswith(scope) or rel in [f"models/{m}" for m in models]
                              or rel.startswith(f"jobs/{job.id}/")):
        return rel
    if job and store.exists(scope + rel):
        return scope + rel
    if "/" not in rel:
        name = rel
        tiers: list[list[str]] = []
        if job:
            tiers.append([f"models/{name}"] if name in models else [])
            tiers.append([f"{scope}checkpoints/{name}", f"jobs/{job.id}/{name}"])
        else:
            tiers.append([f"models/{name}"])
            runs = store.list("runs")
            tiers.append([f"runs/{r}/{name}" for r in runs] + [f"runs/{r}/checkpoints/{name}" for r in runs])
            tiers.append([f"runs/{name}", f"tracks/{name}"])
        for tier in tiers:
            hits = [c for c in tier if store.exists(c)]
            if len(hits) == 1:
                return hits[0]
            latest = _latest_job_hit(store, hits) if len(hits) > 1 and not job else None
            if latest is not None:
                if echo is not None:
                    echo(f"{name} is in {len(hits)} runs of the job store; taking the latest job's ({latest[1]}): "
                         f"{latest[0]} (another one: --job JOB)")
                return latest[0]
            if len(hits) > 1:
                raise JobError(f"{name} is ambiguous in the job store: {', '.join(hits)}; pass one of these "
                               "as --path (or --job JOB)")
    final = f"models/{rel[:-4]}_final.zip"
    if "/" not in rel and rel.endswith(".zip") and not rel.endswith("_final.zip") and store.exists(final) and (
            not job or final == f"models/{job.save_name}_final.zip"):
        # the guide fetches `--path ppo_50m_master.zip`: the final model of the run of that name
        if echo is not None:
            echo(f"no {rel} in the job store: taking the final model of run {rel[:-4]!r}, {final}")
        return final
    where = f"job {job.id}'s run ({scope})" if job else f"the job store {store.location}"
    models = [m for m in store.list("models") if m.endswith(".zip")]
    hint = f"; models there: {', '.join(models[-6:])}" if models else "; it has no final models yet"
    raise JobError(f"nothing to fetch: no {rel!r} in {where}{hint}")
