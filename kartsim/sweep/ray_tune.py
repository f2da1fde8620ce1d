"""The ``ray`` backend: the sweep runs as a Ray job on the cluster that ``kartsim jobs --backend ray``
addresses (same ``--address`` / ``--store`` settings). The job is a Ray Tune driver
(``python -m kartsim.sweep.ray_tune``) whose search algorithm is Optuna (`OptunaSearch`) on the
sweep's own study, so ``kartsim sweep status|report`` read it as they read a local sweep. Tune
runs one trial per worker (CPUs = torch threads, one GPU each when the cluster has GPUs), stops bad
trials with its median-stopping rule or ASHA, and every trial's run folder and final model go to
the job store (``runs/<name>-<n>/``, ``models/<name>-<n>_final.zip``), where ``kartsim jobs fetch``
and the dashboard find them. The job store must be a folder every node sees (the study's SQLite
file lives in it: ``<store>/sweeps/<name>/study.db``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kartsim.errors import ConfigError, KartsimError
from kartsim.sweep.study import (
    SweepSpec,
    default_storage,
    find_spec,
    make_sampler,
    open_storage,
)

ENV_VARS = {"PYTHONUNBUFFERED": "1", "RAY_CHDIR_TO_TRIAL_DIR": "0", "RAY_AIR_NEW_OUTPUT": "0"}


def _store(args: argparse.Namespace) -> tuple[Any, Any]:
    from kartsim.jobs.config import resolve_settings
    from kartsim.jobs.service import open_settings_store
    from kartsim.jobs.store import LocalStore

    settings = resolve_settings("ray", getattr(args, "store", None), getattr(args, "address", None),
                                getattr(args, "num_gpus", None))
    store = open_settings_store(settings)
    if not isinstance(store, LocalStore):
        raise ConfigError(f"sweep --backend ray needs a job store folder every node sees (the study database "
                          f"lives in it), not {store.location}; pass --store /shared/folder")
    return settings, store


def prepare(spec: SweepSpec, args: argparse.Namespace, storage_given: bool) -> None:
    """Point `spec` at the job store: tracks synced there (by file name), trial runs and models in it,
    the study database in ``<store>/sweeps/<name>/`` unless ``--storage`` was given."""
    from kartsim.jobs.tracks import job_tracks

    _, store = _store(args)
    spec.train["track"] = job_tracks(store, list(spec.train.get("track") or ["circuit.png"]))
    spec.eval_tracks = {job_tracks(store, [k])[0]: v for k, v in spec.eval_tracks.items()}
    spec.train["runs_dir"] = str(store.root / "runs")
    spec.train["models_dir"] = str(store.root / "models")
    if not storage_given:
        folder = store.root / "sweeps" / spec.name
        folder.mkdir(parents=True, exist_ok=True)
        spec.storage = default_storage(folder)


def run_ray(spec: SweepSpec, sweep_dir: Path, args: argparse.Namespace) -> int:
    """Submit the Tune driver as a Ray job and (without --detach) stream its log to the end."""
    import kartsim
    from kartsim.jobs.ray_backend import RAY_EXCLUDES, RayBackend, submit_job, unreachable
    from kartsim.jobs.tracks import stage_tracks

    settings, store = _store(args)
    backend = RayBackend(store, settings.address, settings)
    client = backend.client  # JobError (one line) when nothing answers there
    gpus = getattr(args, "num_gpus", None)
    if gpus is None:
        gpus = 1.0 if backend.cluster_gpus() > 0 else 0.0
    sub_id = f"sweep-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    entry = ["python", "-u", "-m", "kartsim.sweep.ray_tune", spec.name, "--storage", spec.storage,
             "--num-gpus", str(gpus)]
    threads = getattr(args, "threads", None) or (4 if spec.train.get("vision") else 1)
    entry += ["--threads", str(threads)]
    with tempfile.TemporaryDirectory(prefix="kartsim-sweep-") as tmp:
        stage_tracks(store, list(spec.train["track"]) + list(spec.eval_tracks), Path(tmp))
        runtime_env = {"working_dir": tmp, "py_modules": [str(Path(kartsim.__file__).parent)],
                       "excludes": RAY_EXCLUDES, "env_vars": ENV_VARS}
        try:
            submit_job(client, entrypoint=" ".join(entry), submission_id=sub_id, runtime_env=runtime_env,
                       metadata={"kartsim_sweep": spec.name})
        except (ConnectionError, OSError) as exc:
            raise ConfigError(f"{unreachable(settings.address)} ({exc})") from None
        except RuntimeError as exc:
            raise ConfigError(f"Ray refused the sweep: {str(exc).splitlines()[0][:300]}") from None
    print(f"started sweep {spec.name} on Ray at {settings.address} (job {sub_id}); study {spec.storage}")
    print(f"  status: kartsim sweep status {spec.name}    trial runs: {store.root / 'runs'}/{spec.name}-<n>")
    sys.stdout.flush()
    if getattr(args, "detach", False):
        return 0
    return _follow(client, sub_id)


def _follow(client: Any, sub_id: str) -> int:
    shown = 0
    while True:
        status = client.get_job_status(sub_id)
        logs = client.get_job_logs(sub_id)
        if len(logs) > shown:
            sys.stdout.write(logs[shown:])
            sys.stdout.flush()
            shown = len(logs)
        if status.is_terminal():
            ok = str(getattr(status, "value", status)) == "SUCCEEDED"
            print(f"sweep job {sub_id}: {'finished' if ok else str(getattr(status, 'value', status)).lower()}")
            return 0 if ok else 1
        time.sleep(1.0)


# ------------------------------------------------------------------------ the driver (on Ray)

def _space(spec: SweepSpec) -> dict[str, Any]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if spec.seed_sweep:
        return {"seed": CategoricalDistribution(list(spec.seeds))}
    out: dict[str, Any] = {}
    for d in spec.dims:
        if d.kind in ("loguniform", "uniform"):
            out[d.name] = FloatDistribution(d.low, d.high, log=d.kind == "loguniform")
        elif d.kind == "int":
            out[d.name] = IntDistribution(int(d.low), int(d.high))
        else:
            out[d.name] = CategoricalDistribution(list(d.choices))
    return out


def _search(spec: SweepSpec) -> Any:
    """Tune's OptunaSearch on the sweep's study, which also records each trial's number (the run
    names), its attributes (curve, laps, ...) and whether Tune's scheduler stopped it (pruned)."""
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class KartsimOptunaSearch(OptunaSearch):
        def suggest(self, trial_id: str) -> Any:
            params = super().suggest(trial_id)
            if isinstance(params, dict):
                params = {**params, "trial_number": self._ot_trials[trial_id].number}
            return params

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is not None and result and result.get("attrs"):
                for key, value in json.loads(result["attrs"]).items():
                    ot_trial.set_user_attr(key, value)
            if ot_trial is not None and result and not error and not result.get("final"):
                self._ot_study.tell(ot_trial, state=TrialState.PRUNED)  # stopped by the scheduler
                self._ot_trials.pop(trial_id)
                return
            super().on_trial_complete(trial_id, result, error)

    return KartsimOptunaSearch(space=_space(spec), metric="value", mode="min" if spec.direction == "minimize"
                               else "max", sampler=make_sampler(spec), study_name=spec.name,
                               storage=open_storage(spec))


