"""`TrainConfig`: every knob of a training run, one dataclass per concern.

    TrainConfig
      task      TaskConfig      what the policy learns: rays or vision, tracks, observation, camera
      ppo       PPOConfig       the PPO update: learning rate, rollout, minibatch, epochs, discount
      policy    PolicyConfig    the network and its arithmetic: action noise, CNN features, threads
      pretrain  PretrainConfig  before PPO: demonstrations (behaviour cloning, DAgger), initial weights
      eval      EvalConfig      the periodic evaluation that keeps the best model
      run       RunConfig       length, names, folders, device, vector envs, checkpoints, logs

Each field's docstring is its documentation and its ``kartsim train --help`` text (the flags are
generated from these fields by `kartsim.config_cli`). ``None`` means "the default for this policy
kind" (`MODE_DEFAULTS`); `TrainConfig.resolved` fills those in. `validate` checks a resolved config in
one place: field types, NaN / inf, `LIMITS` and `CHOICES` (`kartsim.validation.check_config`), the
EnvConfig the run will use (its own checks), then the rules between fields.

Saved models hold ``TrainConfig.to_dict()`` (nested by part). Models saved before the split hold a
flat dict (``{"gamma": 0.99, "vector_envs": 64, ...}``): `TrainConfig.from_dict` reads both, and
dotted keys (``"ppo.gamma": 0.995``) as overrides.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kartsim.config import coerce_nested, from_dict
from kartsim.envs.config import CAMERAS, RAY_OBSERVATIONS, VEC_BACKENDS, EnvConfig, apply_env_options
from kartsim.errors import ConfigError
from kartsim.rl.transfer import INIT_PARTS
from kartsim.validation import check_config

# Hyper-parameters that default per policy kind when left as None (keys: field names, whatever part).
MODE_DEFAULTS: dict[bool, dict[str, Any]] = {
    # rays (MLP): many karts, big batches, few epochs. Measured on circuit.png (5 seeds): first
    # deterministic lap at 98k-393k steps (median 131k) at 7-10k steps/s on 2 busy cores, against
    # 850k steps at 460 steps/s with 8 envs x 512 steps, batch 256, 10 epochs, lr 3e-4, log std 0.
    # Demonstrations: DAgger with 4 rounds clones ai:hard to 1.007 x on circuit.png in 8 of 10 seeds
    # (2 rounds: 2 of 3; benchmarks/RESULTS.md).
    False: {"vector_envs": 64, "learning_rate": 1e-3, "n_steps": 128, "batch_size": 2048, "n_epochs": 5,
            "log_std_init": -0.5, "demos_mode": "dagger", "dagger_rounds": 4},
    # vision (CNN): the same shape as rays (many karts, large batches: the CNN's throughput on a CPU
    # grows with the batch). Epochs chosen by wall-clock time to the first deterministic lap on
    # circuit.png (3 seeds each, benchmarks/RESULTS.md): 4 epochs 139-429 s (median 271), 3 epochs
    # 71-178 s (median 106), 2 epochs 156-203 s (median 156).
    # Demonstrations: cloning ai:hard's laps alone (bc) laps at 1.007-1.010 x at 0 PPO steps in 2 of 3
    # seeds after ~2 minutes; 2 DAgger rounds in 3 of 3 after ~8 minutes (benchmarks/RESULTS.md).
    True: {"vector_envs": 16, "learning_rate": 3e-4, "n_steps": 128, "batch_size": 512, "n_epochs": 3,
           "log_std_init": -0.5, "demos_mode": "dagger", "dagger_rounds": 2},
}

# Vision with fewer karts than the default 16 (the guide's ``--vector-envs 4``): a rollout of 4 x 128
# steps holds a quarter of the samples, so the minibatch is a quarter of the rollout (4 minibatches an
# epoch, as 512 of 16 x 128), with twice the epochs and less action noise. Measured on circuit.png
# with 4 karts, 100k steps (benchmarks/RESULTS.md): 16-kart settings (batch 512, 3 epochs) never
# lapped (best 505 m); batch 128 alone 505 m; these lapped at the first evaluation (20k steps).
FEW_KARTS_VISION: dict[str, Any] = {"n_epochs": 6, "log_std_init": -1.0}
VISION_MINIBATCHES = 4

# Rays PPO that fine-tunes a pre-trained policy (--demos / --init-from): the rays defaults (lr 1e-3,
# log std -0.5) took a 1.007 x clone of ai:hard on circuit.png to 1.24 x within 400k steps; lr 3e-4
# and log std -1.5 to 1.06-1.08 x; these keep it within 1.005-1.02 x over 600k steps (3 seeds; one
# evaluation in 18 without a lap; benchmarks/RESULTS.md). The run's best model is the clone itself
# unless PPO beats it.
PRETRAINED_RAYS: dict[str, Any] = {"learning_rate": 1e-4, "log_std_init": -3.0}
MIN_EVAL_FREQ = 20_000
DEFAULT_TRACK_POOL = 8
DEFAULT_TIMESTEPS = 1_000_000
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def cli(**options: Any) -> dict[str, Any]:
    """A field's ``metadata`` for its generated flag: ``flag`` (another name than ``--field-name``),
    ``metavar``, ``parse`` (a KEY=VALUE parser for a dict field, repeatable)."""
    return {"cli": options}


@dataclass
class TaskConfig:
    """task: what the policy learns to drive (the camera fields are EnvConfig's: its defaults and
    checks; ``env_options`` sets any other EnvConfig field)"""

    DOCS_FROM: ClassVar[type] = EnvConfig  # fields without a docstring here take EnvConfig's
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {k: EnvConfig.LIMITS[k] for k in ("image_size", "frame_stack")}
    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {"observation": RAY_OBSERVATIONS, "camera": CAMERAS}

    vision: bool = False
    """Train on camera images + telemetry (CNN, ``kartsim/KartVision-v0``) instead of rays (MLP)."""
    track: list[str] = field(default_factory=lambda: ["circuit.png"], metadata=cli(flag="--track-name", metavar="TRACK"))
    """Track(s): bundled names, PNG paths, folders of PNGs, ``random`` (a pool of generated tracks) or
    ``bundled`` (all bundled tracks). Several tracks are shared out among the vector envs."""
    track_pool: int | None = field(default=None, metadata=cli(metavar="N"))
    """With ``--track-name random``: how many generated tracks the pool holds (every style, 7-14 m
    wide; default 8). A pool over 32 tracks is streamed: 32 (or one per vector env) in memory at a time."""
    observation: str | None = None
    """Rays only: ``rich`` (the default: 15 rays plus slip, yaw rate, steering, lateral offset and
    the curvature up to 80 m ahead, 26 values: at the same step count it cuts the gap to the
    reference lap by about two thirds, benchmarks/RESULTS.md) or ``basic`` (the guide's 10 values of
    ``kartsim/Kart-v0``)."""
    camera: str = EnvConfig.camera
    image_size: int = EnvConfig.image_size
    grayscale: bool = EnvConfig.grayscale
    frame_stack: int = EnvConfig.frame_stack
    env_options: dict[str, Any] = field(default_factory=dict, metadata=cli(flag="--env-option", metavar="KEY=VALUE"))
    """Set an EnvConfig field, e.g. ``max_episode_steps=3000`` or ``reward.progress=2`` (repeatable)."""


@dataclass
class PPOConfig:
    """ppo: the PPO update"""

    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {"lr_schedule": ("constant", "linear")}

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
    normalize_reward: bool = True
    """Scale rewards by a running estimate of the return's spread (SB3 ``VecNormalize``, rewards
    only): the value function then learns O(1) targets whatever the reward weights."""


@dataclass
class PolicyConfig:
    """policy: the network and its arithmetic"""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"torch_threads": (1, 512), "log_std_init": (-5.0, 2.0),
                                                        "features_dim": (1, 8192)}
    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {"precision": ("auto", "bf16", "fp32")}

    log_std_init: float | None = None
    """Initial log standard deviation of the Gaussian action noise (0: std 1 on [-1, 1] actions;
    -0.5: std 0.6, enough to find braking points without spinning all the time)."""
    features_dim: int = 512
    """Vision only: size of the fused CNN + telemetry feature vector (512 or 1024 are typical)."""
    precision: str = "auto"
    """Vision CNN arithmetic: ``bf16`` (autocast), ``fp32``, or ``auto`` = bf16 where the CPU/GPU
    computes it natively (AVX-512 BF16 / AMX, or a bf16-capable GPU), else fp32."""
    torch_threads: int | None = None
    """Torch CPU threads (default: the idle cores for vision, 1 for the rays MLP)."""


@dataclass
class PretrainConfig:
    """pretrain: demonstrations and transfer, before PPO (new runs)"""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"demos_noise": (0.0, 1.0)}  # a share of the action range
    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {"demos_mode": ("bc", "dagger"), "init_parts": INIT_PARTS}

    demos: str | None = field(default=None, metadata=cli(metavar="SOURCE"))
    """Pre-train the policy on demonstrations before PPO (behaviour cloning): ``ai:hard|medium|easy``
    (the AI drives in this run's env, recorded with the policy's own observations), a telemetry CSV
    (``kartsim drive``) or a folder of CSV / ``kartsim demos record`` files, a demos ``.npz``, or a
    model zip to distil (`kartsim.rl.demos`)."""
    demos_mode: str | None = None
    """``bc``: clone the demonstrations; ``dagger``: then ``dagger_rounds`` rounds in which the policy
    drives and the teacher (``ai:``, a model, an npz recorded from ``ai:``) labels the states it
    visits (which suits each observation was measured: benchmarks/RESULTS.md); recorded driving
    (human laps) has no teacher and falls back to bc."""
    demos_laps: int = 12
    """Laps the teacher drives when ``demos`` is ``ai:LEVEL`` or a model zip."""
    demos_noise: float = 0.1
    """While an ``ai:`` / model teacher records: standard deviation of the persistent noise added to
    the actions it applies (its clean actions are the labels), so the demonstrations include
    recoveries from the errors a clone makes (DART). 0: the teacher's own line only."""
    bc_epochs: int = 15
    """Behaviour cloning passes over the demonstrations (and over the aggregate in each DAgger round)."""
    dagger_rounds: int | None = None
    """DAgger rounds (``demos_mode`` dagger; fewer for vision, whose cloning takes longer per sample)."""
    dagger_steps: int = 8000
    """States the policy visits (all karts together) in each DAgger round."""
    value_warmup: int = 4
    """PPO updates at the start of a new run whose policy was pre-trained (``demos`` or
    ``init_from``) in which only the value function learns, so that the untrained critic's first
    advantages do not undo the pre-trained driving (0: none)."""
    init_from: str | None = field(default=None, metadata=cli(metavar="ZIP"))
    """Start from this model zip's weights (`kartsim.rl.transfer`; e.g. fine-tune a circuit model on
    another track)."""
    init_parts: str = "all"
    """Which weights ``init_from`` copies: ``cnn`` (vision features extractor), ``policy`` (all but the
    value function) or ``all``."""


