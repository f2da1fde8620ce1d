"""Train a PPO driver: the one training entry point behind ``kartsim train``, ``train_ppo.py`` and
``train_ppo_vision.py``.

The run's settings are a `kartsim.rl.config.TrainConfig` (its parts, checks and the EnvConfig it
makes). `train` resumes or resolves it, locks the run folder, then `_train_locked` runs the stages:
checks, builds the vector env (batched, or batched blocks in worker processes with
``--vec-backend subproc``), creates (or resumes) the model, learns with checkpoint / racing-metrics /
telemetry callbacks, and saves the final model.

A run writes everything under ``<runs_dir>/<save_name>/``::

    config.json                      env + train config of the run
    checkpoints/<name>_<N>_steps.zip every --checkpoint-freq env steps (and _interrupted.zip on Ctrl-C)
    tb/PPO_1/                        TensorBoard logs (with --tensorboard), incl. racing/* metrics
    telemetry_log.csv                env 0's telemetry, or the first --telemetry-envs N (schema: kartsim.telemetry.TELEMETRY_COLUMNS)
    <name>_final.zip                 the final model; <models_dir>/<name>_final.zip is the same file (a hard link)
    <name>_best.zip                  the best model of the periodic evaluation (--eval-freq);
                                     <models_dir>/<name>_best.zip is the same file

Every saved zip is a plain SB3 PPO model plus ``kartsim_config.json`` and, when rewards are
normalised, the ``VecNormalize`` reward statistics (``reward_stats.json``), which ``--resume`` restores (see
`kartsim.rl.modelio`).
"""

from __future__ import annotations

import shutil
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from kartsim.envs.config import EnvConfig, apply_env_options
from kartsim.errors import ConfigError, KartsimError, ModelFileError
from kartsim.rl.config import (PART_OF, TrainConfig, dotted, env_config_for, flat_train_dict, resolve_device,
                               validate)

@dataclass
class TrainResult:
    final_model: Path | None
    run_dir: Path
    num_timesteps: int
    interrupted: bool = False
    interrupted_model: Path | None = None
    seconds: float = 0.0
    trained: int = 0
    """Env steps this run trained (``num_timesteps`` less the resumed checkpoint's)."""
    checkpoints: list[Path] = field(default_factory=list)
    best_model: Path | None = None
    """``<models_dir>/<name>_best.zip``: the model of the best training-time evaluation."""
    final_eval: dict[str, Any] | None = None
    best_eval: dict[str, Any] | None = None


EVAL_LAPS = 2  # a standing and a flying lap: more laps cost evaluation time and say little more
MAX_EVAL_TRACKS = 4  # evaluating on more would cost more time than the training between evaluations


def configure_threads(cfg: TrainConfig, device: str) -> int:
    """Torch CPU threads for this run: the idle cores for the CNN, one for the small MLP.

    OpenMP threads spin while they wait, so more threads than free cores is ruinous: on a busy
    2-core machine the rays MLP ran at 271 steps/s with 2 threads against ~4,800 with 1, and the
    vision CNN at 34 against 186 steps/s. ``cfg.policy.torch_threads`` overrides.
    """
    import torch

    threads = cfg.policy.torch_threads or (idle_cores() if cfg.vision else 1)
    if device == "cpu":
        torch.set_num_threads(threads)
    return threads


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def vec_workers_for(cfg: TrainConfig) -> int:
    """Worker processes of the run's vector env: ``cfg.run.vec_workers``, else one per usable core, at
    most one per env (``subproc``); 0 for ``batched`` (the karts are stepped in this process)."""
    if cfg.run.vec_backend != "subproc":
        return 0
    return cfg.run.vec_workers or max(1, min(int(cfg.run.vector_envs), usable_cores()))


