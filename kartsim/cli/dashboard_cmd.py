"""``kartsim dashboard [--runs runs/] [--port 8050] [--host 127.0.0.1]``: a local web app over the
run folders (runs and jobs, learning curves, live driving, lap analysis)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "dashboard", help="web dashboard: runs and jobs, learning curves, live driving, lap analysis",
        description="Serve a local web app over the run folders: every run and job with its progress, a run's "
                    "learning curves, live driving (training, play and drive sessions) and lap analysis. It reads "
                    "only the runs folder (and the job store's runs).")
    p.add_argument("--runs", default="runs", metavar="DIR", help="the runs folder to show (default runs)")
    p.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--store", "--storage", dest="store", default=None, metavar="PATH",
                   help="job store whose jobs to list (default: as `kartsim jobs` resolves it, ./kartsim-jobs)")
    p.add_argument("--no-jobs", action="store_true", help="do not list jobs")
    p.add_argument("--sweeps", default="sweeps", metavar="DIR", help="folder of sweeps to list (default sweeps)")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from kartsim.dashboard.app import is_loopback, serve
    from kartsim.errors import ConfigError

    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, not {args.port}")
    runs = Path(args.runs).expanduser()
    if runs.exists() and not runs.is_dir():
        raise ConfigError(f"--runs {runs} is a file; give the folder that holds the run folders")
    if not runs.exists():
        print(f"note: {runs} does not exist yet; runs appear once `kartsim train` creates it")
    store = settings = None
    if not args.no_jobs:
        from kartsim.jobs.config import resolve_settings

        try:
            settings = resolve_settings(store=args.store)
            store = settings.store
        except ConfigError as exc:
            print(f"note: not listing jobs ({exc})", file=sys.stderr)
        if store and "://" not in store and not Path(store).is_dir():
            store = None  # no local job store yet
    if not is_loopback(args.host):
        print(f"warning: --host {args.host} exposes the dashboard (your runs, their telemetry and models' progress) "
              f"to every machine that can reach this one on port {args.port}, without authentication; use it only "
              "on a trusted network", file=sys.stderr)
    try:
        serve(runs, host=args.host, port=args.port, job_store=store, jobs_settings=settings, sweeps_dir=args.sweeps)
    except KeyboardInterrupt:
        pass
    return 0