def _scheduler(spec: SweepSpec) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    if spec.pruner == "none" or spec.seed_sweep:
        return FIFOScheduler()
    if spec.pruner == "median":
        return MedianStoppingRule(time_attr="steps", grace_period=spec.timesteps // 2, min_samples_required=3)
    total = spec.timesteps * (1 if spec.seed_sweep else len(spec.seeds))
    return ASHAScheduler(time_attr="steps", max_t=total, grace_period=spec.eval_every, reduction_factor=3)


def _trainable(spec_dict: dict[str, Any], threads: int):
    def trainable(config: dict[str, Any]) -> None:
        from ray import tune

        from kartsim.sweep.trial import run_trial

        spec = SweepSpec.from_dict(spec_dict)
        number = int(config.pop("trial_number"))
        params = {k: v for k, v in config.items()}
        runs = [f"{spec.name}-{number}"]
        curve: list[dict[str, Any]] = []

        def report(step: int, value: float) -> bool:
            curve.append({"steps": step, "value": value})
            tune.report({"value": value, "steps": step, "attrs": json.dumps({"runs": runs, "curve": curve})})
            return False  # Tune's scheduler stops the trial itself

        out = run_trial(spec, params, number, report, runs_dir=spec.train["runs_dir"],
                        models_dir=spec.train["models_dir"], threads=threads, log=print)
        print(f"trial {number} finished: {spec.metric} {out.value}", flush=True)
        tune.report({"value": out.value, "steps": curve[-1]["steps"] if curve else 0, "final": True,
                     "attrs": json.dumps(out.attrs)})
    return trainable


def _requeue_stale(spec: SweepSpec) -> int:
    """Trials left running by a killed driver: failed, their parameters queued again; the count done."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=spec.name, storage=open_storage(spec))
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params)
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def run_tuner(spec: SweepSpec, num_gpus: float, threads: int) -> int:
    import ray
    from ray import tune

    ray.init(address="auto", log_to_driver=True)
    remaining = spec.target - _requeue_stale(spec)
    if remaining <= 0:
        print(f"sweep {spec.name} already has its {spec.target} trials")
        return 0
    trainable = tune.with_resources(_trainable(spec.to_dict(), threads), {"cpu": threads, "gpu": num_gpus})
    folder = Path(spec.train["runs_dir"]).parent / "sweeps" / spec.name / "tune"
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=_search(spec), scheduler=_scheduler(spec), num_samples=remaining),
        run_config=tune.RunConfig(name=spec.name, storage_path=str(folder), verbose=1),
    )
    results = tuner.fit()
    errors = [r.error for r in results if r.error]
    print(f"sweep {spec.name}: {len(results)} trials run on Ray, {len(errors)} failed")
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kartsim.sweep.ray_tune", description="the Ray Tune sweep driver")
    parser.add_argument("name")
    parser.add_argument("--storage", required=True)
    parser.add_argument("--num-gpus", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        spec, _ = find_spec(args.name, Path("."), args.storage)
        return run_tuner(spec, args.num_gpus, args.threads)
    except KartsimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