def idle_cores(window_s: float = 0.3) -> int:
    """Usable cores minus the ones busy right now (CPU time used over ``window_s``), at least 1.

    Measured instead of read from the load average, which lags a minute behind: a test run that
    just ended would otherwise cost a training run half its threads.
    """
    cores = usable_cores()

    def busy_and_total() -> tuple[float, float]:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    try:
        busy0, total0 = busy_and_total()
        time.sleep(window_s)
        busy1, total1 = busy_and_total()
    except (OSError, ValueError, IndexError):  # no /proc (macOS, Windows): the load average, else all
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        return max(1, cores - round(load))
    machine_cores = os.cpu_count() or cores
    busy_cores = machine_cores * (busy1 - busy0) / max(total1 - total0, 1e-9)
    return max(1, min(cores, round(machine_cores - busy_cores)))


def build_vec_env(env_cfg: Any, n_envs: int, seed: int | None, telemetry_envs: list[int] | None = None,
                  normalize_reward_gamma: float | None = None, backend: str = "batched",
                  n_workers: int | None = None):
    """The training env (`backend` ``batched``, or ``subproc`` with `n_workers` worker processes:
    close it to stop them), with SB3's VecMonitor for episode reward/length logs (raw rewards) and,
    with `normalize_reward_gamma`, reward scaling by VecNormalize (observations untouched, so a
    saved model plays on the plain env). `telemetry_envs`: the envs whose info carries telemetry."""
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    from kartsim.rl.vec_env import make_vec_env

    venv = make_vec_env(env_cfg, n_envs=n_envs, seed=seed, backend=backend, n_workers=n_workers or None,
                        telemetry_envs=telemetry_envs)
    if not isinstance(venv, VecMonitor):
        venv = VecMonitor(venv)
    if normalize_reward_gamma is not None:
        venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=normalize_reward_gamma)
    return venv


def restore_reward_stats(venv: Any, path: Path, echo: Callable[[str], None] = print, trust: bool = False) -> bool:
    """Continue the reward normalisation statistics (``ret_rms`` of the VecNormalize `venv`) saved in
    the model zip `path`; when it has none (saved by an older kartsim, trained on raw rewards, or
    kept in a pickle that `trust` does not allow), say so in one line and leave them to be estimated
    afresh. True when restored."""
    from kartsim.rl.modelio import REWARD_STATS_MEMBER, read_reward_stats

    try:
        saved = read_reward_stats(path, trust=trust)
    except ModelFileError as exc:
        echo(f"Reward normalisation statistics not restored ({exc}); estimating them from scratch")
        return False
    if saved is None:
        echo(f"No reward normalisation statistics in {path} (no {REWARD_STATS_MEMBER}); estimating them from scratch")
        return False
    venv.ret_rms = saved
    return True


def checkpoint_count_warning(cfg: TrainConfig, done_steps: int = 0, limit: int = 50) -> str | None:
    """A warning when ``--checkpoint-freq`` would write more than `limit` zips in this run (one per
    env step of all karts at most: the callback checks once per vector step)."""
    if not cfg.run.checkpoint_freq:
        return None
    count = (cfg.run.timesteps - done_steps) // max(cfg.run.checkpoint_freq, cfg.run.vector_envs)
    if count <= limit:
        return None
    return (f"Warning: --checkpoint-freq {cfg.run.checkpoint_freq:,} writes about {count:,} checkpoints in this run; "
            "raise it to write fewer")


def _link_atomically(src: Path, dst: Path) -> str:
    """`dst` becomes the same file as `src`: a hard link (no second copy of a model that can be 50 MB),
    or a copy where the two folders are on different file systems. Atomic either way. Returns
    ``"link"`` or ``"copy"``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.copying")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
        how = "link"
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(src, tmp)
        how = "copy"
    os.replace(tmp, dst)
    return how


class _Run:
    """Paths of one run folder."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.dir = Path(cfg.run.runs_dir) / cfg.run.save_name
        self.checkpoints = self.dir / "checkpoints"
        self.tb = self.dir / "tb"
        self.telemetry = self.dir / "telemetry_log.csv"
        self.config = self.dir / "config.json"
        self.final = self.dir / f"{cfg.run.save_name}_final.zip"
        self.model_copy = Path(cfg.run.models_dir) / f"{cfg.run.save_name}_final.zip"
        self.best = self.dir / f"{cfg.run.save_name}_best.zip"
        self.best_copy = Path(cfg.run.models_dir) / f"{cfg.run.save_name}_best.zip"
        self.interrupted = self.checkpoints / f"{cfg.run.save_name}_interrupted.zip"


