"""One trial of a sweep: train its config (once per seed) with a periodic deterministic evaluation
on the evaluation tracks, report each evaluation's metric, stop early when the pruner says so.

Metrics (the trial's value is the best evaluation, the median over its seeds):

* ``ref_ratio`` (minimise): best lap ÷ the track's reference lap (`kartsim.drivers.racing_line`), mean
  over the evaluation tracks. A track without a completed lap scores ``max(cap, ref) ÷ ref × (2 − p)``,
  with ``cap`` the longest lap the evaluation can time (its max steps) and ``p`` the share of the
  lap covered: worse than any lap, better the further the kart got.
* ``lap_time`` (minimise): the best lap in seconds, ``max(cap, ref) × (2 − p)`` without a lap.
* ``return`` (maximise): the evaluation episode's return.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kartsim.sweep.study import SweepSpec

Report = Callable[[int, float], bool]  # (step, best value so far) -> True when the trial should stop


def track_score(metric: str, row: dict[str, Any], info: dict[str, float], cap_s: float) -> float:
    """One evaluation track's score (see the module docstring)."""
    if metric == "return":
        return float(row["eval_return"])
    covered = min(1.0, float(row["eval_progress_m"]) / max(info["length_m"], 1e-9))
    lap = row["eval_best_lap"]
    seconds = float(lap) if lap is not None else max(cap_s, info["ref_lap"]) * (2.0 - covered)
    return seconds / info["ref_lap"] if metric == "ref_ratio" else seconds


def better(spec: SweepSpec, a: float, b: float | None) -> bool:
    return b is None or (a < b if spec.direction == "minimize" else a > b)


class TrialScorer:
    """Evaluation callbacks (one `LapEvalCallback` per evaluation track) and the score they add up to."""

    def __init__(self, spec: SweepSpec, env_cfg: Any, report: Report, step_offset: int = 0) -> None:
        from stable_baselines3.common.callbacks import BaseCallback

        from kartsim.rl.callbacks import LapEvalCallback

        self.spec = spec
        self.report = report
        self.offset = step_offset
        self.cap_s = spec.eval_max_steps * env_cfg.kart.dt * env_cfg.race.action_repeat
        self.tracks = list(spec.eval_tracks)
        self.evals = [LapEvalCallback(env_cfg.replace(track=t), spec.eval_every, max_steps=spec.eval_max_steps,
                                      episodes=spec.eval_episodes, report=self._collector(t)) for t in self.tracks]
        self._rows: dict[str, dict[str, Any]] = {}
        self.curve: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.pruned = False
        scorer = self

        class _Gate(BaseCallback):
            """Stops training once pruned; evaluates the final policy when the last step fell between evaluations."""

            def _on_step(self) -> bool:
                return not scorer.pruned

            def _on_training_end(self) -> None:
                if not scorer.pruned and (not scorer.curve or scorer.curve[-1]["steps"] < self.num_timesteps):
                    for cb in scorer.evals:
                        cb.num_timesteps = self.num_timesteps
                        cb.evaluate()

        self.callbacks: list[Any] = [_Gate(), *self.evals]  # the gate first: it ends before the eval envs close

    def _collector(self, track: str) -> Callable[[dict[str, Any]], None]:
        def collect(row: dict[str, Any]) -> None:
            self._rows[track] = row
            if len(self._rows) == len(self.tracks):
                rows, self._rows = self._rows, {}
                self._score(rows)
        return collect

    def _score(self, rows: dict[str, dict[str, Any]]) -> None:
        info = self.spec.eval_tracks
        values = [track_score(self.spec.metric, rows[t], info[t], self.cap_s) for t in self.tracks]
        laps = [rows[t]["eval_best_lap"] for t in self.tracks]
        point = {
            "steps": int(next(iter(rows.values()))["steps"]),
            "value": round(statistics.fmean(values), 5),
            "completion": round(sum(lap is not None for lap in laps) / len(laps), 3),
            "ref_ratio": (round(statistics.fmean(lap / info[t]["ref_lap"] for t, lap in zip(self.tracks, laps)), 4)
                          if all(lap is not None for lap in laps) else None),
            "best_lap": min((lap for lap in laps if lap is not None), default=None),
        }
        self.curve.append(point)
        if better(self.spec, point["value"], None if self.best is None else self.best["value"]):
            self.best = point
        if self.report(self.offset + point["steps"], self.best["value"]):
            self.pruned = True