@dataclass
class EvalConfig:
    """eval: the periodic evaluation"""

    eval_freq: int | None = field(default=None, metadata=cli(metavar="N"))
    """Evaluate the deterministic policy from the start line every this many env steps (SB3's
    ``EvalCallback`` convention) and keep the best model, by completion then lap time against the
    reference, as ``runs/<name>/<name>_best.zip`` and ``models/<name>_best.zip`` (0: off; default: a
    tenth of --timesteps, at least 20,000)."""
    eval_episodes: int = 1
    """Episodes per evaluation track (each at most 2 laps: a standing and a flying one)."""
    eval_tracks: list[str] | None = field(default=None, metadata=cli(metavar="TRACK"))
    """Evaluation tracks (default: the training tracks; of a pool, at most 4 spread over it)."""
    stop_at_ratio: float | None = field(default=None, metadata=cli(metavar="R"))
    """Stop training once an evaluation laps every evaluation track within this × the reference lap
    (e.g. 1.05)."""


@dataclass
class RunConfig:
    """run: length, names, folders, device, vector envs, checkpoints and logs"""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"vector_envs": (1, 1024)}
    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {"vec_backend": VEC_BACKENDS, "verbose": (0, 1, 2)}

    timesteps: int | None = None
    """Total env steps the model will have trained when the run ends (all vector envs together).
    When resuming this is the new total, not an increment. Default 1,000,000 (or the resumed run's)."""
    save_name: str | None = None
    """Run name: files go to ``<runs_dir>/<save_name>/`` and ``<models_dir>/<save_name>_final.zip``
    (default ``kart_rays`` / ``kart_vision``, or the resumed run's)."""
    vector_envs: int | None = None
    """Karts simulated side by side (in one batched env, or shared out among ``vec_workers``)."""
    vec_backend: str = "batched"
    """How the vector envs are stepped: ``batched`` (all karts as arrays in this process) or
    ``subproc`` (contiguous blocks of karts, each a batched env in a worker process, observations
    in shared memory: for machines with more cores than one batched env can fill)."""
    vec_workers: int | None = field(default=None, metadata=cli(metavar="N"))
    """``subproc`` only: worker processes (default: one per usable core, at most one per vector env,
    worked out when the run starts, so a resumed run fits the machine it runs on)."""
    checkpoint_freq: int = 100_000
    """Save a checkpoint every this many env steps (0: only the final model)."""
    tensorboard: bool = False
    """Write TensorBoard logs to ``<run>/tb/`` (SB3 metrics + racing/*)."""
    telemetry_every: int = 1
    """Log telemetry to ``<run>/telemetry_log.csv`` every this many steps (0: off)."""
    telemetry_envs: int = field(default=1, metadata=cli(metavar="N"))
    """Log the telemetry of the first this many vector envs (the CSV's ``env`` column says which)."""
    telemetry_link: bool = True
    """Point ``./telemetry_log.csv`` (a symlink in the current folder) at this run's telemetry, so
    ``pd.read_csv("telemetry_log.csv")`` reads the latest run where training was started. A real
    file of that name is left alone. Jobs turn it off."""
    seed: int | None = None
    """Seed for the model and the envs (default: random)."""
    device: str = "auto"
    """``auto`` (cuda when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    resume: str | None = field(default=None, metadata=cli(metavar="ZIP"))
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
    progress_bar: bool = field(default=True, metadata=cli(flag="--no-progress"))
    """Show SB3's progress bar (tqdm + rich) with ETA."""
    verbose: int = 0
    """SB3 verbosity (1 prints the metrics table after every rollout)."""


