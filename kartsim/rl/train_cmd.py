"""``kartsim train``: train a PPO driver (rays/MLP by default, ``--vision`` for camera + telemetry).

``python train_ppo.py ...`` and ``python train_ppo_vision.py ...`` are this command with the
policy kind fixed. Every flag maps to one `kartsim.rl.train.TrainConfig` field. The command lives
beside the trainer because the jobs package checks and runs the same flags (``kartsim jobs submit``);
:mod:`kartsim.cli` registers it with the other sub-commands.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from kartsim.errors import ConfigError

# flag dest -> TrainConfig field (dests not listed map to the field of the same name)
_FIELD = {"track_name": "track"}


def _int(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _env_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def add_train_arguments(parser: argparse.ArgumentParser, *, vision_flag: bool = True, eval_flags: bool = True) -> None:
    """The training flags (shared by `kartsim train` and the root scripts; `kartsim sweep` has its
    own evaluation flags, so it leaves out these with `eval_flags=False`)."""
    if vision_flag:
        parser.add_argument("--vision", action="store_true", default=None,
                            help="train on camera images + telemetry with the CNN policy (default: rays + MLP)")
    g = parser.add_argument_group("run")
    g.add_argument("--timesteps", type=_int, help="total env steps to train (default 1,000,000; on --resume the new total)")
    g.add_argument("--save-name", help="run name: runs/<name>/ and models/<name>_final.zip (default kart_rays / kart_vision)")
    g.add_argument("--vector-envs", type=_int, help="karts simulated side by side (default 64 rays, 16 vision)")
    g.add_argument("--vec-backend", choices=["batched", "subproc"],
                   help="batched (default: all karts in this process) or subproc (blocks of karts in worker processes)")
    g.add_argument("--vec-workers", type=_int, metavar="N",
                   help="worker processes with --vec-backend subproc (default: one per usable core, at most --vector-envs)")
    g.add_argument("--track-name", nargs="+", metavar="TRACK",
                   help="track(s): bundled name, PNG path, several, a folder, 'random' (a pool of generated tracks) "
                   "or 'bundled' (all bundled tracks) (default circuit.png)")
    g.add_argument("--track-pool", type=_int, metavar="N",
                   help="with --track-name random: generated tracks in the pool (default 8; every style, 7-14 m wide)")
    g.add_argument("--checkpoint-freq", type=_int, help="checkpoint every N env steps (default 100000; 0 = off)")
    if eval_flags:
        g.add_argument("--eval-freq", type=_int, metavar="N",
                       help="evaluate the deterministic policy every N env steps and keep the best as runs/<name>/<name>_best.zip "
                       "and models/<name>_best.zip (default: a tenth of --timesteps, at least 20000; 0 = off)")
        g.add_argument("--eval-episodes", type=_int, help="episodes per evaluation track (default 1)")
        g.add_argument("--eval-tracks", nargs="+", metavar="TRACK",
                       help="tracks of the evaluation (default: the training tracks, at most 4 of a pool)")
        g.add_argument("--stop-at-ratio", type=_float, metavar="R",
                       help="stop once an evaluation laps every evaluation track within R x the reference lap (e.g. 1.05)")
    g.add_argument("--tensorboard", action="store_true", default=None, help="write TensorBoard logs to runs/<name>/tb/")
    g.add_argument("--telemetry-every", type=_int, help="log telemetry every N steps (default 1; 0 = off)")
    g.add_argument("--telemetry-envs", type=_int, metavar="N",
                   help="log the telemetry of the first N vector envs, the CSV's env column says which (default 1)")
    g.add_argument("--no-telemetry-link", dest="telemetry_link", action="store_false", default=None,
                   help="do not point ./telemetry_log.csv at this run's telemetry (default: a symlink, "
                        "never replacing a real file)")
    g.add_argument("--seed", type=_int, help="random seed (default: random)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto (default: cuda when available), cpu or cuda")
    g.add_argument("--resume", metavar="ZIP", help="continue from a checkpoint or model saved by kartsim train")
    g.add_argument("--force", action="store_true", default=None, help="overwrite an existing run / model of the same name")
    g.add_argument("--trust-model", action="store_true", default=None,
                   help="also read a resumed model's pickled members (older kartsim's vecnormalize.pkl): runs code from the file")
    g.add_argument("--runs-dir", help="folder of run folders (default runs)")
    g.add_argument("--models-dir", help="folder for final models (default models)")
    g.add_argument("--no-progress", dest="progress_bar", action="store_false", default=None, help="no progress bar")
    g.add_argument("--verbose", type=int, choices=[0, 1, 2], help="SB3 verbosity (1: metrics table each rollout)")
    h = parser.add_argument_group("PPO")
    h.add_argument("--observation", choices=["basic", "rich"],
                   help="rays: rich (default: 15 rays, slip, yaw rate, lateral offset, curvature ahead; 26 values) or basic (the guide's 10 values of kartsim/Kart-v0)")
    h.add_argument("--learning-rate", type=_float, help="Adam learning rate (default 1e-3 rays, 3e-4 vision)")
    h.add_argument("--lr-schedule", choices=["constant", "linear"], help="learning rate: constant (default) or linear to 0")
    h.add_argument("--batch-size", type=_int, help="minibatch size (default 2048 rays, 512 vision, a quarter of the rollout with fewer than 16 vision karts); must divide n_steps x vector envs")
    h.add_argument("--n-steps", type=_int, help="steps per env per rollout (default 128 rays and vision)")
    h.add_argument("--n-epochs", type=_int, help="epochs per update (default 5 rays, 3 vision, 6 with fewer than 16 vision karts)")
    h.add_argument("--gamma", type=_float, help="discount (default 0.99)")
    h.add_argument("--gae-lambda", type=_float, help="GAE lambda (default 0.95)")
    h.add_argument("--clip-range", type=_float, help="PPO clip range (default 0.2)")
    h.add_argument("--ent-coef", type=_float, help="entropy coefficient (default 0.0)")
    h.add_argument("--log-std-init", type=_float, help="initial log std of the action noise (default -0.5; -1.0 with fewer than 16 vision karts)")
    h.add_argument("--precision", choices=["auto", "bf16", "fp32"],
                   help="vision CNN arithmetic (default auto: bf16 where the hardware has it)")
    h.add_argument("--torch-threads", type=_int, help="torch CPU threads (default: the idle cores for vision, 1 for rays)")
    h.add_argument("--no-normalize-reward", dest="normalize_reward", action="store_false", default=None,
                   help="train on raw rewards (default: scaled by a running return estimate)")
    v = parser.add_argument_group("vision (with --vision)")
    v.add_argument("--features-dim", type=_int, help="fused CNN + telemetry features (default 512; 1024 allowed)")
    v.add_argument("--frame-stack", type=_int, help="camera frames stacked on the channels (default 1)")
    v.add_argument("--grayscale", action="store_true", default=None, help="one channel per frame instead of RGB")
    v.add_argument("--camera", choices=["chase", "driver"], help="camera: chase (default) or driver")
    v.add_argument("--image-size", type=_int, help="camera image size in pixels (default 84)")
    d = parser.add_argument_group("demonstrations and transfer (new runs)")
    d.add_argument("--demos", metavar="SOURCE",
                   help="behaviour-clone before PPO: ai:hard|medium|easy, a telemetry CSV or a folder of them, "
                   "a demos .npz (kartsim demos record) or a model .zip to distil")
    d.add_argument("--demos-mode", choices=["bc", "dagger"],
                   help="bc (vision default): clone the demonstrations; dagger (rays default; needs a teacher: ai:, a "
                   "model): then the policy drives and the teacher labels the states it visits")
    d.add_argument("--demos-laps", type=_int, help="laps the AI / model teacher drives (default 20)")
    d.add_argument("--demos-noise", type=_float,
                   help="std of the persistent noise on the actions an ai:/model teacher applies while recording "
                   "(its clean actions are the labels: recoveries in the demonstrations; default 0)")
    d.add_argument("--bc-epochs", type=_int, help="behaviour cloning epochs (default 10)")
    d.add_argument("--dagger-rounds", type=_int, help="DAgger rounds (default 2)")
    d.add_argument("--dagger-steps", type=_int, help="states visited per DAgger round, all karts together (default 8000)")
    d.add_argument("--init-from", metavar="ZIP", help="start from this model's weights (e.g. fine-tune on another track)")
    d.add_argument("--init-parts", choices=["cnn", "policy", "all"],
                   help="weights --init-from copies: cnn (vision extractor), policy (all but the value function), all (default)")
    e = parser.add_argument_group("environment")
    e.add_argument("--env-option", dest="env_options", action="append", type=_env_option, metavar="KEY=VALUE",
                   help="set an EnvConfig field, e.g. max_episode_steps=3000 (repeatable)")


VISION_ONLY = ("features_dim", "frame_stack", "grayscale", "camera", "image_size")


def config_from_args(args: argparse.Namespace, *, vision: bool | None = None) -> tuple[Any, set[str]]:
    """(TrainConfig, names of the fields given on the command line)."""
    from kartsim.rl.train import TrainConfig

    values: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if dest in ("func", "command") or value is None:
            continue
        name = _FIELD.get(dest, dest)
        if name == "env_options":
            value = dict(value)
        values[name] = value
    if vision is not None:
        values["vision"] = vision
    known = {f for f in TrainConfig.__dataclass_fields__}
    values = {k: v for k, v in values.items() if k in known}
    given = set(values)
    is_vision = bool(values.get("vision", False))
    if not is_vision and not getattr(args, "resume", None):
        wrong = [n for n in VISION_ONLY if n in values]
        if wrong:
            flag = "--" + wrong[0].replace("_", "-")
            raise ConfigError(f"{flag} only applies to vision training; add --vision (or use train_ppo_vision.py)")
    return TrainConfig(**values), given


def run_train(args: argparse.Namespace, *, vision: bool | None = None) -> int:
    from kartsim.rl.train import train

    cfg, given = config_from_args(args, vision=vision)
    result = train(cfg, given=given)
    return 130 if result.interrupted else 0


def _handler(args: argparse.Namespace) -> int:
    return run_train(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a PPO driver (rays + MLP, or --vision for camera + telemetry CNN)",
        description="Train a PPO driver: rays + MLP by default, --vision for camera + telemetry with the CNN "
        "policy. Writes runs/<save-name>/ (checkpoints, config.json, telemetry_log.csv, tb/) and "
        "models/<save-name>_final.zip.",
    )
    add_train_arguments(parser)
    parser.set_defaults(func=_handler)


def script_main(vision: bool, argv: list[str] | None = None) -> int:
    """Entry point of the root scripts train_ppo.py (rays) and train_ppo_vision.py (vision)."""
    import sys

    from kartsim.errors import KartsimError

    prog = "train_ppo_vision.py" if vision else "train_ppo.py"
    parser = argparse.ArgumentParser(
        prog=prog,
        description=("Train the vision (camera + telemetry, CNN) PPO driver." if vision
                     else "Train the rays (MLP) PPO driver.") + " Same flags as `kartsim train`.",
    )
    add_train_arguments(parser, vision_flag=False)
    args = parser.parse_args(argv)
    try:
        return run_train(args, vision=vision)
    except KartsimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
