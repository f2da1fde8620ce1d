"""A sweep's definition (`SweepSpec`, saved as ``sweeps/<name>/sweep.json`` and inside the study)
and its Optuna study (sampler, pruner, storage with heartbeats).

The study lives in a database: SQLite in the sweep folder by default, any SQLAlchemy URL with
``--storage``. Every process that works on a sweep (local workers, ``kartsim sweep resume`` on
other machines, the Ray driver) opens the same study by name. A running trial sends a heartbeat
every `SweepSpec.heartbeat_s`; one silent for twice that long (its process was killed) is marked
failed by the next process that starts a trial and queued again with the same parameters.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kartsim.errors import ConfigError
from kartsim.sweep.space import Dimension

METRICS = {"ref_ratio": "minimize", "lap_time": "minimize", "return": "maximize"}
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "asha", "none")
SPEC_ATTR = "kartsim_sweep"


@dataclass
class SweepSpec:
    """Everything a process needs to run trials of a sweep."""

    name: str
    train: dict[str, Any]
    """The base TrainConfig every trial starts from, as ``{field name: value}`` (`flat_train_dict`;
    `TrainConfig.from_dict` reads it; None fields resolve per policy kind)."""
    given: list[str] = field(default_factory=list)
    """The TrainConfig fields given on the command line, dotted (``ppo.gamma``; bare field names in
    sweeps made before the parts); the best config's command line repeats them."""
    dims: list[Dimension] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    metric: str = "ref_ratio"
    sampler: str = "tpe"
    pruner: str = "median"
    trials: int = 20
    eval_every: int = 0
    eval_episodes: int = 1
    eval_max_steps: int = 2000
    eval_tracks: dict[str, dict[str, float]] = field(default_factory=dict)
    """Evaluation track -> {"ref_lap": reference lap time (s), "length_m": lap length}."""
    storage: str = ""
    backend: str = "local"
    heartbeat_s: int = 30
    sampler_seed: int = 0
    created: str = ""

    @property
    def direction(self) -> str:
        return METRICS[self.metric]

    @property
    def seed_sweep(self) -> bool:
        """No searched parameters: every trial is one seed of the same config."""
        return not self.dims

    @property
    def timesteps(self) -> int:
        return int(self.train.get("timesteps") or 1_000_000)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["dims"] = [d.to_dict() for d in self.dims]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepSpec:
        data = dict(data)
        data["dims"] = [Dimension.from_dict(d) for d in data.get("dims") or []]
        return cls(**data)

    def validate(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"unknown --metric {self.metric!r}; use {', '.join(METRICS)}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown --sampler {self.sampler!r}; use {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"unknown --pruner {self.pruner!r}; use {', '.join(PRUNERS)}")
        if self.trials < 1:
            raise ConfigError(f"--trials must be >= 1, not {self.trials}")
        if self.eval_episodes < 1 or self.eval_max_steps < 1:
            raise ConfigError("--eval-episodes and --eval-max-steps must be >= 1")
        if self.eval_every < 1:
            raise ConfigError(f"--eval-every must be >= 1 env step, not {self.eval_every}")
        if self.heartbeat_s < 1:
            raise ConfigError(f"--heartbeat must be >= 1 second, not {self.heartbeat_s}")
        if self.sampler == "grid":
            for d in self.dims:
                d.grid_values()  # ConfigError for float ranges

    def grid_space(self) -> dict[str, list[Any]]:
        if self.seed_sweep:
            return {"seed": list(self.seeds)}
        return {d.name: d.grid_values() for d in self.dims}

    def grid_size(self) -> int:
        size = 1
        for values in self.grid_space().values():
            size *= len(values)
        return size

    @property
    def target(self) -> int:
        """Finished (complete or pruned) trials the sweep runs to."""
        return self.grid_size() if self.sampler == "grid" else self.trials


def default_storage(sweep_dir: Path) -> str:
    return f"sqlite:///{(sweep_dir / 'study.db').resolve()}"


def open_storage(spec: SweepSpec) -> Any:
    """The study database, with heartbeats and retry of trials whose process died."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    from kartsim.sweep.storage import HeartbeatStorage

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats
    kwargs: dict[str, Any] = {}
    if spec.storage.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # parallel workers wait for the lock
    try:
        return HeartbeatStorage(
            spec.storage, heartbeat_interval=spec.heartbeat_s, grace_period=2 * spec.heartbeat_s,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3), **kwargs)
    except (SQLAlchemyError, ImportError, ValueError) as exc:  # bad URL, missing driver, unreachable server
        raise ConfigError(f"cannot open the study storage {spec.storage}: {str(exc).splitlines()[0][:200]}") from None


def make_sampler(spec: SweepSpec, worker: int = 0) -> Any:
    import optuna

    if spec.sampler == "grid":  # every process must shuffle the grid the same way
        return optuna.samplers.GridSampler(spec.grid_space(), seed=spec.sampler_seed)
    seed = spec.sampler_seed + worker  # parallel workers must not draw the same points
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, spec.trials // 3)))


def make_pruner(spec: SweepSpec) -> Any:
    """Median: prune below the median of earlier trials at the same step, after 3 complete trials and
    in the second half of training (a rays agent laps around 130k steps: earlier, progress along the
    lap predicts the final lap badly: in a 24-trial sweep with a quarter, the default config was
    pruned at 50k steps); ASHA: successive halving from the first evaluation."""
    import optuna

    if spec.pruner == "none" or spec.seed_sweep:
        return optuna.pruners.NopPruner()
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=spec.timesteps // 2)
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=spec.eval_every, reduction_factor=3)


def create_study(spec: SweepSpec) -> Any:
    """A new study holding `spec` (ConfigError when one of that name is already in the storage)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" log line
    storage = open_storage(spec)
    try:
        study = optuna.create_study(study_name=spec.name, storage=storage, direction=spec.direction,
                                    sampler=make_sampler(spec), pruner=make_pruner(spec))
    except optuna.exceptions.DuplicatedStudyError:
        raise ConfigError(f"a study named {spec.name!r} already exists in {spec.storage}; continue it with "
                          f"`kartsim sweep resume {spec.name}` or pass --force to start over") from None
    study.set_user_attr(SPEC_ATTR, spec.to_dict())
    return study


def load_study(spec: SweepSpec, worker: int = 0) -> Any:
    import optuna

    try:
        return optuna.load_study(study_name=spec.name, storage=open_storage(spec),
                                 sampler=make_sampler(spec, worker), pruner=make_pruner(spec))
    except KeyError:
        raise ConfigError(f"no study named {spec.name!r} in {spec.storage}") from None


def spec_path(sweep_dir: Path) -> Path:
    return sweep_dir / "sweep.json"


def save_spec(spec: SweepSpec, sweep_dir: Path) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    spec_path(sweep_dir).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")


def find_spec(name: str, sweeps_dir: Path, storage: str | None = None) -> tuple[SweepSpec, Path]:
    """The spec of sweep `name` (and its folder): from ``<sweeps_dir>/<name>/sweep.json``, or, with
    `storage`, from the study in that database (a machine that shares only the database)."""
    sweep_dir = sweeps_dir / name
    path = spec_path(sweep_dir)
    if storage:
        import optuna
        from sqlalchemy.exc import SQLAlchemyError

        try:
            summaries = optuna.get_all_study_summaries(storage)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise ConfigError(f"cannot open the study storage {storage}: {str(exc).splitlines()[0][:200]}") from None
        found = [s for s in summaries if s.study_name == name]
        if not found or SPEC_ATTR not in found[0].user_attrs:
            raise ConfigError(f"no kartsim sweep named {name!r} in {storage}")
        spec = SweepSpec.from_dict(found[0].user_attrs[SPEC_ATTR])
        spec.storage = storage
        return spec, sweep_dir
    if not path.is_file():
        known = sorted(p.parent.name for p in sweeps_dir.glob("*/sweep.json")) if sweeps_dir.is_dir() else []
        hint = f"; sweeps in {sweeps_dir}: {', '.join(known)}" if known else f"; start one with `kartsim sweep run {name} ...`"
        raise ConfigError(f"no sweep {name!r} in {sweeps_dir}{hint}")
    try:
        return SweepSpec.from_dict(json.loads(path.read_text())), sweep_dir
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{path} is not a kartsim sweep file ({exc}); delete it or pass --storage") from None


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")
