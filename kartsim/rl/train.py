"""Train a PPO driver: the one training entry point behind ``kartsim train``, ``train_ppo.py`` and
``train_ppo_vision.py``.

Read top to bottom: `TrainConfig` (every knob, documented), `validate`, `env_config_for`, then
`train`, which builds the vector env (batched, or batched blocks in worker processes with
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

import dataclasses
import re
import shutil
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from kartsim.envs.config import VEC_BACKENDS, EnvConfig, apply_env_options
from kartsim.errors import ConfigError, KartsimError, ModelFileError

# Hyper-parameters that default per policy kind when left as None.
MODE_DEFAULTS: dict[bool, dict[str, Any]] = {
    # rays (MLP): many karts, big batches, few epochs. Measured on circuit.png (5 seeds): first
    # deterministic lap at 98k-393k steps (median 131k) at 7-10k steps/s on 2 busy cores, against
    # 850k steps at 460 steps/s with 8 envs x 512 steps, batch 256, 10 epochs, lr 3e-4, log std 0.
    False: {"vector_envs": 64, "learning_rate": 1e-3, "n_steps": 128, "batch_size": 2048, "n_epochs": 5,
            "log_std_init": -0.5, "demos_mode": "dagger"},
    # vision (CNN): the same shape as rays (many karts, large batches: the CNN's throughput on a CPU
    # grows with the batch). Epochs chosen by wall-clock time to the first deterministic lap on
    # circuit.png (3 seeds each, benchmarks/RESULTS.md): 4 epochs 139-429 s (median 271), 3 epochs
    # 71-178 s (median 106), 2 epochs 156-203 s (median 156).
    # Demonstrations: DAgger made the vision student worse (the states it reaches are ones a camera
    # policy cannot yet recover from; benchmarks/RESULTS.md), so vision clones the AI's laps only.
    True: {"vector_envs": 16, "learning_rate": 3e-4, "n_steps": 128, "batch_size": 512, "n_epochs": 3,
           "log_std_init": -0.5, "demos_mode": "bc"},
}
# Vision with fewer karts than the default 16 (the guide's ``--vector-envs 4``): a rollout of 4 x 128
# steps holds a quarter of the samples, so the minibatch is a quarter of the rollout (4 minibatches an
# epoch, as 512 of 16 x 128), with twice the epochs and less action noise. Measured on circuit.png
# with 4 karts, 100k steps (benchmarks/RESULTS.md): 16-kart settings (batch 512, 3 epochs) never
# lapped (best 505 m); batch 128 alone 505 m; these lapped at the first evaluation (20k steps).
FEW_KARTS_VISION: dict[str, Any] = {"n_epochs": 6, "log_std_init": -1.0}
VISION_MINIBATCHES = 4


@dataclass
class TrainConfig:
    """Everything a training run needs. ``None`` means "the default for this policy kind"
    (`MODE_DEFAULTS`); `resolved()` fills those in. `validate` checks a resolved one: the field
    types, NaN / inf and `LIMITS` (`kartsim.validation`), then the rules between fields."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "vector_envs": (1, 1024), "torch_threads": (1, 512), "log_std_init": (-5.0, 2.0), "frame_stack": (1, 16),
        "image_size": (16, 512)}

    vision: bool = False
    """Train on camera images + telemetry (CNN, ``kartsim/KartVision-v0``) instead of rays (MLP)."""
    timesteps: int | None = None
    """Total env steps the model will have trained when the run ends (all vector envs together).
    When resuming this is the new total, not an increment. None: 1,000,000 (or the resumed run's)."""
    save_name: str | None = None
    """Run name: files go to ``<runs_dir>/<save_name>/`` and ``<models_dir>/<save_name>_final.zip``.
    None: ``kart_vision`` / ``kart_rays`` (or the resumed run's)."""
    vector_envs: int | None = None
    """Karts simulated side by side (in one batched env, or shared out among ``vec_workers``)."""
    vec_backend: str = "batched"
    """How the vector envs are stepped: ``batched`` (all karts as arrays in this process) or
    ``subproc`` (contiguous blocks of karts, each a batched env in a worker process, observations
    in shared memory: for machines with more cores than one batched env can fill)."""
    vec_workers: int | None = None
    """``subproc`` only: worker processes. None: one per usable core, at most one per vector env
    (worked out when the run starts, so a resumed run fits the machine it runs on)."""
    track: list[str] = field(default_factory=lambda: ["circuit.png"])
    """Track(s): bundled names, PNG paths, folders of PNGs, or ``random`` (a new generated track per
    episode). Several tracks are shared out among the vector envs."""
    observation: str | None = None
    """Rays only: ``rich`` (the default: 15 rays plus slip, yaw rate, steering, lateral offset and
    the curvature up to 80 m ahead, 26 values; on circuit.png it drives within 1.08 × the reference
    after 200k steps where ``basic`` needs 1.5M for 1.11, benchmarks/RESULTS.md) or ``basic`` (the
    guide's 10 values of ``kartsim/Kart-v0``)."""
    learning_rate: float | None = None
    """Adam learning rate (at the start, with ``lr_schedule=linear``)."""
    lr_schedule: str = "constant"
    """``constant`` or ``linear`` (from --learning-rate down to 0 at --timesteps)."""
    batch_size: int | None = None
    """Minibatch size of the PPO update; must divide n_steps x vector_envs."""
    n_steps: int | None = None
    """Env steps per vector env between updates (rollout length)."""
    n_epochs: int | None = None
    """Passes over each rollout per update."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_range: float = 0.2
    """PPO clip range."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    log_std_init: float | None = None
    """Initial log standard deviation of the Gaussian action noise (0: std 1 on [-1, 1] actions;
    -0.5, the default: std 0.6, enough to find braking points without spinning all the time)."""
    precision: str = "auto"
    """Vision CNN arithmetic: ``bf16`` (autocast), ``fp32``, or ``auto`` = bf16 where the CPU/GPU
    computes it natively (AVX-512 BF16 / AMX, or a bf16-capable GPU), else fp32."""
    torch_threads: int | None = None
    """Torch CPU threads; None: the idle cores for vision, 1 for the rays MLP."""
    normalize_reward: bool = True
    """Scale rewards by a running estimate of the return's spread (SB3 ``VecNormalize``, rewards
    only): the value function then learns O(1) targets whatever the reward weights."""
    features_dim: int = 512
    """Vision only: size of the fused CNN + telemetry feature vector (512 or 1024 are typical)."""
    frame_stack: int = 1
    """Vision only: camera frames stacked on the channel axis (4 lets the policy see motion)."""
    grayscale: bool = False
    """Vision only: one channel per frame instead of RGB."""
    camera: str = "chase"
    """Vision only: ``chase`` (behind and above the kart) or ``driver`` (cockpit view)."""
    image_size: int = 84
    """Vision only: camera image width and height in pixels."""
    env_options: dict[str, Any] = field(default_factory=dict)
    """Extra EnvConfig fields (``--env-option max_episode_steps=2000``)."""
    checkpoint_freq: int = 100_000
    """Save a checkpoint every this many env steps (0: only the final model)."""
    eval_freq: int | None = None
    """Evaluate the deterministic policy from the start line every this many env steps (SB3's
    ``EvalCallback`` convention) and keep the best model, by completion then lap time against the
    reference, as ``<name>_best.zip`` (0: off; None: a tenth of --timesteps, at least 20,000)."""
    eval_episodes: int = 1
    """Episodes per evaluation track (each at most 2 laps: a standing and a flying one)."""
    eval_tracks: list[str] | None = None
    """Evaluation tracks (None: the training tracks; of a pool, `MAX_EVAL_TRACKS` spread over it)."""
    stop_at_ratio: float | None = None
    """Stop training once an evaluation laps every evaluation track within this × the reference lap."""
    track_pool: int | None = None
    """With ``--track-name random``: how many generated tracks the pool holds (None: 8)."""
    tensorboard: bool = False
    """Write TensorBoard logs to ``<run>/tb/`` (SB3 metrics + racing/*)."""
    telemetry_every: int = 1
    """Log telemetry to ``<run>/telemetry_log.csv`` every this many steps (0: off)."""
    telemetry_envs: int = 1
    """Log the telemetry of the first this many vector envs (the CSV's ``env`` column says which)."""
    telemetry_link: bool = True
    """Point ``./telemetry_log.csv`` (a symlink in the current folder) at this run's telemetry, so
    ``pd.read_csv("telemetry_log.csv")`` reads the latest run where training was started. A real
    file of that name is left alone. Jobs turn it off."""
    seed: int | None = None
    """Seed for the model and the envs (None: random)."""
    device: str = "auto"
    """``auto`` (cuda when available), ``cpu`` or ``cuda``."""
    resume: str | None = None
    """Continue training from this checkpoint / model zip (step count, run folder and env config
    come from it)."""
    trust_model: bool = False
    """Also read the pickled members of a resumed model (``vecnormalize.pkl`` of older kartsim
    models), which could run code: only for files you trust."""
    force: bool = False
    """Overwrite an existing run folder / final model of the same name."""
    runs_dir: str = "runs"
    """Folder of run folders."""
    models_dir: str = "models"
    """Folder that receives a copy of each final model."""
    demos: str | None = None
    """Pre-train the policy on demonstrations before PPO (behaviour cloning): ``ai:hard|medium|easy``
    (the AI drives in this run's env, recorded with the policy's own observations), a telemetry CSV
    (``kartsim drive``) or a folder of CSV / ``kartsim demos record`` files, a demos ``.npz``, or a
    model zip to distil (`kartsim.rl.demos`)."""
    demos_mode: str | None = None
    """``bc``: clone the demonstrations; ``dagger``: then ``dagger_rounds`` rounds in which the policy
    drives and the teacher (``ai:``, a model, an npz recorded from ``ai:``) labels the states it
    visits. None: dagger for rays, bc for vision (measured, benchmarks/RESULTS.md); recorded driving
    (human laps) has no teacher and falls back to bc."""
    demos_laps: int = 20
    """Laps the teacher drives when ``demos`` is ``ai:LEVEL`` or a model zip."""
    demos_noise: float = 0.0
    """While an ``ai:`` / model teacher records: standard deviation of the persistent noise added to
    the actions it applies (its clean actions are the labels), so the demonstrations include
    recoveries from the errors a clone makes (DART). 0: the teacher's own line only."""
    bc_epochs: int = 10
    """Behaviour cloning passes over the demonstrations (and over the aggregate in each DAgger round)."""
    dagger_rounds: int = 2
    """DAgger rounds (``demos_mode`` dagger)."""
    dagger_steps: int = 8000
    """States the policy visits (all karts together) in each DAgger round."""
    init_from: str | None = None
    """Start from this model zip's weights (`kartsim.rl.transfer`; e.g. fine-tune a circuit model on
    another track)."""
    init_parts: str = "all"
    """Which weights ``init_from`` copies: ``cnn`` (vision features extractor), ``policy`` (all but the
    value function) or ``all``."""
    progress_bar: bool = True
    """Show SB3's progress bar (tqdm + rich) with ETA."""
    verbose: int = 0
    """SB3 verbosity (1 prints the metrics table after every rollout)."""

    def resolved(self) -> "TrainConfig":
        """A copy with every None default filled in for this policy kind."""
        values = dataclasses.asdict(self)
        batch_given = values["batch_size"] is not None
        defaults = dict(MODE_DEFAULTS[self.vision])
        few = self.vision and values["vector_envs"] is not None and values["vector_envs"] < defaults["vector_envs"]
        if few:
            defaults.update(FEW_KARTS_VISION)
        for key, default in defaults.items():
            if values[key] is None:
                values[key] = default
        if few and not batch_given:
            values["batch_size"] = max(2, int(values["n_steps"]) * int(values["vector_envs"]) // VISION_MINIBATCHES)
        if not batch_given:
            # The default minibatch must fit the rollout the user asked for (e.g. --vector-envs 2):
            # the largest divisor of n_steps x vector_envs not above the default.
            rollout = max(2, int(values["n_steps"]) * int(values["vector_envs"]))
            batch = min(int(values["batch_size"]), rollout)
            while batch > 2 and rollout % batch:
                batch -= 1
            values["batch_size"] = batch
        if values["timesteps"] is None:
            values["timesteps"] = 1_000_000
        if values["observation"] is None:
            values["observation"] = "basic" if self.vision else "rich"
        if values["eval_freq"] is None:
            values["eval_freq"] = max(MIN_EVAL_FREQ, int(values["timesteps"]) // 10)
        if values["save_name"] is None:
            values["save_name"] = "kart_vision" if self.vision else "kart_rays"
        return TrainConfig(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        from kartsim.config import from_dict

        return from_dict(cls, data)


@dataclass
class TrainResult:
    final_model: Path | None
    run_dir: Path
    num_timesteps: int
    interrupted: bool = False
    interrupted_model: Path | None = None
    seconds: float = 0.0
    checkpoints: list[Path] = field(default_factory=list)
    best_model: Path | None = None
    """``<models_dir>/<name>_best.zip``: the model of the best training-time evaluation."""
    final_eval: dict[str, Any] | None = None
    best_eval: dict[str, Any] | None = None


MIN_EVAL_FREQ = 20_000
EVAL_LAPS = 2  # a standing and a flying lap: more laps cost evaluation time and say little more
MAX_EVAL_TRACKS = 4  # evaluating on more would cost more time than the training between evaluations
DEFAULT_TRACK_POOL = 8

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")



def configure_threads(cfg: TrainConfig, device: str) -> int:
    """Torch CPU threads for this run: the idle cores for the CNN, one for the small MLP.

    OpenMP threads spin while they wait, so more threads than free cores is ruinous: on a busy
    2-core machine the rays MLP ran at 271 steps/s with 2 threads against ~4,800 with 1, and the
    vision CNN at 34 against 186 steps/s. ``cfg.torch_threads`` overrides.
    """
    import torch

    threads = cfg.torch_threads or (idle_cores() if cfg.vision else 1)
    if device == "cpu":
        torch.set_num_threads(threads)
    return threads


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def vec_workers_for(cfg: TrainConfig) -> int:
    """Worker processes of the run's vector env: ``cfg.vec_workers``, else one per usable core, at
    most one per env (``subproc``); 0 for ``batched`` (the karts are stepped in this process)."""
    if cfg.vec_backend != "subproc":
        return 0
    return cfg.vec_workers or max(1, min(int(cfg.vector_envs), usable_cores()))


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


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"--device must be auto, cpu or cuda, not {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("CUDA is not available on this machine; use --device cpu or auto")
    return device


def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError (one line naming the flag) for any value that cannot work. `cfg` is resolved."""
    from kartsim.validation import check_config

    check_config(cfg, flags=True)  # types, NaN / inf
    _validate_run(cfg)
    _validate_ppo(cfg)
    _validate_model_and_logs(cfg)
    _validate_evaluation(cfg)


def _validate_evaluation(cfg: TrainConfig) -> None:
    """The periodic evaluation and the generated track pool."""
    if cfg.eval_freq < 0:
        raise ConfigError(f"--eval-freq must be >= 0 (0 = no evaluation), not {cfg.eval_freq}")
    if cfg.eval_episodes < 1:
        raise ConfigError(f"--eval-episodes must be >= 1, not {cfg.eval_episodes}")
    if cfg.stop_at_ratio is not None:
        if not 0 < cfg.stop_at_ratio < 10:
            raise ConfigError(f"--stop-at-ratio must be a ratio to the reference lap such as 1.10, not {cfg.stop_at_ratio}")
        if cfg.eval_freq == 0:
            raise ConfigError("--stop-at-ratio needs the evaluation; drop --eval-freq 0")
    if cfg.track_pool is not None:
        if "random" not in cfg.track:
            raise ConfigError("--track-pool only applies to --track-name random; add 'random' to --track-name")
        if not 1 <= cfg.track_pool <= 10_000:
            raise ConfigError(f"--track-pool must be between 1 and 10000 tracks, not {cfg.track_pool}")


def _validate_run(cfg: TrainConfig) -> None:
    """Length, name and the vector envs."""
    if cfg.timesteps is None or cfg.timesteps <= 0:
        raise ConfigError(f"--timesteps must be a positive number of env steps, not {cfg.timesteps}")
    if not _NAME_RE.match(cfg.save_name or ""):
        raise ConfigError(
            f"--save-name {cfg.save_name!r} must be a plain file name (letters, digits, '.', '_', '-'; no folders)"
        )
    if cfg.vec_backend not in VEC_BACKENDS:
        raise ConfigError(f"--vec-backend must be {' or '.join(VEC_BACKENDS)}, not {cfg.vec_backend!r}")
    if cfg.vec_workers is not None:
        if cfg.vec_backend != "subproc":
            raise ConfigError("--vec-workers only applies to --vec-backend subproc; add that flag or drop --vec-workers")
        if cfg.vec_workers < 1:
            raise ConfigError(f"--vec-workers must be >= 1, not {cfg.vec_workers}")
        if cfg.vec_workers > cfg.vector_envs:
            raise ConfigError(
                f"--vec-workers {cfg.vec_workers} is more than --vector-envs {cfg.vector_envs} (each worker steps "
                "at least one kart); lower --vec-workers or raise --vector-envs"
            )
    if cfg.observation not in ("basic", "rich"):
        raise ConfigError(f"--observation must be basic or rich, not {cfg.observation!r}")
    if cfg.observation == "rich" and cfg.vision:
        raise ConfigError("--observation rich is a rays observation; vision agents see the camera and telemetry")
    if cfg.lr_schedule not in ("constant", "linear"):
        raise ConfigError(f"--lr-schedule must be constant or linear, not {cfg.lr_schedule!r}")


def _validate_ppo(cfg: TrainConfig) -> None:
    """The PPO hyper-parameters (and the pre-training options)."""
    if not 0 < cfg.learning_rate < 1:
        raise ConfigError(f"--learning-rate must be in (0, 1), not {cfg.learning_rate}")
    if cfg.n_steps < 1:
        raise ConfigError(f"--n-steps must be >= 1, not {cfg.n_steps}")
    if cfg.n_epochs < 1:
        raise ConfigError(f"--n-epochs must be >= 1, not {cfg.n_epochs}")
    rollout = cfg.n_steps * cfg.vector_envs
    if cfg.batch_size < 2:
        raise ConfigError(f"--batch-size must be >= 2, not {cfg.batch_size}")
    if cfg.batch_size > rollout:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} is larger than a rollout (n_steps {cfg.n_steps} x vector envs "
            f"{cfg.vector_envs} = {rollout}); lower it or raise --n-steps"
        )
    if rollout % cfg.batch_size:
        divisors = [d for d in (32, 64, 128, 256, 512, 1024, 2048) if rollout % d == 0 and d <= rollout]
        hint = f"; e.g. {', '.join(map(str, divisors[-3:]))}" if divisors else ""
        raise ConfigError(
            f"--batch-size {cfg.batch_size} does not divide the rollout (n_steps {cfg.n_steps} x vector envs "
            f"{cfg.vector_envs} = {rollout}){hint}"
        )
    if not 0 < cfg.gamma <= 1:
        raise ConfigError(f"gamma must be in (0, 1], not {cfg.gamma}")
    from kartsim.rl.pretrain import validate_pretrain

    validate_pretrain(cfg)
    if not 0 <= cfg.gae_lambda <= 1:
        raise ConfigError(f"gae_lambda must be in [0, 1], not {cfg.gae_lambda}")
    if cfg.clip_range <= 0:
        raise ConfigError(f"clip_range must be > 0, not {cfg.clip_range}")
    if cfg.ent_coef < 0:
        raise ConfigError(f"ent_coef must be >= 0, not {cfg.ent_coef}")


def _validate_model_and_logs(cfg: TrainConfig) -> None:
    """Precision, threads, the policy and camera shape, checkpoints, telemetry, seed, tracks, device."""
    if cfg.precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"--precision must be auto, bf16 or fp32, not {cfg.precision!r}")
    if cfg.precision != "auto" and not cfg.vision:
        raise ConfigError(f"--precision {cfg.precision} only applies to the vision CNN; add --vision or drop --precision")
    if not 1 <= cfg.features_dim <= 8192:
        raise ConfigError(f"--features-dim must be between 1 and 8192 (512 or 1024 are typical), not {cfg.features_dim}")
    if cfg.camera not in ("chase", "driver"):
        raise ConfigError(f"--camera must be chase or driver, not {cfg.camera!r}")
    if cfg.vision and cfg.image_size < 36:
        raise ConfigError(f"--image-size {cfg.image_size} is too small for the CNN (8x8/4, 4x4/2, 3x3/1); use >= 36")
    if cfg.checkpoint_freq < 0:
        raise ConfigError(f"--checkpoint-freq must be >= 0 (0 = no checkpoints), not {cfg.checkpoint_freq}")
    if cfg.telemetry_every < 0:
        raise ConfigError(f"--telemetry-every must be >= 0 (0 = off), not {cfg.telemetry_every}")
    if not 1 <= cfg.telemetry_envs <= cfg.vector_envs:
        raise ConfigError(f"--telemetry-envs must be between 1 and --vector-envs ({cfg.vector_envs}), "
                          f"not {cfg.telemetry_envs}")
    if cfg.seed is not None and not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"--seed must be between 0 and 2**32 - 1, not {cfg.seed}")
    if not cfg.track:
        raise ConfigError("--track-name needs at least one track")
    resolve_device(cfg.device)


def env_config_for(cfg: TrainConfig):
    """The EnvConfig a training run uses (from a resolved TrainConfig)."""
    data = EnvConfig().to_dict()
    data.update(
        track=cfg.track[0] if len(cfg.track) == 1 else list(cfg.track),
        vision=cfg.vision,
        camera=cfg.camera,
        image_size=cfg.image_size,
        grayscale=cfg.grayscale,
        frame_stack=cfg.frame_stack,
        random_pool_size=cfg.track_pool or DEFAULT_TRACK_POOL,
    )
    if cfg.observation == "rich" and not cfg.vision:
        from kartsim.envs.config import RICH_RAY_ANGLES_DEG

        data.update(ray_observation="rich", ray_angles_deg=list(RICH_RAY_ANGLES_DEG))
    apply_env_options(data, cfg.env_options)
    return EnvConfig.from_dict(data)


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
    if not cfg.checkpoint_freq:
        return None
    count = (cfg.timesteps - done_steps) // max(cfg.checkpoint_freq, cfg.vector_envs)
    if count <= limit:
        return None
    return (f"Warning: --checkpoint-freq {cfg.checkpoint_freq:,} writes about {count:,} checkpoints in this run; "
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
        self.dir = Path(cfg.runs_dir) / cfg.save_name
        self.checkpoints = self.dir / "checkpoints"
        self.tb = self.dir / "tb"
        self.telemetry = self.dir / "telemetry_log.csv"
        self.config = self.dir / "config.json"
        self.final = self.dir / f"{cfg.save_name}_final.zip"
        self.model_copy = Path(cfg.models_dir) / f"{cfg.save_name}_final.zip"
        self.best = self.dir / f"{cfg.save_name}_best.zip"
        self.best_copy = Path(cfg.models_dir) / f"{cfg.save_name}_best.zip"
        self.interrupted = self.checkpoints / f"{cfg.save_name}_interrupted.zip"


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


def _merge_resume(cfg: TrainConfig, given: set[str], payload: dict[str, Any] | None, path: Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The TrainConfig and env config dict for a resumed run: the checkpoint's, with the flags the
    user gave (`given`) applied where they can change, and ConfigError where they cannot."""
    if payload is None:
        raise ModelFileError(
            f"{path} has no kartsim_config.json inside (not saved by kartsim train), so it cannot be resumed"
        )
    saved_train = dict(payload.get("train") or {})
    env_dict = dict(payload["env"])
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    base = TrainConfig.from_dict({k: v for k, v in saved_train.items() if k in names})
    # Flags that change the network or the observations cannot change on resume.
    # A resumed run has its weights already; the same --demos / --init-from as the checkpoint's (a job's
    # command line on `jobs resume`) is that run continuing, a different one is a mistake.
    started_from = sorted(k for k in given & {"demos", "init_from"} if getattr(cfg, k) != saved_train.get(k))
    if started_from:
        flag = "--" + started_from[0].replace("_", "-")
        raise ConfigError(f"{flag} starts a new run; {path} already has its weights (drop {flag}, or leave out --resume)")
    if "vision" in given and cfg.vision != base.vision:
        kind, how = ("vision", "train_ppo_vision.py or kartsim train --vision") if base.vision else ("rays", "train_ppo.py or kartsim train")
        raise ConfigError(f"{path} is a {kind} model; resume it with {how}")
    # A model saved before the option existed saw the basic observation.
    base.observation = env_dict.get("ray_observation", "basic") if not base.vision else "basic"
    fixed = {"features_dim": "--features-dim", "frame_stack": "--frame-stack", "observation": "--observation",
             "grayscale": "--grayscale", "camera": "--camera", "image_size": "--image-size"}
    for key, flag in fixed.items():
        if key in given and getattr(cfg, key) != getattr(base, key):
            saved = getattr(base, key)
            raise ConfigError(
                f"{flag} {getattr(cfg, key)} conflicts with the checkpoint ({key}={saved}); drop the flag to resume"
            )
    values = base.to_dict()
    for key in given - set(fixed):
        values[key] = getattr(cfg, key)
    if "vec_backend" in given and "vec_workers" not in given and cfg.vec_backend != base.vec_backend:
        values["vec_workers"] = None  # the saved worker count was for the other backend
    values["resume"] = str(path)
    values["force"] = cfg.force
    merged = TrainConfig.from_dict(values).resolved()
    if "track" in given:
        env_dict["track"] = merged.track[0] if len(merged.track) == 1 else list(merged.track)
    if "track_pool" in given:
        env_dict["random_pool_size"] = merged.track_pool
    if "env_options" in given:
        apply_env_options(env_dict, merged.env_options)
    return merged, env_dict


def train(
    cfg: TrainConfig,
    *,
    given: set[str] | None = None,
    echo: Callable[[str], None] = print,
    callbacks: list[Any] | None = None,
) -> TrainResult:
    """Run one training run. `given` names the TrainConfig fields the user set explicitly (used when
    resuming: the checkpoint's values win for the rest); `callbacks` are extra SB3 callbacks
    (benchmarks, tests). Raises KartsimError for bad input."""
    from kartsim.rl.modelio import read_kartsim_config

    given = set(given if given is not None else ())
    payload = None
    resume_path: Path | None = None
    if cfg.resume:
        resume_path = Path(cfg.resume)
        payload = read_kartsim_config(resume_path)  # also checks the file
        cfg, env_dict = _merge_resume(cfg, given, payload, resume_path)
    else:
        cfg = cfg.resolved()
        env_dict = None
    validate(cfg)
    from kartsim.rl.runfolder import RunLock

    with RunLock(Path(cfg.runs_dir), cfg.save_name):  # one trainer per run folder (until this process ends)
        return _train_locked(cfg, given, echo, callbacks, payload, resume_path, env_dict)


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


def _train_locked(cfg: TrainConfig, given: set[str], echo: Callable[[str], None], callbacks: list[Any] | None,  # noqa: C901 (over the limit: to split (issue 12))
                  payload: dict[str, Any] | None, resume_path: Path | None, env_dict: dict[str, Any] | None) -> TrainResult:
    """`train` once the run folder is locked."""
    from kartsim.rl.modelio import load_ppo, save_model
    from kartsim.rl.runfolder import record_config, signals_deferred, sigterm_as_interrupt, truncate_telemetry

    device = resolve_device(cfg.device)
    run = _Run(cfg)

    done_steps = int(payload.get("num_timesteps", 0)) if payload else 0
    if resume_path is not None and cfg.timesteps <= done_steps:
        raise ConfigError(
            f"the checkpoint has already trained {done_steps:,} steps; --timesteps is the new total, "
            f"so give more than {done_steps}"
        )

    # Refuse to overwrite (a resumed run continues in its own folder).
    # Resuming under the checkpoint's own run name continues that run folder (from a checkpoint or
    # from models/<name>_final.zip alike); a new --save-name starts a new folder.
    same_run = payload is not None and cfg.save_name == (payload.get("train") or {}).get("save_name")
    if not cfg.force and not same_run:
        for existing in (run.dir, run.model_copy, run.best_copy):
            if existing.exists():
                raise ConfigError(
                    f"{existing} already exists; pass --force to overwrite it, another --save-name, or --resume a checkpoint"
                )
    if same_run:
        _check_resume_keeps_the_final(run, done_steps, cfg.force)

    # The env (a bad track fails here, before anything is written).
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    env_cfg = EnvConfig.from_dict(env_dict) if env_dict is not None else env_config_for(cfg)
    workers = vec_workers_for(cfg)
    venv = build_vec_env(env_cfg, cfg.vector_envs, cfg.seed, telemetry_envs=list(range(cfg.telemetry_envs)) if cfg.telemetry_every > 0 else [],
                         normalize_reward_gamma=cfg.gamma if cfg.normalize_reward else None,
                         backend=cfg.vec_backend, n_workers=workers)
    try:
        env_cfg_dict = env_cfg.to_dict()
        train_cfg_dict = cfg.to_dict()

        if cfg.force and not same_run:
            if run.dir.exists():
                shutil.rmtree(run.dir)
            for copy in (run.model_copy, run.best_copy):
                if copy.exists():
                    copy.unlink()
        run.dir.mkdir(parents=True, exist_ok=True)
        config_doc = {"env": env_cfg_dict, "train": train_cfg_dict, "command": sys.argv, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        record_config(run.config, config_doc, resume_path if same_run else None)
        for stale in [*run.dir.glob(".saving-*.zip"), *run.checkpoints.glob(".saving-*.zip")]:
            stale.unlink()  # left by a killed save (this process holds the run's lock: no other is writing)
        if same_run and cfg.telemetry_every > 0:
            dropped = truncate_telemetry(run.telemetry, done_steps)  # logged after the checkpoint, trained again now
            if dropped:
                echo(f"Telemetry: dropped {dropped:,} row(s) logged after step {done_steps:,} (they are trained again)")
        linked = cfg.telemetry_every > 0 and cfg.telemetry_link and link_telemetry(run.telemetry, echo)

        provenance: dict[str, Any] = dict((payload or {}).get("provenance") or {})

        def save(model: Any, path: Path, evaluation: dict[str, Any] | None = None) -> Path:
            return save_model(model, path, env_cfg_dict, train_cfg_dict, provenance=provenance, evaluation=evaluation)

        threads = configure_threads(cfg, device)
        echo(f"Using device: {device}" + (f" ({threads} torch thread{'s' if threads > 1 else ''})" if device == "cpu" else ""))
        if workers:
            echo(f"Vector envs: {cfg.vector_envs} (subproc backend: {workers} worker process{'es' if workers > 1 else ''})")
        else:
            echo(f"Vector envs: {cfg.vector_envs} (batched backend: one process)")
        warning = checkpoint_count_warning(cfg, done_steps)
        if warning:
            echo(warning)
        tb_dir = str(run.tb) if cfg.tensorboard else None
        from kartsim.rl.policies import display_policy_name, policy_for, resolve_precision

        # The same PPO settings for a new model and a resumed one (a resumed run takes the flags given now).
        from stable_baselines3.common.utils import LinearSchedule

        lr: Any = cfg.learning_rate if cfg.lr_schedule == "constant" else LinearSchedule(cfg.learning_rate, 0.0, 1.0)
        hyper = dict(learning_rate=lr, n_steps=cfg.n_steps, batch_size=cfg.batch_size,
                     n_epochs=cfg.n_epochs, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, clip_range=cfg.clip_range,
                     ent_coef=cfg.ent_coef, tensorboard_log=tb_dir, verbose=cfg.verbose)
        if resume_path is not None:
            echo(f"Resuming model from {resume_path} ({done_steps:,} steps done)")
            model = load_ppo(resume_path, env=venv, device=device, **hyper)
            if isinstance(venv, VecNormalize):
                restore_reward_stats(venv, resume_path, echo, trust=cfg.trust_model)
            if cfg.seed is not None:
                model.set_random_seed(cfg.seed)
        else:
            echo(f"Creating new model with {display_policy_name(cfg.vision)}")
            precision = resolve_precision(cfg.precision, device)
            policy, policy_kwargs = policy_for(cfg.vision, cfg.features_dim, precision)
            if cfg.vision:
                from kartsim.rl.policies import bf16_supported

                slow = precision == "bf16" and not bf16_supported(device)
                echo(f"Vision CNN precision: {precision}" + (" (emulated: this hardware has no native bf16, so it is "
                                                             "slower than fp32; --precision auto picks fp32)" if slow else ""))
            policy_kwargs["log_std_init"] = cfg.log_std_init
            model = PPO(policy, venv, policy_kwargs=policy_kwargs, seed=cfg.seed, device=device, **hyper)
            from kartsim.rl.pretrain import prepare_policy

            provenance.update(prepare_policy(model, cfg, env_cfg, given=given, echo=echo))
            if provenance:
                record_config(run.config, dict(config_doc, provenance=provenance), None)

        from stable_baselines3.common.callbacks import CallbackList, ProgressBarCallback

        from kartsim.rl.callbacks import (DeviceUsageCallback, KartCheckpointCallback, RacingMetricsCallback,
                                          TelemetryCSVCallback)

        all_callbacks: list[Any] = [RacingMetricsCallback(), DeviceUsageCallback()]
        checkpointer = None
        if cfg.checkpoint_freq > 0:
            checkpointer = KartCheckpointCallback(cfg.checkpoint_freq, run.checkpoints, cfg.save_name, save)
            all_callbacks.append(checkpointer)
        telemetry_cb = None
        if cfg.telemetry_every > 0:
            telemetry_cb = TelemetryCSVCallback(run.telemetry, every=cfg.telemetry_every, append=resume_path is not None,
                                                n_envs=cfg.telemetry_envs)
            all_callbacks.append(telemetry_cb)
        remaining = cfg.timesteps - done_steps
        # No evaluation in a run shorter than one evaluation period (tests, smoke runs).
        evaluator = _evaluator(cfg, env_cfg, run, save, echo) if 0 < cfg.eval_freq <= remaining else None
        if evaluator is not None:
            all_callbacks.append(evaluator)
        all_callbacks.extend(callbacks or [])
        if os.environ.get("KARTSIM_FAULT"):
            from kartsim.rl.callbacks import FaultPointsCallback

            all_callbacks.append(FaultPointsCallback())
        # SB3's own progress bar, held here so that Ctrl-C can close it before the messages below.
        progress = ProgressBarCallback() if cfg.progress_bar else None
        if progress is not None:
            all_callbacks.append(progress)

        on = "GPU" if device.startswith("cuda") else "CPU"
        echo(f"Starting training for {remaining:,} timesteps on {on}...")
        if cfg.vision and on == "GPU":
            echo("This WILL use GPU efficiently with CNN policy!")
        if cfg.tensorboard:
            echo(f"TensorBoard logs: {run.tb}  (view with: tensorboard --logdir {run.tb})")
        sys.stdout.flush()
    except BaseException:  # stop the env's worker processes (subproc) on any failure before learning
        venv.close()
        raise

    started = time.perf_counter()
    steps_before = model.num_timesteps
    result = TrainResult(final_model=None, run_dir=run.dir, num_timesteps=model.num_timesteps)
    try:
        with sigterm_as_interrupt():
            model.learn(
                total_timesteps=remaining,
                callback=CallbackList(all_callbacks),
                reset_num_timesteps=resume_path is None,
                progress_bar=False,  # `progress` above
                tb_log_name="PPO",
            )
    except KeyboardInterrupt:
        if progress is not None and getattr(progress, "pbar", None) is not None:
            progress.pbar.close()
        with signals_deferred():  # a second Ctrl-C / SIGTERM must not break the save
            result.interrupted_model = save(model, run.interrupted)
        result.interrupted = True
    finally:
        if telemetry_cb is not None and telemetry_cb.writer is not None:
            telemetry_cb.writer.close()
        venv.close()  # and its worker processes (subproc), also on Ctrl-C
    result.seconds = time.perf_counter() - started
    result.num_timesteps = model.num_timesteps
    trained = model.num_timesteps - steps_before
    rate = trained / result.seconds if result.seconds > 0 else 0.0
    if checkpointer is not None:
        result.checkpoints = list(checkpointer.saved)

    if result.interrupted:
        echo("")
        echo(f"Training interrupted at {model.num_timesteps:,} steps; saved {result.interrupted_model}")
        echo(f"Resume with: kartsim train --resume {result.interrupted_model} --timesteps {cfg.timesteps}")
        return result

    with signals_deferred() as arrived:  # Ctrl-C during the final save must not lose the run
        final = save(model, run.final)
        how = _link_atomically(final, run.model_copy)
    if arrived:
        echo("Interrupted during the final save: waited for it to finish")
    result.final_model = run.model_copy
    echo(f"Trained {trained:,} steps in {result.seconds:.0f} s ({rate:,.0f} steps/s); total {model.num_timesteps:,} steps")
    echo(f"Saved final model: {run.model_copy} ({'the same file as' if how == 'link' else 'a copy of'} {final})")
    if cfg.telemetry_every > 0:
        echo(f"Telemetry log: {run.telemetry}" + (f" (./{TELEMETRY_LINK} links to it)" if linked else ""))
    if evaluator is not None:
        _report_evaluation(evaluator, run, result, echo)
    echo(f"Watch it drive: python play_ppo.py --model {run.model_copy}")
    return result


def eval_tracks_for(cfg: TrainConfig, env_cfg: Any) -> list[str]:
    """The tracks a run evaluates on: `cfg.eval_tracks`, else the training tracks (at most
    `MAX_EVAL_TRACKS`, spread evenly over a pool)."""
    from kartsim.envs.tracks import source_path, track_paths, track_sources

    if cfg.eval_tracks:
        return track_paths(list(cfg.eval_tracks))
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
    if cfg.resume and run.best.exists():
        try:
            best_row = (read_kartsim_config(run.best) or {}).get("evaluation")
        except ModelFileError:
            best_row = None  # a damaged best model is replaced by the next evaluation

    def save_best(model: Any, row: dict[str, Any]) -> Path:
        _link_atomically(save(model, run.best, evaluation=row), run.best_copy)
        return run.best_copy

    def report(row: dict[str, Any]) -> None:
        echo(f"  evaluation at {row['steps']:,} steps ({row['wall_s']:.0f} s): {describe_eval(row)}")

    evaluator = LapEvalCallback(env_cfg, cfg.eval_freq, tracks=eval_tracks_for(cfg, env_cfg), episodes=cfg.eval_episodes,
                                max_laps=EVAL_LAPS, evaluate_final=True,
                                stop_at_ratio=cfg.stop_at_ratio, save_best=save_best, best_row=best_row,
                                report=None if cfg.progress_bar else report)
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
