"""``kartsim demos record|info``: demonstration files for ``kartsim train --demos``.

    kartsim demos record ai:hard --laps 20 --track-name circuit.png --out demos/   # rays observations
    kartsim demos record ai:hard --laps 20 --vision --out demos/                 # camera + telemetry
    kartsim demos info demos/

``record`` writes ``<out>/<name>.npz`` (observations, actions, kart states; format in
`kartsim.rl.demos`) and ``<out>/<name>_telemetry.csv`` (the training telemetry schema).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kartsim.errors import ConfigError


def _record(args: argparse.Namespace) -> int:
    from kartsim.rl import demos as D
    from kartsim.config_cli import given_values
    from kartsim.rl.config import TaskConfig, TrainConfig, env_config_for
    from kartsim.telemetry import TELEMETRY_COLUMNS

    if args.laps < 1:
        raise ConfigError(f"--laps must be >= 1, not {args.laps}")
    task = given_values(args, {f"task.{name}" for name in TaskConfig.__dataclass_fields__})
    cfg = TrainConfig.from_dict(task).resolved()
    env_cfg = env_config_for(cfg)
    tracks = "-".join(Path(t).stem for t in cfg.task.track)
    name = args.name or f"{args.source.replace(':', '-') if D.is_ai_source(args.source) else Path(args.source).stem}_{tracks}"
    out = Path(args.out)
    npz, csv_path = out / f"{name}.npz", out / f"{name}_telemetry.csv"
    for existing in (npz, csv_path):
        if existing.exists() and not args.force:
            raise ConfigError(f"{existing} already exists; pass --force to overwrite it or --name another")
    if D.is_ai_source(args.source):
        D.check_ai_source(args.source)
        teacher: Any = args.source
    else:
        model = D.load_teacher_model(D.check_source_path(args.source), env_cfg)

        def teacher(race: Any) -> D.PolicyTeacher:
            return D.PolicyTeacher(model, args.source)
    print(f"Recording {args.laps} laps of {args.source} on {', '.join(cfg.task.track)} "
          f"({'vision' if cfg.vision else 'rays'} observations, {args.karts} karts)...", flush=True)
    if not 0.0 <= args.noise <= 1.0:
        raise ConfigError(f"--noise must be between 0 and 1 (a share of the full action range), not {args.noise}")
    demos, rows = D.record(env_cfg, teacher, laps=args.laps, n_karts=args.karts, seed=args.seed, noise=args.noise,
                           telemetry=True)
    D.save_demos(demos, npz)
    import csv

    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(TELEMETRY_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    _print_summary(npz, D.summary(demos))
    print(f"Wrote {npz} and {csv_path}")
    print(f"Train on them: kartsim train{' --vision' if cfg.vision else ''} --demos {out} --track-name {' '.join(cfg.task.track)}")
    return 0


def _print_summary(path: Path, info: dict[str, Any]) -> None:
    from kartsim.rl.demos import fmt_lap

    shapes = ", ".join(f"{k} {tuple(v)}" for k, v in info["observations"].items()) if info.get("observations") else "rebuilt when training"
    times = info["lap_times"]
    print(f"{path}: {info['source']}, {info['kind']} observations ({shapes}), tracks {info['tracks']}")
    print(f"  {info['steps']:,} steps in {info['drives']} drives, {info['laps']} laps; best {fmt_lap(info['best_lap_s'])}, "
          f"mean {fmt_lap(info['mean_lap_s'])}")
    if times:
        print("  lap times: " + ", ".join(f"{t:.2f}" for t in times[:30]) + (" ..." if len(times) > 30 else ""))


def file_summary(path: Path) -> dict[str, Any]:
    """`kartsim.rl.demos.summary` of one file, read without rebuilding observations."""
    import numpy as np

    from kartsim.rl import demos as D

    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                actions, episode = data["actions"], data["episode"]
                keys = [k for k in data.files if k.startswith("obs")]
                shapes = {k.removeprefix("obs_") if k != "obs" else "obs": tuple(data[k].shape[1:]) for k in keys}
        except (OSError, ValueError, KeyError):
            raise D.DemoError(f"{path} is not a kartsim demonstrations file; record one with `kartsim demos record`") from None
        obs: Any = {k: np.zeros((0,) + s) for k, s in shapes.items()} if "obs" not in shapes else np.zeros((0, 10))
        info = D.summary(D.DemoSet(obs, actions, np.zeros((len(actions), 0)), episode, meta))
        info["observations"] = shapes
        return info
    df = D.read_demo_csv(path)
    times = D._csv_lap_times(df)
    return {"source": "telemetry CSV (observations rebuilt on the training track)", "kind": "any",
            "observations": None, "tracks": "the run's", "steps": len(df), "drives": int(df["episode"].nunique()),
            "laps": len(times), "best_lap_s": min(times) if times else None,
            "mean_lap_s": round(sum(times) / len(times), 3) if times else None, "lap_times": times}


def _info(args: argparse.Namespace) -> int:
    from kartsim.rl import demos as D

    path = D.check_source_path(args.path)
    if path.suffix.lower() == ".zip":
        raise ConfigError(f"{path} is a model; `kartsim demos info` reads demonstration files (.npz, .csv) or folders")
    files = D.files_of(path) if path.is_dir() else [path]
    infos = [(f, file_summary(f)) for f in files]
    if args.json:
        print(json.dumps({str(f): i for f, i in infos}, indent=2, default=str))
        return 0
    for f, info in infos:
        _print_summary(f, info)
    if len(infos) > 1:
        steps, laps = sum(i["steps"] for _, i in infos), sum(i["laps"] for _, i in infos)
        print(f"total: {len(infos)} files, {steps:,} steps, {laps} laps")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from kartsim.config_cli import add_dataclass_arguments, number as _float, whole_number as _int
    from kartsim.rl.config import TaskConfig

    parser = subparsers.add_parser("demos", help="record and inspect demonstrations for kartsim train --demos",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="demos_command", metavar="ACTION", required=True)
    rec = sub.add_parser("record", help="let the AI (or a model) drive and record observations + actions")
    rec.add_argument("source", metavar="SOURCE", help="ai:hard|medium|easy, or a model .zip")
    rec.add_argument("--laps", type=_int, default=20, help="laps to record, all karts together (default 20)")
    rec.add_argument("--out", default="demos", help="folder for the files (default demos/)")
    rec.add_argument("--name", help="file name stem (default <source>_<track>)")
    rec.add_argument("--karts", type=_int, default=8, help="karts recorded side by side (default 8)")
    rec.add_argument("--seed", type=_int, default=0, help="random seed (default 0)")
    rec.add_argument("--noise", type=_float, default=0.0,
                     help="std of the persistent noise on the teacher's applied actions; the clean ones are recorded (default 0)")
    rec.add_argument("--force", action="store_true", help="overwrite existing files of the same name")
    # the observations the demonstrations are recorded with: the training run's flags
    add_dataclass_arguments(rec.add_argument_group("observations (as kartsim train)"), TaskConfig, prefix="task.",
                            skip=("track_pool",))
    rec.set_defaults(func=_record)
    info = sub.add_parser("info", help="laps, steps and lap times of demonstration files")
    info.add_argument("path", help="a demos folder, .npz or telemetry .csv")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)