TELEMETRY_LINK = Path("telemetry_log.csv")


def link_telemetry(target: Path, echo: Callable[[str], None] = print) -> bool:
    """Make ``./telemetry_log.csv`` a symlink to `target` (replacing only an earlier symlink, never a
    file the user has there). True when the link now points at `target`."""
    link = TELEMETRY_LINK
    if link.exists() and not link.is_symlink():
        echo(f"Kept ./{link} (your file, not a link); this run's telemetry goes to {target}")
        return False
    try:
        if link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(target.absolute(), Path.cwd()))
    except OSError as exc:  # e.g. a file system without symlinks
        echo(f"Could not link ./{link} to {target} ({exc.strerror}); read the CSV from {target}")
        return False
    return True


# Fields that shape the network or the observations: they cannot change on resume.
FIXED_ON_RESUME = ("policy.features_dim", "task.frame_stack", "task.observation", "task.grayscale", "task.camera",
                   "task.image_size")


def saved_train_config(saved: Any) -> TrainConfig:
    """The TrainConfig a model zip or run folder recorded, in either layout (flat before the parts,
    nested since); fields this kartsim no longer has are dropped."""
    return TrainConfig.from_dict({k: v for k, v in flat_train_dict(saved).items() if k in PART_OF})


def _check_resume_flags(cfg: TrainConfig, base: TrainConfig, given: set[str], path: Path) -> None:
    """ConfigError for a flag given on resume that cannot change the checkpoint's run."""
    # A resumed run has its weights already; the same --demos / --init-from as the checkpoint's (a job's
    # command line on `jobs resume`) is that run continuing, a different one is a mistake.
    started_from = sorted(p for p in given & {"pretrain.demos", "pretrain.init_from"} if cfg.get(p) != base.get(p))
    if started_from:
        flag = "--" + started_from[0].partition(".")[2].replace("_", "-")
        raise ConfigError(f"{flag} starts a new run; {path} already has its weights (drop {flag}, or leave out --resume)")
    if "task.vision" in given and cfg.vision != base.vision:
        kind, how = ("vision", "train_ppo_vision.py or kartsim train --vision") if base.vision else ("rays", "train_ppo.py or kartsim train")
        raise ConfigError(f"{path} is a {kind} model; resume it with {how}")
    for key in FIXED_ON_RESUME:
        if key in given and cfg.get(key) != base.get(key):
            name = key.partition(".")[2]
            raise ConfigError(f"--{name.replace('_', '-')} {cfg.get(key)} conflicts with the checkpoint "
                              f"({name}={base.get(key)}); drop the flag to resume")