@dataclass
class TrainConfig:
    """Everything a training run needs, by concern (the module docstring draws the parts)."""

    task: TaskConfig = field(default_factory=TaskConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        coerce_nested(self)  # parts given as dicts

    @property
    def vision(self) -> bool:
        """The policy kind (``task.vision``): most of the defaults depend on it."""
        return bool(self.task.vision)

    @property
    def pretrained(self) -> bool:
        """Whether a run starts PPO from a pre-trained policy (``--demos`` / ``--init-from``, new runs)."""
        return not self.run.resume and bool(self.pretrain.demos or self.pretrain.init_from)

    def resolved(self) -> "TrainConfig":
        """A copy with every None default filled in for this policy kind."""
        values = self.to_dict()
        task, ppo, run, evaluation = values["task"], values["ppo"], values["run"], values["eval"]
        batch_given = ppo["batch_size"] is not None
        defaults = dict(MODE_DEFAULTS[self.vision])
        few = self.vision and run["vector_envs"] is not None and run["vector_envs"] < defaults["vector_envs"]
        if few:
            defaults.update(FEW_KARTS_VISION)
        if not self.vision and self.pretrained:
            defaults.update(PRETRAINED_RAYS)
        for name, default in defaults.items():
            part = values[PART_OF[name]]
            if part[name] is None:
                part[name] = default
        if few and not batch_given:
            ppo["batch_size"] = max(2, int(ppo["n_steps"]) * int(run["vector_envs"]) // VISION_MINIBATCHES)
        if not batch_given:
            # The default minibatch must fit the rollout the user asked for (e.g. --vector-envs 2):
            # the largest divisor of n_steps x vector_envs not above the default.
            rollout = max(2, int(ppo["n_steps"]) * int(run["vector_envs"]))
            batch = min(int(ppo["batch_size"]), rollout)
            while batch > 2 and rollout % batch:
                batch -= 1
            ppo["batch_size"] = batch
        if run["timesteps"] is None:
            run["timesteps"] = DEFAULT_TIMESTEPS
        if task["observation"] is None:
            task["observation"] = "basic" if self.vision else "rich"
        if evaluation["eval_freq"] is None:
            evaluation["eval_freq"] = max(MIN_EVAL_FREQ, int(run["timesteps"]) // 10)
        if run["save_name"] is None:
            run["save_name"] = "kart_vision" if self.vision else "kart_rays"
        return TrainConfig.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def get(self, path: str) -> Any:
        """The value at a dotted path (``ppo.gamma``) or a field name (``gamma``)."""
        part, _, name = dotted(path).partition(".")
        return getattr(getattr(self, part), name)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """From `to_dict`'s output, dotted overrides (``ppo.gamma``), or the flat dict of the layout
        before the parts (``{"gamma": 0.99}``, models saved by older kartsim), or a mix; unknown keys
        raise ConfigError naming them."""
        if not isinstance(data, dict):
            raise ConfigError(f"a TrainConfig must be a dict of its parts, got {type(data).__name__}")
        return from_dict(cls, {(dotted(k) if k in PART_OF else k): v for k, v in data.items()})


PARTS: dict[str, type] = {f.name: typing.get_type_hints(TrainConfig)[f.name] for f in dataclasses.fields(TrainConfig)}
"""Part name -> its dataclass, in the order of `TrainConfig`."""
PART_OF: dict[str, str] = {f.name: part for part, cls in PARTS.items() for f in dataclasses.fields(cls)}
"""Field name -> the part that holds it (field names are unique over the parts: the flat names of the
layout before the parts, still accepted by `TrainConfig.from_dict`, ``--set`` and `TrainConfig.get`)."""


def dotted(name: str) -> str:
    """``gamma`` -> ``ppo.gamma``; a dotted path stays; ConfigError for an unknown name."""
    if "." in name:
        return name
    if name not in PART_OF:
        raise ConfigError(f"unknown TrainConfig field {name!r}")
    return f"{PART_OF[name]}.{name}"


def flat_train_dict(data: Any) -> dict[str, Any]:
    """A saved train config of either layout as ``{field name: value}`` (unknown keys kept): for the
    readers of saved models and run folders that want one field (``features_dim``, ``timesteps``)."""
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in PARTS and isinstance(value, dict):
            out.update(value)
        elif key not in PARTS:
            out[key] = value
    return out


# ------------------------------------------------------------------------------------- validation

def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError (one line naming the flag) for any value that cannot work. `cfg` is resolved."""
    validate_values(cfg)
    _validate_model_and_logs(cfg)
    _validate_evaluation(cfg.eval, cfg.task)


def validate_values(cfg: TrainConfig) -> None:
    """The checks of `validate` that need no file and no device (so a job's config can be checked on
    a machine that holds neither its staged tracks and inputs nor its GPU). `cfg` is resolved."""
    for part in PARTS:
        check_config(getattr(cfg, part), flags=True)  # types, NaN / inf, LIMITS, CHOICES
    env_config_for(cfg)  # the EnvConfig checks: camera, image size, frame stack, --env-option keys and values
    _validate_run(cfg.run)
    _validate_task(cfg)
    _validate_ppo(cfg.ppo, cfg.run)


def _validate_evaluation(ev: EvalConfig, task: TaskConfig) -> None:
    """The periodic evaluation and the generated track pool."""
    if ev.eval_freq < 0:
        raise ConfigError(f"--eval-freq must be >= 0 (0 = no evaluation), not {ev.eval_freq}")
    if ev.eval_episodes < 1:
        raise ConfigError(f"--eval-episodes must be >= 1, not {ev.eval_episodes}")
    if ev.eval_tracks:
        from kartsim.envs.tracks import track_sources
        from kartsim.sim.track import resolve_track_path

        for source in track_sources(list(ev.eval_tracks)):
            if isinstance(source, str):
                resolve_track_path(source)  # TrackError now, not at the first evaluation hours in
    if ev.stop_at_ratio is not None:
        if not 0 < ev.stop_at_ratio < 10:
            raise ConfigError(f"--stop-at-ratio must be a ratio to the reference lap such as 1.10, not {ev.stop_at_ratio}")
        if ev.eval_freq == 0:
            raise ConfigError("--stop-at-ratio needs the evaluation; drop --eval-freq 0")
    if task.track_pool is not None:
        if "random" not in task.track:
            raise ConfigError("--track-pool only applies to --track-name random; add 'random' to --track-name")
        if not 1 <= task.track_pool <= 10_000:
            raise ConfigError(f"--track-pool must be between 1 and 10000 tracks, not {task.track_pool}")


def _validate_run(run: RunConfig) -> None:
    """Length, name and the vector envs."""
    if run.timesteps is None or run.timesteps <= 0:
        raise ConfigError(f"--timesteps must be a positive number of env steps, not {run.timesteps}")
    if not _NAME_RE.match(run.save_name or ""):
        raise ConfigError(
            f"--save-name {run.save_name!r} must be a plain file name (letters, digits, '.', '_', '-'; no folders)"
        )
    if run.vec_workers is not None:
        if run.vec_backend != "subproc":
            raise ConfigError("--vec-workers only applies to --vec-backend subproc; add that flag or drop --vec-workers")
        if run.vec_workers < 1:
            raise ConfigError(f"--vec-workers must be >= 1, not {run.vec_workers}")
        if run.vec_workers > run.vector_envs:
            raise ConfigError(
                f"--vec-workers {run.vec_workers} is more than --vector-envs {run.vector_envs} (each worker steps "
                "at least one kart); lower --vec-workers or raise --vector-envs"
            )


def _validate_task(cfg: TrainConfig) -> None:
    """The observation against the policy kind."""
    if cfg.task.observation == "rich" and cfg.vision:
        raise ConfigError("--observation rich is a rays observation; vision agents see the camera and telemetry")
    if cfg.vision and cfg.task.image_size < 36:
        raise ConfigError(f"--image-size {cfg.task.image_size} is too small for the CNN (8x8/4, 4x4/2, 3x3/1); use >= 36")
    if not cfg.task.track:
        raise ConfigError("--track-name needs at least one track")


def _validate_ppo(ppo: PPOConfig, run: RunConfig) -> None:
    """The PPO hyper-parameters."""
    if not 0 < ppo.learning_rate < 1:
        raise ConfigError(f"--learning-rate must be in (0, 1), not {ppo.learning_rate}")
    if ppo.n_steps < 1:
        raise ConfigError(f"--n-steps must be >= 1, not {ppo.n_steps}")
    if ppo.n_epochs < 1:
        raise ConfigError(f"--n-epochs must be >= 1, not {ppo.n_epochs}")
    rollout = ppo.n_steps * run.vector_envs
    if ppo.batch_size < 2:
        raise ConfigError(f"--batch-size must be >= 2, not {ppo.batch_size}")
    if ppo.batch_size > rollout:
        raise ConfigError(
            f"--batch-size {ppo.batch_size} is larger than a rollout (n_steps {ppo.n_steps} x vector envs "
            f"{run.vector_envs} = {rollout}); lower it or raise --n-steps"
        )
    if rollout % ppo.batch_size:
        divisors = [d for d in (32, 64, 128, 256, 512, 1024, 2048) if rollout % d == 0 and d <= rollout]
        hint = f"; e.g. {', '.join(map(str, divisors[-3:]))}" if divisors else ""
        raise ConfigError(
            f"--batch-size {ppo.batch_size} does not divide the rollout (n_steps {ppo.n_steps} x vector envs "
            f"{run.vector_envs} = {rollout}){hint}"
        )
    if not 0 < ppo.gamma <= 1:
        raise ConfigError(f"gamma must be in (0, 1], not {ppo.gamma}")
    if not 0 <= ppo.gae_lambda <= 1:
        raise ConfigError(f"gae_lambda must be in [0, 1], not {ppo.gae_lambda}")
    if ppo.clip_range <= 0:
        raise ConfigError(f"clip_range must be > 0, not {ppo.clip_range}")
    if ppo.ent_coef < 0:
        raise ConfigError(f"ent_coef must be >= 0, not {ppo.ent_coef}")


def _validate_model_and_logs(cfg: TrainConfig) -> None:
    """Precision, the pre-training options, checkpoints, telemetry, seed, device."""
    from kartsim.rl.pretrain import validate_pretrain

    run = cfg.run
    if cfg.policy.precision != "auto" and not cfg.vision:
        raise ConfigError(f"--precision {cfg.policy.precision} only applies to the vision CNN; add --vision or drop --precision")
    validate_pretrain(cfg.pretrain, resume=run.resume)
    if run.checkpoint_freq < 0:
        raise ConfigError(f"--checkpoint-freq must be >= 0 (0 = no checkpoints), not {run.checkpoint_freq}")
    if run.telemetry_every < 0:
        raise ConfigError(f"--telemetry-every must be >= 0 (0 = off), not {run.telemetry_every}")
    if not 1 <= run.telemetry_envs <= run.vector_envs:
        raise ConfigError(f"--telemetry-envs must be between 1 and --vector-envs ({run.vector_envs}), "
                          f"not {run.telemetry_envs}")
    if run.seed is not None and not 0 <= run.seed < 2**32:
        raise ConfigError(f"--seed must be between 0 and 2**32 - 1, not {run.seed}")
    resolve_device(run.device)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", device):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, not {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("CUDA is not available on this machine; use --device cpu or auto")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s), "
                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def env_config_for(cfg: TrainConfig) -> EnvConfig:
    """The EnvConfig a training run uses (from a resolved TrainConfig)."""
    task = cfg.task
    data = EnvConfig().to_dict()
    data.update(
        track=task.track[0] if len(task.track) == 1 else list(task.track),
        vision=task.vision,
        camera=task.camera,
        image_size=task.image_size,
        grayscale=task.grayscale,
        frame_stack=task.frame_stack,
        random_pool_size=task.track_pool or DEFAULT_TRACK_POOL,
    )
    if task.observation == "rich" and not task.vision:
        from kartsim.envs.config import RICH_RAY_ANGLES_DEG

        data.update(ray_observation="rich", ray_angles_deg=list(RICH_RAY_ANGLES_DEG))
    apply_env_options(data, task.env_options)
    return EnvConfig.from_dict(data)


__all__ = ["TrainConfig", "TaskConfig", "PPOConfig", "PolicyConfig", "PretrainConfig", "EvalConfig", "RunConfig",
           "MODE_DEFAULTS", "FEW_KARTS_VISION", "PRETRAINED_RAYS", "PARTS", "PART_OF", "dotted", "flat_train_dict", "validate", "env_config_for",
           "resolve_device"]
