"""``kartsim train``: train a PPO driver (rays/MLP by default, ``--vision`` for camera + telemetry).

``python train_ppo.py ...`` and ``python train_ppo_vision.py ...`` are this command with the
policy kind fixed. Every flag maps to one `kartsim.rl.train.TrainConfig` field. The command lives
beside the trainer because the jobs package checks and runs the same flags (``kartsim jobs submit``);
:mod:`kartsim.cli` registers it with the other sub-commands.
"""

from __future__ import annotations

import argparse
import functools
import json
from typing import Any

from kartsim.errors import ConfigError



def _mode_default(dest: str) -> str | None:
    """``64 rays, 16 vision`` for a field `MODE_DEFAULTS` fills per policy kind (and
    `FEW_KARTS_VISION`, with fewer vision karts than the default)."""
    from kartsim.rl.config import FEW_KARTS_VISION, MODE_DEFAULTS

    name = dest.rpartition(".")[2]
    if name not in MODE_DEFAULTS[False]:
        return None
    rays, vision = (format(MODE_DEFAULTS[kind][name], "g" if isinstance(MODE_DEFAULTS[kind][name], float) else "")
                    for kind in (False, True))
    text = rays if rays == vision else f"{rays} rays, {vision} vision"
    few = {**FEW_KARTS_VISION, "batch_size": "a quarter of the rollout"}.get(name)
    if few is None:
        return text
    few_text = format(few, "g") if isinstance(few, float) else str(few)
    return f"{text}; {few_text} with fewer than {MODE_DEFAULTS[True]['vector_envs']} vision karts"


# Fields only the vision CNN / camera uses (a rays run that sets one is a mistake).
VISION_ONLY = ("policy.features_dim", "task.frame_stack", "task.grayscale", "task.camera", "task.image_size")


def add_train_arguments(parser: argparse.ArgumentParser, *, vision_flag: bool = True, eval_flags: bool = True) -> None:
    """The training flags, one per `TrainConfig` field, in a group per part (shared by `kartsim train`,
    the root scripts, jobs and sweeps; `kartsim sweep` has its own evaluation flags, so it leaves out
    the ``eval`` part with `eval_flags=False`, the root scripts ``--vision`` with `vision_flag=False`)."""
    from kartsim.config_cli import add_dataclass_arguments, plain_text
    from kartsim.rl.config import PARTS

    for part, cls in PARTS.items():
        if part == "eval" and not eval_flags:
            continue
        description = plain_text(" ".join((cls.__doc__ or "").split()).partition(": ")[2])
        group = parser.add_argument_group(part, description or None)
        add_dataclass_arguments(group, cls, prefix=f"{part}.", skip=() if vision_flag else ("vision",),
                                default_note=_mode_default)


def train_dests() -> set[str]:
    """The dests of the training flags (``ppo.gamma``, ...): every TrainConfig field."""
    from kartsim.rl.config import PART_OF

    return {f"{part}.{name}" for name, part in PART_OF.items()}


@functools.cache
def _train_actions() -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser(add_help=False)
    add_train_arguments(parser)
    return {a.dest: a for a in parser._actions if a.option_strings}


def train_flags(values: dict[str, Any]) -> list[str]:
    """The ``kartsim train`` flags that give `values` ({dotted path or field name: value}, as
    `given_values` returns them): the inverse of parsing, for the command lines jobs and sweeps show."""
    from kartsim.rl.config import dotted

    out: list[str] = []
    for name, value in values.items():
        action = _train_actions()[dotted(name)]
        flag = action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            out += [flag] if value else []
        elif isinstance(action, argparse._StoreFalseAction):
            out += [flag] if value is False else []
        elif isinstance(action, argparse._AppendAction):  # --env-option KEY=VALUE, one per item
            out += [x for k, v in (value or {}).items() for x in (flag, f"{k}={json.dumps(v)}")]
        elif action.nargs == "+":
            out += [flag, *(str(v) for v in (value if isinstance(value, list) else [value]))]
        elif value is not None:
            out += [flag, format(value, ".6g") if isinstance(value, float) else str(value)]
    return out


def values_from_argv(argv: list[str]) -> dict[str, Any]:
    """{dotted path: value} of a ``kartsim train`` command line (job records written before jobs kept
    the dict); ConfigError when it does not parse."""
    from kartsim.config_cli import given_values

    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    add_train_arguments(parser)
    try:
        args, unknown = parser.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit) as exc:
        raise ConfigError(f"not a kartsim train command line ({exc})") from None
    if unknown:
        raise ConfigError(f"not a kartsim train command line (unknown {' '.join(unknown)})")
    return given_values(args, train_dests())


def config_from_args(args: argparse.Namespace, *, vision: bool | None = None) -> tuple[Any, set[str]]:
    """(TrainConfig, dotted paths of the fields given on the command line)."""
    from kartsim.config_cli import given_values

    values = given_values(args, train_dests())
    if vision is not None:
        values["task.vision"] = vision
    return config_from_values(values)


def config_from_values(values: dict[str, Any]) -> tuple[Any, set[str]]:
    """(TrainConfig, the dotted paths set) from given values: dotted paths (``ppo.gamma``), field
    names of the layout before the parts, or parts as dicts; ConfigError for a vision-only field on
    a rays run."""
    from kartsim.rl.config import PART_OF, TrainConfig

    cfg = TrainConfig.from_dict(values)
    given = set()
    for key, value in values.items():
        if isinstance(value, dict) and key not in PART_OF and "." not in key:
            given |= {f"{key}.{k}" for k in value}
        else:
            given.add(key if "." in key else f"{PART_OF[key]}.{key}")
    if not cfg.vision and not cfg.run.resume:
        wrong = [p for p in VISION_ONLY if p in given]
        if wrong:
            flag = "--" + wrong[0].rpartition(".")[2].replace("_", "-")
            raise ConfigError(f"{flag} only applies to vision training; add --vision (or use train_ppo_vision.py)")
    return cfg, given


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
