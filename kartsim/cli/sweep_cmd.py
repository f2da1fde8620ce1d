"""``kartsim sweep run|resume|status|report NAME``: hyperparameter searches and seed studies.

    kartsim sweep run lr --set learning_rate=loguniform:1e-4:3e-3 --set n_epochs=choice:3,5,8 \\
        --trials 24 --timesteps 200000            # TPE search, median pruning, 1 seed per trial
    kartsim sweep run seeds --seeds 0-7 --timesteps 200000   # the same config, 8 seeds
    kartsim sweep status lr                       # trials, states, best so far
    kartsim sweep resume lr                       # after a crash / on another machine sharing --storage
    kartsim sweep report lr --out lr-report       # table, importances, best command line, plots

Every ``kartsim train`` flag holds for all trials. The study is an Optuna study in
``sweeps/<name>/study.db`` (or ``--storage URL``); see `kartsim.sweep`.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from kartsim.errors import ConfigError

OWN_FIELDS = {"seed": "--seeds", "save_name": "the sweep names its trials NAME-<n>", "resume": "every trial trains from scratch; to continue a sweep use kartsim sweep resume NAME"}


def _add_where(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the sweep's name (its folder: <sweeps-dir>/NAME)")
    p.add_argument("--sweeps-dir", default="sweeps", metavar="DIR", help="folder of sweep folders (default sweeps)")
    p.add_argument("--storage", metavar="URL",
                   help="the study database, an SQLAlchemy URL (default sqlite:///<sweeps-dir>/NAME/study.db); "
                        "machines that share it work on one study")


def _add_workers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, metavar="N",
                   help="local: trials trained at once (default: one per core for rays, per 4 cores for vision)")
    p.add_argument("--threads", type=int, metavar="N", help="local: torch threads per trial (default: cores / workers)")


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    from kartsim.rl.train_cmd import add_train_arguments

    _add_where(p)
    s = p.add_argument_group("search")
    s.add_argument("--set", dest="dims", action="append", default=[], metavar="FIELD=DIST",
                   help="search a TrainConfig field: loguniform:A:B, uniform:A:B, int:A:B or choice:X,Y "
                        "(e.g. learning_rate=loguniform:1e-4:3e-3; repeatable)")
    s.add_argument("--env", dest="env_dims", action="append", default=[], metavar="KEY=DIST",
                   help="search an env option the same way (e.g. reward.progress=uniform:0.5:2; repeatable)")
    s.add_argument("--seeds", metavar="SEEDS",
                   help="seeds, e.g. 0-7 or 0,3,5: alone, one trial per seed; with --set, every trial trains "
                        "each seed and scores the median (default: seed 0)")
    s.add_argument("--sampler", default="tpe", help="tpe (default), random or grid (choice:/int: dimensions)")
    s.add_argument("--trials", type=int, default=20, help="finished trials to run (default 20; grid: the grid)")
    s.add_argument("--metric", default="ref_ratio",
                   help="ref_ratio (default: best lap / reference lap, lower is better), lap_time, or return")
    s.add_argument("--pruner", default="median", help="median (default), asha or none")
    s.add_argument("--eval-every", type=int, metavar="STEPS",
                   help="env steps between deterministic evaluations (default timesteps / 8)")
    s.add_argument("--eval-episodes", type=int, default=1, help="episodes per evaluation and track (default 1)")
    s.add_argument("--eval-max-steps", type=int, default=2000, help="steps per evaluation episode (default 2000)")
    s.add_argument("--eval-track", nargs="+", metavar="TRACK",
                   help="tracks to evaluate on (default: the training tracks); e.g. held-out generated tracks")
    s.add_argument("--baseline", action="store_true",
                   help="run the base config's own values (kartsim train's defaults and your flags) as the first "
                        "trial, the point to beat")
    s.add_argument("--sampler-seed", type=int, default=0, help="seed of the sampler (default 0)")
    s.add_argument("--heartbeat", type=int, default=30, metavar="S",
                   help="seconds between a running trial's heartbeats; one silent for 2x this (killed) is rerun")
    b = p.add_argument_group("backend")
    b.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local (default: worker processes here) or ray (Ray Tune on the `kartsim jobs` cluster)")
    _add_workers(b)
    b.add_argument("--store", metavar="PATH", help="ray: the job store (default: as `kartsim jobs` resolves it)")
    b.add_argument("--address", metavar="URL", help="ray: the Ray dashboard (default: as `kartsim jobs` resolves it)")
    b.add_argument("--num-gpus", type=float, metavar="N", help="ray: GPUs per trial (default: 1 when the cluster has any)")
    b.add_argument("--detach", action="store_true", help="ray: start the sweep and return")
    add_train_arguments(p, eval_flags=False)


def _dims(args: argparse.Namespace) -> list[Any]:
    from kartsim.sweep.space import parse_env, parse_set

    dims = [parse_set(t) for t in args.dims] + [parse_env(t) for t in args.env_dims]
    names = [d.name for d in dims]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{dup[0]} is searched twice; give one --set / --env for it")
    return dims


def _eval_tracks(names: list[str]) -> dict[str, dict[str, float]]:
    """Reference lap and length of each evaluation track (computed once, here, for every trial)."""
    from kartsim.envs.tracks import track_paths
    from kartsim.drivers.racing_line import reference_lap_time
    from kartsim.sim.track import Track

    out = {}
    for path in track_paths(names):
        track = Track.load(path)
        key = str(Path(path).resolve()) if Path(path).exists() else path
        out[key] = {"ref_lap": round(float(reference_lap_time(track)), 3), "length_m": round(float(track.length), 1)}
    return out


def _spec(args: argparse.Namespace, sweep_dir: Path) -> Any:
    from kartsim.rl.config import dotted, flat_train_dict, validate
    from kartsim.rl.train_cmd import config_from_args
    from kartsim.sweep.space import parse_seeds
    from kartsim.sweep.study import SweepSpec, default_storage, now_iso

    cfg, given = config_from_args(args)
    for name, hint in OWN_FIELDS.items():
        if dotted(name) in given:
            raise ConfigError(f"--{name.replace('_', '-')} does not apply to a sweep ({hint})")
    resolved = cfg.resolved()
    validate(resolved)  # a base config that cannot train fails here, not in every trial
    dims = _dims(args)
    seeds = parse_seeds(args.seeds) if args.seeds else [0]
    timesteps = resolved.run.timesteps
    # sweep trials: no progress bars, no checkpoints or telemetry unless asked (they cost time and disk)
    train = flat_train_dict(cfg.to_dict())
    for key, default in (("checkpoint_freq", 0), ("telemetry_every", 0)):
        if dotted(key) not in given:
            train[key] = default
    spec = SweepSpec(
        name=args.name, train=train, given=sorted(given), dims=dims, seeds=seeds,
        metric=args.metric, sampler=args.sampler if dims else "grid", pruner=args.pruner, trials=args.trials,
        eval_every=args.eval_every or max(1, timesteps // 8), eval_episodes=args.eval_episodes,
        eval_max_steps=args.eval_max_steps, storage=args.storage or default_storage(sweep_dir),
        backend=args.backend, heartbeat_s=args.heartbeat, sampler_seed=args.sampler_seed, created=now_iso())
    spec.validate()
    spec.eval_tracks = _eval_tracks(args.eval_track or list(resolved.task.track))
    return spec


def _cmd_run(args: argparse.Namespace) -> int:
    from kartsim.sweep.study import create_study, save_spec

    if getattr(args, "run.seed") is not None:
        raise ConfigError("--seed does not apply to a sweep; give --seeds 0-7 (or --seeds 3 for one seed)")
    sweep_dir = Path(args.sweeps_dir) / args.name
    from kartsim.rl.config import _NAME_RE

    if not _NAME_RE.match(args.name):
        raise ConfigError(f"sweep name {args.name!r} must be a plain name (letters, digits, '.', '_', '-')")
    spec = _spec(args, sweep_dir)
    if args.backend == "ray":
        from kartsim.sweep.ray_tune import prepare

        prepare(spec, args, storage_given=bool(args.storage))
    force = bool(getattr(args, "run.force"))  # the train flag --force: start the sweep over
    if sweep_dir.exists() and not force:
        raise ConfigError(f"sweep folder {sweep_dir} already exists; continue it with `kartsim sweep resume "
                          f"{args.name}`, pass --force to delete it and start over, or choose another name")
    if force:
        _delete_sweep(spec, sweep_dir)
    baseline = None
    if args.baseline:
        from kartsim.sweep.space import baseline_point

        if spec.seed_sweep:
            raise ConfigError("--baseline needs a search (--set / --env); a seed sweep runs the base config anyway")
        baseline = baseline_point(spec.dims, spec.train)
    save_spec(spec, sweep_dir)
    study = create_study(spec)
    if baseline is not None:
        study.enqueue_trial(baseline, user_attrs={"baseline": True})
    if args.backend == "ray":
        from kartsim.sweep.ray_tune import run_ray

        return run_ray(spec, sweep_dir, args)
    return _run_local(spec, sweep_dir, args)


def _delete_sweep(spec: Any, sweep_dir: Path) -> None:
    """--force: the old study, its folder and its trial runs / models."""
    import optuna

    from kartsim.sweep.study import open_storage

    try:
        optuna.delete_study(study_name=spec.name, storage=open_storage(spec))
    except KeyError:  # no study of that name in the database
        pass
    runs, models = Path(spec.train.get("runs_dir") or "runs"), Path(spec.train.get("models_dir") or "models")
    for path in list(runs.glob(f"{spec.name}-*")) + list(models.glob(f"{spec.name}-*_final.zip")):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(sweep_dir, ignore_errors=True)


def _run_local(spec: Any, sweep_dir: Path, args: argparse.Namespace) -> int:
    from kartsim.sweep.local import run_local
    from kartsim.sweep.report import status_text
    from kartsim.sweep.study import load_study

    runs_dir, models_dir = spec.train.get("runs_dir") or "runs", spec.train.get("models_dir") or "models"
    code = run_local(spec, sweep_dir, args.workers, args.threads, runs_dir, models_dir)
    print(status_text(spec, load_study(spec)))
    return code


def _cmd_resume(args: argparse.Namespace) -> int:
    from kartsim.sweep.study import find_spec, save_spec

    spec, sweep_dir = find_spec(args.name, Path(args.sweeps_dir), args.storage)
    if args.trials is not None:
        if args.trials < 1:
            raise ConfigError(f"--trials must be >= 1, not {args.trials}")
        spec.trials = args.trials
    if not (sweep_dir / "sweep.json").exists() or args.trials is not None:
        save_spec(spec, sweep_dir)
    if spec.backend == "ray":
        from kartsim.sweep.ray_tune import run_ray

        return run_ray(spec, sweep_dir, args)
    return _run_local(spec, sweep_dir, args)


def _cmd_status(args: argparse.Namespace) -> int:
    from kartsim.sweep.report import status_text
    from kartsim.sweep.study import find_spec, load_study

    spec, _ = find_spec(args.name, Path(args.sweeps_dir), args.storage)
    print(status_text(spec, load_study(spec)))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from kartsim.sweep.report import write_report
    from kartsim.sweep.study import find_spec, load_study

    spec, _ = find_spec(args.name, Path(args.sweeps_dir), args.storage)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        raise ConfigError(f"{out} already exists; pass --force to overwrite it or choose another --out")
    files = write_report(spec, load_study(spec), out, top=args.top)
    print(f"report of sweep {spec.name}: {', '.join(str(f) for f in files)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sweep", help="hyperparameter searches and seed studies (Optuna, local or Ray)",
                                   description="Hyperparameter searches and seed studies: an Optuna study of "
                                   "kartsim train runs, on this machine or a Ray cluster.",
                                   epilog="See README: Sweeps.", formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    run = sub.add_parser("run", help="start a sweep (every kartsim train flag holds for all trials)")
    _add_run_arguments(run)
    run.set_defaults(func=_cmd_run)
    resume = sub.add_parser("resume", help="continue a sweep (after a crash, or from another machine sharing --storage)")
    _add_where(resume)
    _add_workers(resume)
    resume.add_argument("--trials", type=int, help="raise (or lower) the number of finished trials to reach")
    for flag in ("--store", "--address"):
        resume.add_argument(flag, help=f"ray: {flag[2:]} (default: as the sweep started)")
    resume.add_argument("--num-gpus", type=float, help="ray: GPUs per trial")
    resume.add_argument("--detach", action="store_true", help="ray: continue the sweep and return")
    resume.set_defaults(func=_cmd_resume)
    status = sub.add_parser("status", help="trials, their states and the best so far")
    _add_where(status)
    status.set_defaults(func=_cmd_status)
    report = sub.add_parser("report", help="a table, parameter importances, the best command line, plots")
    _add_where(report)
    report.add_argument("--out", required=True, metavar="DIR", help="folder to write the report to")
    report.add_argument("--top", type=int, default=5, help="learning curves of the best N trials (default 5)")
    report.add_argument("--force", action="store_true", help="write into an existing --out folder")
    report.set_defaults(func=_cmd_report)
