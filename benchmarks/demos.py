"""Demonstrations / transfer benchmark: how much sooner does a run lap, and lap near the reference,
when it starts from demonstrations (``--demos``) or another model (``--init-from``) than from scratch?

    python benchmarks/demos.py --demos ai:hard --seeds 0 1 2                    # rays, circuit.png
    python benchmarks/demos.py --vision --demos ai:hard --set demos_laps=10 --timesteps 300000
    python benchmarks/demos.py --vision --init-from models/circuit_vision.zip --track-name technical.png
    python benchmarks/demos.py --demos ai:hard --variants demos --timesteps 0   # BC/DAgger alone

Each variant (``scratch``: plain PPO; ``demos``: with ``--demos``; ``init``: with ``--init-from``) trains
with `kartsim train`'s own code and drives the policy deterministically from the start line after
the pre-training (0 PPO steps) and every ``--eval-every`` env steps. Reported per seed: env steps and
wall seconds (from the start of the run, recording and cloning included) to the first lap, to a lap
within 1.10 x and within 1.05 x the track's reference lap time (`kartsim.drivers.racing_line`). A variant
stops once it reaches 1.05 x or its ``--timesteps``. Every number is measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = (("first_lap", None), ("ref_1.10", 1.10), ("ref_1.05", 1.05))


def _kv(text: str) -> tuple[str, Any]:
    key, _, raw = text.partition("=")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def make_eval_callback(env_cfg: Any, every: int, started: float, reference: float, max_steps: int,
                       report: Any):
    """LapEvalCallback that also evaluates before the first PPO step, counts wall time from `started`
    (the start of the run) and stops training once a lap is within 1.05 x `reference`."""
    from kartsim.rl.callbacks import LapEvalCallback

    class Eval(LapEvalCallback):
        def _on_training_start(self) -> None:
            super()._on_training_start()
            self._started = started
            self._report(self.evaluate())

        def _on_step(self) -> bool:
            n = len(self.rows)
            cont = super()._on_step()
            if len(self.rows) > n:
                self._report(self.rows[-1])
            return cont and not self.done()

        def done(self) -> bool:
            best = [r["eval_best_lap"] for r in self.rows if r["eval_best_lap"] is not None]
            return bool(best) and min(best) <= 1.05 * reference

        def _report(self, row: dict[str, Any]) -> None:
            ratio = row["eval_best_lap"] / reference if row["eval_best_lap"] else None
            row["ref_ratio"] = round(ratio, 3) if ratio else None
            report(row)

    return Eval(env_cfg, every, max_steps=max_steps)


def first_reached(rows: list[dict[str, Any]], reference: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, factor in TARGETS:
        hit = next((r for r in rows if r["eval_laps"] > 0 and (factor is None or
                    (r["eval_best_lap"] is not None and r["eval_best_lap"] <= factor * reference))), None)
        out[f"{name}_steps"] = hit["steps"] if hit else None
        out[f"{name}_wall_s"] = hit["wall_s"] if hit else None
    return out


def run_variant(args: argparse.Namespace, variant: str, seed: int, runs_dir: Path) -> dict[str, Any]:
    from kartsim.drivers.racing_line import reference_lap_time
    from kartsim.rl.train import TrainConfig, env_config_for, train
    from kartsim.sim.track import Track

    values: dict[str, Any] = dict(vision=args.vision, timesteps=max(args.timesteps, 1), save_name=f"{variant}_seed{seed}",
                                  track=args.track_name, seed=seed, device=args.device, runs_dir=str(runs_dir),
                                  models_dir=str(runs_dir / "models"), progress_bar=False, checkpoint_freq=0,
                                  telemetry_every=0, force=True)
    values.update(dict(args.set))
    if variant == "demos":
        values["demos"] = args.demos
    if variant == "init":
        values["init_from"] = args.init_from
    cfg = TrainConfig.from_dict(values).resolved()
    env_cfg = env_config_for(cfg)
    reference = reference_lap_time(Track.load(cfg.task.track[0]))
    started = time.perf_counter()
    callback = make_eval_callback(env_cfg, args.eval_every, started, reference, args.eval_max_steps,
                                  lambda row: print(f"  [{variant} seed {seed}] " + "  ".join(f"{k}={v}" for k, v in row.items()), flush=True))
    result = train(cfg, given=set(values), callbacks=[callback], echo=lambda s: print(f"  [{variant} seed {seed}] {s}", flush=True))
    rows = callback.rows
    laps = [r["eval_best_lap"] for r in rows if r["eval_best_lap"] is not None]
    summary = {"variant": variant, "seed": seed, "reference_s": round(reference, 2), "steps": result.num_timesteps,
               "wall_s": round(time.perf_counter() - started, 1), "best_lap_s": min(laps) if laps else None,
               "laps_at_0_ppo_steps": rows[0]["eval_laps"] if rows else None,
               "lap_at_0_ppo_steps_s": rows[0]["eval_best_lap"] if rows else None, **first_reached(rows, reference),
               "curve": rows, "config": cfg.to_dict()}
    print(f"{variant} seed {seed}: " + ", ".join(f"{k}={summary[k]}" for k in summary if k not in ("curve", "config")), flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vision", action="store_true")
    p.add_argument("--demos", default="ai:hard", help="demonstration source of the demos variant (default ai:hard)")
    p.add_argument("--init-from", help="model zip of the init variant")
    p.add_argument("--variants", nargs="+", choices=["scratch", "demos", "init"],
                   help="default: scratch and demos (scratch and init with --init-from)")
    p.add_argument("--track-name", nargs="+", default=["circuit.png"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--timesteps", type=int, default=500_000, help="PPO steps per variant at most")
    p.add_argument("--eval-every", type=int, default=16_384)
    p.add_argument("--eval-max-steps", type=int, default=1200, help="steps of an evaluation drive")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", type=_kv, action="append", default=[], metavar="FIELD=VALUE", help="TrainConfig field")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--keep", metavar="DIR", help="keep the runs and models in DIR (e.g. for a later --init-from)")
    args = p.parse_args(argv)
    variants = args.variants or (["scratch", "init"] if args.init_from else ["scratch", "demos"])

    import torch

    print(f"kartsim demos benchmark: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    runs_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kartsim-demos-bench-"))
    try:
        runs = [run_variant(args, v, seed, runs_dir) for seed in args.seeds for v in variants]
    finally:
        if not args.keep:
            shutil.rmtree(runs_dir, ignore_errors=True)
    print("\nvariant  seed  laps@0  lap@0   first lap (steps, s)   <=1.10x ref (steps, s)   <=1.05x ref (steps, s)")
    for r in runs:
        cells = [f"{r[f'{n}_steps']}, {r[f'{n}_wall_s']}" for n, _ in TARGETS]
        print(f"{r['variant']:8} {r['seed']:4}  {r['laps_at_0_ppo_steps']!s:6}  {r['lap_at_0_ppo_steps_s']!s:6}  "
              + "   ".join(f"{c:22}" for c in cells))
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], "runs": runs}, indent=2, default=str))
        print(f"Wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
