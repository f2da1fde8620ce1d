"""The ``local`` backend: worker processes on this machine, each taking trials from the shared study
until the sweep has its finished trials (``python -m kartsim.sweep.local``, started by
`run_local`; ``kartsim sweep resume`` on other machines starts more of them on the same storage).

Each worker trains one trial at a time with ``threads`` torch threads; `plan_workers` sizes them
to the cores (the rays MLP trains on one core, the vision CNN on several).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from kartsim.errors import ConfigError, KartsimError
from kartsim.sweep.study import SweepSpec, find_spec, load_study

# A worker gives up after this many trials whose sampled config could not train (e.g. a batch size
# that does not divide the rollout) in a row: the space is probably wrong.
MAX_INVALID_IN_A_ROW = 5
STAGGER_S = 3.0  # between the starts of two worker processes


def usable_cores() -> int:
    from kartsim.rl.train import usable_cores as cores

    return cores()


def plan_workers(spec: SweepSpec, workers: int | None, threads: int | None) -> tuple[int, int]:
    """(worker processes, torch threads each): one core (and one thread: the small MLP is slower with
    more) per rays trial, four cores shared among the threads of each vision trial by default, never
    more workers than trials."""
    cores = usable_cores()
    vision = bool(spec.train.get("vision"))
    if workers is None:
        workers = max(1, cores // (threads or (4 if vision else 1)))
    workers = max(1, min(workers, spec.target))
    return workers, threads or (max(1, cores // workers) if vision else 1)


def counts(study: Any) -> dict[str, int]:
    from optuna.trial import TrialState

    out = {s.name: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] += 1
    return out


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def work(spec: SweepSpec, sweep_dir: Path, index: int, threads: int, runs_dir: str, models_dir: str) -> int:
    """Run trials until the study has `spec.target` finished ones; 0, or 130 on Ctrl-C."""
    import optuna
    from optuna.storages import fail_stale_trials

    from kartsim.sweep.trial import run_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # fail_stale_trials
    study = load_study(spec, worker=index)
    logs = sweep_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    invalid = 0

    def objective(trial: Any) -> float:
        nonlocal invalid
        from kartsim.sweep.trial import suggest

        params = suggest(spec, trial)
        log_path = logs / f"trial-{trial.number}.log"
        with open(log_path, "a", buffering=1) as log:
            def report(step: int, value: float) -> bool:
                trial.report(value, step)
                return trial.should_prune()

            log.write(f"trial {trial.number}: {_params_text(params)}\n")
            try:
                out = run_trial(spec, params, trial.number, report, runs_dir=runs_dir, models_dir=models_dir,
                                threads=threads, log=lambda text: log.write(text + "\n"))
            except ConfigError as exc:  # this combination of sampled values cannot train
                invalid += 1
                print(f"trial {trial.number} failed: {exc}", flush=True)
                log.write(f"failed: {exc}\n")
                raise
        invalid = 0
        for key, value in out.attrs.items():
            trial.set_user_attr(key, value)
        what = f"{spec.metric} {out.value:.4g}" if out.value is not None else "no evaluation"
        if out.pruned:
            print(f"trial {trial.number} pruned at {what} ({_params_text(params)}; {out.attrs['seconds']:.0f} s)",
                  flush=True)
            raise optuna.TrialPruned()
        laps = f", {100 * out.attrs['completion']:.0f}% of tracks lapped"
        print(f"trial {trial.number} finished: {what}{laps} ({_params_text(params)}; {out.attrs['seconds']:.0f} s)",
              flush=True)
        return float(out.value) if out.value is not None else float("nan")

    while True:
        fail_stale_trials(study)  # trials of killed processes: failed, and queued again
        n = counts(study)
        done = n["COMPLETE"] + n["PRUNED"]
        if done >= spec.target:
            return 0
        if invalid >= MAX_INVALID_IN_A_ROW:
            print(f"worker {index}: {invalid} sampled configs in a row could not train; check the --set ranges "
                  "(see the trial logs)", flush=True)
            return 2
        if done + n["RUNNING"] >= spec.target and not n["WAITING"]:
            time.sleep(min(spec.heartbeat_s, 5))  # the others are on the last trials (or silent: wait)
            continue
        try:
            study.optimize(objective, n_trials=1, catch=(ConfigError,))
        except KeyboardInterrupt:
            return 130


def start_workers(spec: SweepSpec, sweep_dir: Path, workers: int, threads: int, runs_dir: str,
                  models_dir: str) -> list[subprocess.Popen]:
    import kartsim

    # the workers import the same kartsim as this process (a checkout as well as an installed package)
    root = str(Path(kartsim.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path, OMP_NUM_THREADS=str(threads),
               NUMBA_NUM_THREADS=str(threads))
    procs = []
    for i in range(workers):
        cmd = [sys.executable, "-m", "kartsim.sweep.local", spec.name, "--sweeps-dir", str(sweep_dir.parent),
               "--storage", spec.storage, "--worker", str(i), "--threads", str(threads), "--runs-dir", runs_dir,
               "--models-dir", models_dir]
        procs.append(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL))
        if i < workers - 1:
            # SQLite has no row locks: workers asking for a trial at the same instant can both take
            # the same queued one (a --baseline or a retried trial); their first requests are kept apart
            time.sleep(STAGGER_S)
    return procs


def settle_stale_trials(spec: SweepSpec) -> None:
    """Fail (and queue again) the trials of killed processes here, once, before the workers start:
    workers that all found the same silent trial at once would each queue it again. A trial still
    sending heartbeats (a worker on another machine) is left alone."""
    import optuna
    from optuna.storages import fail_stale_trials

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = load_study(spec)
    fail_stale_trials(study)
    if counts(study)["RUNNING"]:  # silent for less than the grace period yet, or alive: look once more
        time.sleep(2 * spec.heartbeat_s + 1)
        fail_stale_trials(study)


def run_local(spec: SweepSpec, sweep_dir: Path, workers: int | None, threads: int | None, runs_dir: str,
              models_dir: str) -> int:
    """Run the sweep in worker processes here until it has its trials; the exit code."""
    settle_stale_trials(spec)
    n, t = plan_workers(spec, workers, threads)
    print(f"sweep {spec.name}: {spec.target} trials, {n} worker process{'es' if n > 1 else ''} x {t} torch "
          f"thread{'s' if t > 1 else ''}; study {spec.storage}; trial logs {sweep_dir / 'logs'}", flush=True)
    procs = start_workers(spec, sweep_dir, n, t, runs_dir, models_dir)

    def on_term(signum: int, _frame: Any) -> None:  # `kill PID` of the sweep stops its workers too
        for p in procs:
            if p.poll() is None:
                p.terminate()
        sys.exit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # the workers got the same Ctrl-C; let them save and mark their trials
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return max(codes, default=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kartsim.sweep.local", description="one sweep worker process")
    parser.add_argument("name")
    parser.add_argument("--sweeps-dir", required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--models-dir", default="models")
    args = parser.parse_args(argv)
    try:
        spec, sweep_dir = find_spec(args.name, Path(args.sweeps_dir), args.storage)
        return work(spec, sweep_dir, args.worker, args.threads, args.runs_dir, args.models_dir)
    except KartsimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