@dataclass
class Outcome:
    value: float | None
    pruned: bool
    attrs: dict[str, Any] = field(default_factory=dict)
    """What status / report show: runs, curve, completion, ref_ratio, best_lap, seed_values, seconds."""


def trial_config(spec: SweepSpec, params: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """The TrainConfig values of a trial with `params` (its sampled values) and the seeds it trains."""
    base = dict(spec.train)
    env_options = dict(base.get("env_options") or {})
    seeds = list(spec.seeds)
    for name, value in params.items():
        if name == "seed":
            seeds = [int(value)]
        elif name.startswith("env."):
            env_options[name[4:]] = value
        else:  # a dotted path (ppo.gamma) or a bare field name: spec.train is keyed by field names
            field_name = name.rpartition(".")[2]
            base[field_name] = [value] if field_name == "track" else value
    base["env_options"] = env_options
    return base, seeds


def run_trial(spec: SweepSpec, params: dict[str, Any], number: int, report: Report, *, runs_dir: str,
              models_dir: str, threads: int | None, log: Callable[[str], None]) -> Outcome:
    """Train and score trial `number`; raises KeyboardInterrupt when training was interrupted."""
    from kartsim.rl.config import TrainConfig, env_config_for
    from kartsim.rl.train import train

    base, seeds = trial_config(spec, params)
    # eval_freq 0: the trial's own evaluation (TrialScorer) scores it; train's would only cost time
    base.update(progress_bar=False, runs_dir=runs_dir, models_dir=models_dir, eval_freq=0,
                torch_threads=base.get("torch_threads") or threads)
    runs = [f"{spec.name}-{number}" + (f"-s{seed}" if len(seeds) > 1 else "") for seed in seeds]
    started = time.perf_counter()
    bests: list[dict[str, Any]] = []
    curve: list[dict[str, Any]] = []
    pruned = False
    for i, (seed, run) in enumerate(zip(seeds, runs)):
        cfg = TrainConfig.from_dict({**base, "seed": seed, "save_name": run}).resolved()
        scorer = TrialScorer(spec, env_config_for(cfg), report, step_offset=i * spec.timesteps)
        result = train(cfg, echo=log, callbacks=scorer.callbacks)
        if result.interrupted:
            raise KeyboardInterrupt
        curve.extend({**p, "seed": seed, "steps": p["steps"] + i * spec.timesteps} for p in scorer.curve)
        if scorer.best is not None:
            bests.append(scorer.best)
        if scorer.pruned:
            pruned = True
            break
    values = [b["value"] for b in bests]
    ratios = [b["ref_ratio"] for b in bests]
    attrs = {
        "runs": runs[:len(bests) or 1],
        "seeds": seeds,
        "curve": curve,
        "seed_values": values,
        "completion": statistics.fmean(b["completion"] for b in bests) if bests else 0.0,
        # the median over seeds, a seed that never lapped counting as the slowest
        "ref_ratio": (statistics.median(r if r is not None else float("inf") for r in ratios) if ratios else None),
        "best_lap": min((b["best_lap"] for b in bests if b["best_lap"] is not None), default=None),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if attrs["ref_ratio"] == float("inf"):
        attrs["ref_ratio"] = None
    return Outcome(statistics.median(values) if values else None, pruned, attrs)


def suggest(spec: SweepSpec, trial: Any) -> dict[str, Any]:
    """The sampled values of an Optuna trial: the seed of a seed sweep, else every dimension."""
    if spec.seed_sweep:
        return {"seed": trial.suggest_categorical("seed", list(spec.seeds))}
    return {d.name: d.suggest(trial) for d in spec.dims}