def _merge_resume(cfg: TrainConfig, given: set[str], payload: dict[str, Any] | None, path: Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The TrainConfig and env config dict for a resumed run: the checkpoint's, with the flags the
    user gave (`given`, dotted paths) applied where they can change, and ConfigError where they cannot."""
    if payload is None:
        raise ModelFileError(
            f"{path} has no kartsim_config.json inside (not saved by kartsim train), so it cannot be resumed"
        )
    env_dict = dict(payload["env"])
    base = saved_train_config(payload.get("train") or {})
    # A model saved before the option existed saw the basic observation.
    base.task.observation = env_dict.get("ray_observation", "basic") if not base.vision else "basic"
    _check_resume_flags(cfg, base, given, path)
    overrides = {key: cfg.get(key) for key in given - set(FIXED_ON_RESUME)}
    if "run.vec_backend" in given and "run.vec_workers" not in given and cfg.run.vec_backend != base.run.vec_backend:
        overrides["run.vec_workers"] = None  # the saved worker count was for the other backend
    overrides.update({"run.resume": str(path), "run.force": cfg.run.force})
    merged = TrainConfig.from_dict({**base.to_dict(), **overrides}).resolved()
    if "task.track" in given:
        env_dict["track"] = merged.task.track[0] if len(merged.task.track) == 1 else list(merged.task.track)
    if "task.track_pool" in given:
        env_dict["random_pool_size"] = merged.task.track_pool
    if "task.env_options" in given:
        apply_env_options(env_dict, merged.task.env_options)
    return merged, env_dict


def train(
    cfg: TrainConfig,
    *,
    given: set[str] | None = None,
    echo: Callable[[str], None] = print,
    callbacks: list[Any] | None = None,
) -> TrainResult:
    """Run one training run. `given` names the TrainConfig fields the user set explicitly, as dotted
    paths (``ppo.gamma``) or bare field names (used when resuming: the checkpoint's values win for the
    rest; None: the fields of `cfg` that differ from a default TrainConfig); `callbacks` are extra SB3
    callbacks (benchmarks, tests). Raises KartsimError for bad input."""
    from kartsim.rl.modelio import read_kartsim_config

    if given is None and cfg.run.resume:
        given = set_fields(cfg)  # else train(cfg) with resume and a new timesteps would ignore it
    given = {dotted(name) for name in (given or ())}
    payload = None
    resume_path: Path | None = None
    if cfg.run.resume:
        resume_path = Path(cfg.run.resume)
        payload = read_kartsim_config(resume_path)  # also checks the file
        cfg, env_dict = _merge_resume(cfg, given, payload, resume_path)
    else:
        cfg = cfg.resolved()
        env_dict = None
    validate(cfg)
    from kartsim.rl.runfolder import RunLock

    with RunLock(Path(cfg.run.runs_dir), cfg.run.save_name):  # one trainer per run folder (until this process ends)
        return _train_locked(cfg, given, echo, callbacks, payload, resume_path, env_dict)


def set_fields(cfg: TrainConfig) -> set[str]:
    """The dotted paths of the fields of `cfg` that differ from a default TrainConfig."""
    default = TrainConfig()
    return {f"{part}.{name}" for name, part in PART_OF.items() if cfg.get(name) != default.get(name)}


def _check_resume_keeps_the_final(run: "_Run", done_steps: int, force: bool) -> None:
    """Resuming an older checkpoint of a finished run would replace its (longer-trained) final model."""
    from kartsim.rl.modelio import read_kartsim_config

    for final in (run.final, run.model_copy):
        if not final.is_file():
            continue
        try:
            steps = int((read_kartsim_config(final) or {}).get("num_timesteps", 0))
        except KartsimError:
            continue
        if steps > done_steps and not force:
            raise ConfigError(
                f"{final} holds {steps:,} steps and resuming from {done_steps:,} would replace it; pass --force, "
                "or --save-name NEW to resume into a new run"
            )


@dataclass
class _Session:
    """What the stages of one training run share (`_train_locked` runs them in order)."""

    cfg: TrainConfig
    given: set[str]
    echo: Callable[[str], None]
    run: _Run
    device: str
    payload: dict[str, Any] | None
    resume_path: Path | None
    done_steps: int
    same_run: bool
    env_cfg: Any = None
    venv: Any = None
    config_doc: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def save(self, model: Any, path: Path, evaluation: dict[str, Any] | None = None) -> Path:
        from kartsim.rl.modelio import save_model

        return save_model(model, path, self.config_doc["env"], self.config_doc["train"], provenance=self.provenance,
                          evaluation=evaluation)


@dataclass
class _Learner:
    """The callbacks of `model.learn` and the ones the end of the run reads back."""

    callbacks: list[Any]
    checkpointer: Any = None
    telemetry: Any = None
    evaluator: Any = None
    progress: Any = None


def _train_locked(cfg: TrainConfig, given: set[str], echo: Callable[[str], None], callbacks: list[Any] | None,
                  payload: dict[str, Any] | None, resume_path: Path | None, env_dict: dict[str, Any] | None) -> TrainResult:
    """`train` once the run folder is locked: check, build the env, write the run folder, create or
    load the model, learn, save."""
    session = _session(cfg, given, echo, payload, resume_path)
    # The env (a bad track fails here, before anything is written).
    session.env_cfg = EnvConfig.from_dict(env_dict) if env_dict is not None else env_config_for(cfg)
    run = cfg.run
    session.venv = build_vec_env(session.env_cfg, run.vector_envs, run.seed,
                                 telemetry_envs=list(range(run.telemetry_envs)) if run.telemetry_every > 0 else [],
                                 normalize_reward_gamma=cfg.ppo.gamma if cfg.ppo.normalize_reward else None,
                                 backend=run.vec_backend, n_workers=vec_workers_for(cfg))
    try:
        linked = _prepare_run_folder(session)
        model = _make_model(session)
        learner = _learner(session, callbacks)
    except BaseException:  # stop the env's worker processes (subproc) on any failure before learning
        session.venv.close()
        raise
    result = _learn(session, model, learner)
    if not result.interrupted:
        _finish(session, model, learner, result, linked)
    return result


def _session(cfg: TrainConfig, given: set[str], echo: Callable[[str], None], payload: dict[str, Any] | None,
             resume_path: Path | None) -> _Session:
    """The checks before anything is built: the step count of a resume, and nothing overwritten."""
    run = _Run(cfg)
    done_steps = int(payload.get("num_timesteps", 0)) if payload else 0
    if resume_path is not None and cfg.run.timesteps <= done_steps:
        raise ConfigError(
            f"the checkpoint has already trained {done_steps:,} steps; --timesteps is the new total, "
            f"so give more than {done_steps}"
        )
    # Resuming under the checkpoint's own run name continues that run folder (from a checkpoint or
    # from models/<name>_final.zip alike); a new --save-name starts a new folder.
    same_run = payload is not None and cfg.run.save_name == flat_train_dict(payload.get("train")).get("save_name")
    if not cfg.run.force and not same_run:
        for existing in (run.dir, run.model_copy, run.best_copy):
            if existing.exists():
                raise ConfigError(
                    f"{existing} already exists; pass --force to overwrite it, another --save-name, or --resume a checkpoint"
                )
    if same_run:
        _check_resume_keeps_the_final(run, done_steps, cfg.run.force)
    return _Session(cfg=cfg, given=given, echo=echo, run=run, device=resolve_device(cfg.run.device), payload=payload,
                    resume_path=resume_path, done_steps=done_steps, same_run=same_run,
                    provenance=dict((payload or {}).get("provenance") or {}))


def _prepare_run_folder(s: _Session) -> bool:
    """Clear a forced run's old files, write config.json, drop stale saves and the telemetry rows a
    resume trains again, link ./telemetry_log.csv. True when linked."""
    from kartsim.rl.runfolder import record_config, truncate_telemetry

    cfg, run = s.cfg, s.run
    if cfg.run.force and not s.same_run:
        if run.dir.exists():
            shutil.rmtree(run.dir)
        for copy in (run.model_copy, run.best_copy):
            if copy.exists():
                copy.unlink()
    run.dir.mkdir(parents=True, exist_ok=True)
    s.config_doc = {"env": s.env_cfg.to_dict(), "train": cfg.to_dict(), "command": sys.argv,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    record_config(run.config, s.config_doc, s.resume_path if s.same_run else None)
    for stale in [*run.dir.glob(".saving-*.zip"), *run.checkpoints.glob(".saving-*.zip")]:
        stale.unlink()  # left by a killed save (this process holds the run's lock: no other is writing)
    if s.same_run and cfg.run.telemetry_every > 0:
        dropped = truncate_telemetry(run.telemetry, s.done_steps)  # logged after the checkpoint, trained again now
        if dropped:
            s.echo(f"Telemetry: dropped {dropped:,} row(s) logged after step {s.done_steps:,} (they are trained again)")
    return cfg.run.telemetry_every > 0 and cfg.run.telemetry_link and link_telemetry(run.telemetry, s.echo)


def _announce_setup(s: _Session) -> None:
    """Device, threads, vector envs and the checkpoint count of the run."""
    cfg = s.cfg
    threads = configure_threads(cfg, s.device)
    s.echo(f"Using device: {s.device}" + (f" ({threads} torch thread{'s' if threads > 1 else ''})" if s.device == "cpu" else ""))
    workers = vec_workers_for(cfg)
    if workers:
        s.echo(f"Vector envs: {cfg.run.vector_envs} (subproc backend: {workers} worker process{'es' if workers > 1 else ''})")
    else:
        s.echo(f"Vector envs: {cfg.run.vector_envs} (batched backend: one process)")
    warning = checkpoint_count_warning(cfg, s.done_steps)
    if warning:
        s.echo(warning)


def _make_model(s: _Session) -> Any:
    """The PPO model: loaded from the resumed checkpoint, or new (with its initial weights and
    demonstrations). The same PPO settings for both (a resumed run takes the flags given now)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.utils import LinearSchedule
    from stable_baselines3.common.vec_env import VecNormalize

    from kartsim.rl.modelio import load_ppo
    from kartsim.rl.policies import bf16_supported, display_policy_name, policy_for, resolve_precision

    cfg, ppo, echo = s.cfg, s.cfg.ppo, s.echo
    _announce_setup(s)
    lr: Any = ppo.learning_rate if ppo.lr_schedule == "constant" else LinearSchedule(ppo.learning_rate, 0.0, 1.0)
    hyper = dict(learning_rate=lr, n_steps=ppo.n_steps, batch_size=ppo.batch_size, n_epochs=ppo.n_epochs,
                 gamma=ppo.gamma, gae_lambda=ppo.gae_lambda, clip_range=ppo.clip_range, ent_coef=ppo.ent_coef,
                 tensorboard_log=str(s.run.tb) if cfg.run.tensorboard else None, verbose=cfg.run.verbose)
    if s.resume_path is not None:
        echo(f"Resuming model from {s.resume_path} ({s.done_steps:,} steps done)")
        model = load_ppo(s.resume_path, env=s.venv, device=s.device, **hyper)
        if isinstance(s.venv, VecNormalize):
            restore_reward_stats(s.venv, s.resume_path, echo, trust=cfg.run.trust_model)
        if cfg.run.seed is not None:
            model.set_random_seed(cfg.run.seed)
        return model
    echo(f"Creating new model with {display_policy_name(cfg.vision)}")
    precision = resolve_precision(cfg.policy.precision, s.device)
    policy, policy_kwargs = policy_for(cfg.vision, cfg.policy.features_dim, precision)
    if cfg.vision:
        slow = precision == "bf16" and not bf16_supported(s.device)
        echo(f"Vision CNN precision: {precision}" + (" (emulated: this hardware has no native bf16, so it is "
                                                     "slower than fp32; --precision auto picks fp32)" if slow else ""))
    policy_kwargs["log_std_init"] = cfg.policy.log_std_init
    model = PPO(policy, s.venv, policy_kwargs=policy_kwargs, seed=cfg.run.seed, device=s.device, **hyper)
    from kartsim.rl.pretrain import prepare_policy
    from kartsim.rl.runfolder import record_config

    s.provenance.update(prepare_policy(model, cfg, s.env_cfg, given=s.given, echo=echo))
    if s.provenance:
        record_config(s.run.config, dict(s.config_doc, provenance=s.provenance), None)
    return model


def _learner(s: _Session, extra: list[Any] | None) -> _Learner:
    """The run's callbacks: racing metrics, device use, checkpoints, telemetry, evaluation, the
    caller's, fault points (tests), the progress bar."""
    from stable_baselines3.common.callbacks import ProgressBarCallback

    from kartsim.rl.callbacks import (DeviceUsageCallback, FaultPointsCallback, KartCheckpointCallback,
                                      RacingMetricsCallback, TelemetryCSVCallback, ValueWarmupCallback)

    run = s.cfg.run
    learner = _Learner([RacingMetricsCallback(), DeviceUsageCallback()])
    if run.checkpoint_freq > 0:
        learner.checkpointer = KartCheckpointCallback(run.checkpoint_freq, s.run.checkpoints, run.save_name, s.save)
        learner.callbacks.append(learner.checkpointer)
    if run.telemetry_every > 0:
        learner.telemetry = TelemetryCSVCallback(s.run.telemetry, every=run.telemetry_every,
                                                 append=s.resume_path is not None, n_envs=run.telemetry_envs)
        learner.callbacks.append(learner.telemetry)
    # No evaluation in a run shorter than one evaluation period (tests, smoke runs).
    if 0 < s.cfg.eval.eval_freq <= run.timesteps - s.done_steps:
        learner.evaluator = _evaluator(s.cfg, s.env_cfg, s.run, s.save, s.echo)
        learner.callbacks.append(learner.evaluator)
    if s.cfg.pretrained and s.cfg.pretrain.value_warmup > 0:
        learner.callbacks.append(ValueWarmupCallback(s.cfg.pretrain.value_warmup))
    learner.callbacks.extend(extra or [])
    if os.environ.get("KARTSIM_FAULT"):
        learner.callbacks.append(FaultPointsCallback())
    # SB3's own progress bar, held here so that Ctrl-C can close it before the messages of the end.
    if run.progress_bar:
        learner.progress = ProgressBarCallback()
        learner.callbacks.append(learner.progress)
    return learner


def is_interrupt(exc: BaseException) -> bool:
    """A Ctrl-C (or SIGTERM): a KeyboardInterrupt, or numba's SystemError around one, which is what a
    signal landing while a kernel is being loaded from numba's cache becomes."""
    return isinstance(exc, KeyboardInterrupt) or (isinstance(exc, SystemError)
                                                  and isinstance(exc.__cause__, KeyboardInterrupt))


def _learn(s: _Session, model: Any, learner: _Learner) -> TrainResult:
    """`model.learn` for the rest of the run; Ctrl-C / SIGTERM saves ``_interrupted.zip``."""
    from stable_baselines3.common.callbacks import CallbackList

    from kartsim.rl.runfolder import signals_deferred, sigterm_as_interrupt

    cfg, echo = s.cfg, s.echo
    remaining = cfg.run.timesteps - s.done_steps
    on = "GPU" if s.device.startswith("cuda") else "CPU"
    echo(f"Starting training for {remaining:,} timesteps on {on}...")
    if cfg.vision and on == "GPU":
        echo("This WILL use GPU efficiently with CNN policy!")
    if cfg.run.tensorboard:
        echo(f"TensorBoard logs: {s.run.tb}  (view with: tensorboard --logdir {s.run.tb})")
    sys.stdout.flush()
    started = time.perf_counter()
    steps_before = model.num_timesteps
    result = TrainResult(final_model=None, run_dir=s.run.dir, num_timesteps=model.num_timesteps)
    try:
        with sigterm_as_interrupt():
            model.learn(total_timesteps=remaining, callback=CallbackList(learner.callbacks),
                        reset_num_timesteps=s.resume_path is None, progress_bar=False,  # learner.progress
                        tb_log_name="PPO")
    except (KeyboardInterrupt, SystemError) as exc:
        if not is_interrupt(exc):
            raise
        if learner.progress is not None and getattr(learner.progress, "pbar", None) is not None:
            learner.progress.pbar.close()
        with signals_deferred():  # a second Ctrl-C / SIGTERM must not break the save
            result.interrupted_model = s.save(model, s.run.interrupted)
        result.interrupted = True
    finally:
        if learner.telemetry is not None and learner.telemetry.writer is not None:
            learner.telemetry.writer.close()
        s.venv.close()  # and its worker processes (subproc), also on Ctrl-C
    result.seconds = time.perf_counter() - started
    result.num_timesteps = model.num_timesteps
    result.trained = model.num_timesteps - steps_before
    if learner.checkpointer is not None:
        result.checkpoints = list(learner.checkpointer.saved)
    if result.interrupted:
        echo("")
        echo(f"Training interrupted at {model.num_timesteps:,} steps; saved {result.interrupted_model}")
        echo(f"Resume with: kartsim train --resume {result.interrupted_model} --timesteps {cfg.run.timesteps}")
    return result


def _finish(s: _Session, model: Any, learner: _Learner, result: TrainResult, linked: bool) -> None:
    """Save the final model (and its copy in the models folder) and say what the run made."""
    from kartsim.rl.runfolder import signals_deferred

    echo, run = s.echo, s.run
    with signals_deferred() as arrived:  # Ctrl-C during the final save must not lose the run
        final = s.save(model, run.final)
        how = _link_atomically(final, run.model_copy)
    if arrived:
        echo("Interrupted during the final save: waited for it to finish")
    result.final_model = run.model_copy
    rate = result.trained / result.seconds if result.seconds > 0 else 0.0
    echo(f"Trained {result.trained:,} steps in {result.seconds:.0f} s ({rate:,.0f} steps/s); "
         f"total {model.num_timesteps:,} steps")
    echo(f"Saved final model: {run.model_copy} ({'the same file as' if how == 'link' else 'a copy of'} {final})")
    if s.cfg.run.telemetry_every > 0:
        echo(f"Telemetry log: {run.telemetry}" + (f" (./{TELEMETRY_LINK} links to it)" if linked else ""))
    if learner.evaluator is not None:
        _report_evaluation(learner.evaluator, run, result, echo)
    echo(f"Watch it drive: python play_ppo.py --model {run.model_copy}")


def eval_tracks_for(cfg: TrainConfig, env_cfg: Any) -> list[str]:
    """The tracks a run evaluates on: `cfg.eval.eval_tracks`, else the training tracks (at most
    `MAX_EVAL_TRACKS`, spread evenly over a pool)."""
    from kartsim.envs.tracks import source_path, track_paths, track_sources

    if cfg.eval.eval_tracks:
        return track_paths(list(cfg.eval.eval_tracks))
    tracks = track_sources(env_cfg.track, env_cfg.random_pool_size)  # only the picked ones are generated
    if len(tracks) > MAX_EVAL_TRACKS:
        step = len(tracks) / MAX_EVAL_TRACKS
        tracks = [tracks[int(i * step)] for i in range(MAX_EVAL_TRACKS)]
    return [source_path(t) for t in tracks]


def _evaluator(cfg: TrainConfig, env_cfg: Any, run: _Run, save: Callable[..., Path], echo: Callable[[str], None]):
    """The run's LapEvalCallback: saves ``<run>/<name>_best.zip`` (and its copy in the models folder)
    on each new best evaluation; a resumed run starts from the best its run folder already holds."""
    from kartsim.rl.callbacks import LapEvalCallback, describe_eval
    from kartsim.rl.modelio import read_kartsim_config

    best_row = None
    if cfg.run.resume and run.best.exists():
        try:
            best_row = (read_kartsim_config(run.best) or {}).get("evaluation")
        except ModelFileError:
            best_row = None  # a damaged best model is replaced by the next evaluation

    def save_best(model: Any, row: dict[str, Any]) -> Path:
        _link_atomically(save(model, run.best, evaluation=row), run.best_copy)
        return run.best_copy

    def report(row: dict[str, Any]) -> None:
        echo(f"  evaluation at {row['steps']:,} steps ({row['wall_s']:.0f} s): {describe_eval(row)}")

    evaluator = LapEvalCallback(env_cfg, cfg.eval.eval_freq, tracks=eval_tracks_for(cfg, env_cfg), episodes=cfg.eval.eval_episodes,
                                max_laps=EVAL_LAPS, evaluate_final=True, evaluate_start=cfg.pretrained,
                                stop_at_ratio=cfg.eval.stop_at_ratio, save_best=save_best, best_row=best_row,
                                report=None if cfg.run.progress_bar else report)
    evaluator.prepare()
    return evaluator


def _report_evaluation(evaluator: Any, run: _Run, result: "TrainResult", echo: Callable[[str], None]) -> None:
    """Say how the final model evaluated against the best one, and where the best one is."""
    from kartsim.rl.callbacks import describe_eval, eval_key

    final, best = evaluator.final, evaluator.best
    result.final_eval, result.best_eval = final, best
    if best is None or final is None:
        return
    result.best_model = run.best_copy if run.best_copy.exists() else None
    echo(f"Evaluation of the final model (deterministic, from the start line): {describe_eval(final)}")
    if eval_key(final) < eval_key(best) and result.best_model is not None:
        echo(f"The final model is worse than the best evaluated during training ({describe_eval(best)}, "
             f"at {best['steps']:,} steps): use {result.best_model}")
    elif result.best_model is not None:
        echo(f"Best model: {result.best_model} ({describe_eval(best)}, at {best['steps']:,} steps)")


__all__ = ["TrainConfig", "TrainResult", "train", "validate", "env_config_for", "resolve_device", "KartsimError"]
