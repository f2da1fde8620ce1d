"""Which backend, job store and Ray address the job commands use.

Each setting comes from, first found: the command-line flag, the environment, ``./kartsim-jobs.json``,
``$XDG_CONFIG_HOME/kartsim/jobs.json`` (default ``~/.config/kartsim/jobs.json``), the default.

=========  =====================  ========================  =========================
setting    flag                   environment               default
=========  =====================  ========================  =========================
backend    ``--backend``          ``KARTSIM_JOBS_BACKEND``  ``local``
store      ``--store/--storage``  ``KARTSIM_JOB_STORE``     ``./kartsim-jobs``
address    ``--address``          ``KARTSIM_RAY_ADDRESS``   ``http://127.0.0.1:8265``
=========  =====================  ========================  =========================

A config file is one JSON object, e.g. ``{"backend": "ray", "address": "http://10.0.0.5:8265",
"store": "/shared/kartsim-jobs", "num_gpus": 1}``; ``KARTSIM_JOBS_CONFIG`` names another file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kartsim.errors import ConfigError

BACKENDS = ("local", "ray")
DEFAULT_STORE = "kartsim-jobs"
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
ENV = {"backend": "KARTSIM_JOBS_BACKEND", "store": "KARTSIM_JOB_STORE", "address": "KARTSIM_RAY_ADDRESS"}
KEYS = {"backend", "store", "storage", "address", "num_gpus", "num_cpus"}


@dataclass
class Settings:
    backend: str = "local"
    store: str = DEFAULT_STORE
    address: str = DEFAULT_ADDRESS
    num_gpus: float | None = None      # ray: GPUs for the job (None: 1 when the cluster has any)
    num_cpus: float | None = None      # ray: CPUs reserved for the job's driver (None: Ray's default)
    explicit: set[str] = field(default_factory=set)  # settings not left at their default


def config_files() -> list[Path]:
    if os.environ.get("KARTSIM_JOBS_CONFIG"):
        return [Path(os.environ["KARTSIM_JOBS_CONFIG"]).expanduser()]
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path("~/.config").expanduser())
    return [Path("kartsim-jobs.json"), home / "kartsim" / "jobs.json"]


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read jobs config {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"jobs config {path} is not valid JSON ({exc}); fix or delete it") from None
    if not isinstance(data, dict):
        raise ConfigError(f"jobs config {path} must be a JSON object like {{\"backend\": \"ray\"}}")
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise ConfigError(f"jobs config {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(KEYS))}")
    if "storage" in data:
        data.setdefault("store", data.pop("storage"))
    return data


def normalize_address(address: str) -> str:
    """``HOST:PORT`` -> ``http://HOST:PORT``; ray:// (client) addresses are refused."""
    text = address.strip().rstrip("/")
    if text.startswith("ray://"):
        raise ConfigError(f"--address {address}: the jobs backend talks to the Ray dashboard (Jobs API), e.g. "
                          "http://HEAD:8265, not a ray:// client address")
    if "://" not in text:
        text = "http://" + text
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"--address {address!r} is not a Ray dashboard address like http://127.0.0.1:8265")
    return text


def is_loopback(address: str) -> bool:
    host = urlparse(address).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def resolve_settings(backend: str | None = None, store: str | None = None, address: str | None = None,
                     num_gpus: float | None = None, num_cpus: float | None = None) -> Settings:
    """Settings from flags (None: not given), then environment, then config files, then defaults."""
    flags = {"backend": backend, "store": store, "address": address, "num_gpus": num_gpus, "num_cpus": num_cpus}
    files = [_read_config(p) for p in config_files() if p.is_file()]
    values: dict[str, Any] = {}
    s = Settings()
    for key in flags:
        candidates = [flags[key], os.environ.get(ENV[key]) if key in ENV else None, *(f.get(key) for f in files)]
        for value in candidates:
            if value is not None and value != "":
                values[key] = value
                s.explicit.add(key)
                break
    s.backend = str(values.get("backend", s.backend)).lower()
    if s.backend not in BACKENDS:
        raise ConfigError(f"unknown jobs backend {s.backend!r}; use local or ray (--backend, {ENV['backend']})")
    s.address = normalize_address(str(values.get("address", s.address)))
    s.store = str(values.get("store", s.store))
    for key in ("num_gpus", "num_cpus"):
        if key in values:
            try:
                v = float(values[key])
            except (TypeError, ValueError):
                raise ConfigError(f"{key} must be a number, not {values[key]!r}") from None
            if v < 0:
                raise ConfigError(f"{key} must be >= 0, not {v}")
            setattr(s, key, v)
    if "://" not in s.store:
        s.store = str(Path(s.store).expanduser().resolve())
    return s
