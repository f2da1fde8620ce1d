"""Before PPO: start a new run's policy from another model (``--init-from``) and/or pre-train it on
demonstrations (``--demos``, behaviour cloning, then DAgger with ``--demos-mode dagger``).

`prepare_policy` does both and returns the provenance record that every model the run saves carries
in its ``kartsim_config.json`` (``"provenance"``): where the demonstrations and initial weights came
from, how many steps and laps, the cloning errors and how long it took.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kartsim.errors import ConfigError



def _source_record(source: str, demos: Any) -> dict[str, Any]:
    from kartsim.rl.demos import is_ai_source, summary
    from kartsim.rl.transfer import sha256

    info = summary(demos)
    record: dict[str, Any] = {"source": source, "steps": info["steps"], "drives": info["drives"],
                              "laps": info["laps"], "best_lap_s": info["best_lap_s"], "tracks": info["tracks"]}
    if not is_ai_source(source):
        path = Path(source)
        files = [path] if path.is_file() else [Path(p) for p in demos.meta.get("parts") or []]
        record["files"] = [{"path": str(p), "sha256": sha256(p)} for p in files if Path(p).is_file()]
    return record


def pretrain(model: Any, cfg: Any, env_cfg: Any, *, mode_given: bool = True,
             echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Clone `cfg.pretrain.demos` into ``model.policy`` (and DAgger rounds in mode dagger); the provenance."""
    from kartsim.rl.bc import behaviour_clone, dagger
    from kartsim.rl.demos import DemoError, is_ai_source, open_source

    started = time.perf_counter()
    n_karts = int(cfg.run.vector_envs)
    echo(f"Demonstrations: {cfg.pretrain.demos}" + (f" ({cfg.pretrain.demos_laps} laps)" if not Path(cfg.pretrain.demos).exists() else ""))
    if is_ai_source(cfg.pretrain.demos) and "random" in list(cfg.task.track):
        echo("  (the AI solves each pool track's racing line the first time it drives there, ~1 s a track, cached on disk)")
    demos, teacher = open_source(cfg.pretrain.demos, env_cfg, laps=cfg.pretrain.demos_laps, n_karts=n_karts, seed=cfg.run.seed,
                                 device=str(model.device), noise=cfg.pretrain.demos_noise)
    mode = cfg.pretrain.demos_mode
    if mode == "dagger" and teacher is None:
        if mode_given:
            raise DemoError(f"--demos-mode dagger needs a teacher to label the states the policy visits (ai:LEVEL, a "
                            f"model zip, or an npz recorded from ai:LEVEL); {cfg.pretrain.demos} is recorded driving: use --demos-mode bc")
        echo(f"{cfg.pretrain.demos} has no teacher to label new states: behaviour cloning only (bc)")
        mode = "bc"
    record = _source_record(cfg.pretrain.demos, demos)
    echo(f"  {record['steps']:,} steps, {record['laps']} laps" +
         (f", best {record['best_lap_s']:.2f} s" if record["best_lap_s"] else ""))
    bc_args = dict(epochs=cfg.pretrain.bc_epochs, batch_size=256, learning_rate=1e-3, seed=cfg.run.seed, echo=echo)
    report = behaviour_clone(model.policy, demos, **bc_args)
    record.update(mode=mode, bc=vars(report))
    if mode == "dagger" and cfg.pretrain.dagger_rounds > 0:
        demos, reports = dagger(model.policy, demos, env_cfg, teacher, rounds=cfg.pretrain.dagger_rounds,
                                steps=cfg.pretrain.dagger_steps, n_karts=n_karts, **bc_args)
        record["dagger"] = {"rounds": cfg.pretrain.dagger_rounds, "steps_per_round": cfg.pretrain.dagger_steps,
                            "samples": len(demos), "reports": [vars(r) for r in reports]}
    record["seconds"] = round(time.perf_counter() - started, 1)
    return record


def prepare_policy(model: Any, cfg: Any, env_cfg: Any, *, given: set[str],
                   echo: Callable[[str], None] = print) -> dict[str, Any]:
    """``--init-from`` then ``--demos`` on a new run's model; the provenance record ({} when neither)."""
    from kartsim.rl.transfer import init_from

    provenance: dict[str, Any] = {}
    if cfg.pretrain.init_from:
        provenance["init_from"] = init_from(model.policy, cfg.pretrain.init_from, cfg.pretrain.init_parts, vision=cfg.vision)
        echo(f"Initial weights: {cfg.pretrain.init_parts} of {cfg.pretrain.init_from} ({provenance['init_from']['tensors']} tensors)")
    if cfg.pretrain.demos:
        provenance["demos"] = pretrain(model, cfg, env_cfg, mode_given="pretrain.demos_mode" in given, echo=echo)
    return provenance


def validate_pretrain(cfg: Any, resume: str | None = None) -> None:
    """ConfigError (one line naming the flag) for demonstration / init flags (`cfg`: a resolved
    `PretrainConfig`; its choices are checked with its other fields) that cannot work."""
    from kartsim.rl.demos import check_ai_source, check_source_path, is_ai_source

    for name, value, low in (("--demos-laps", cfg.demos_laps, 1), ("--bc-epochs", cfg.bc_epochs, 1),
                             ("--dagger-rounds", cfg.dagger_rounds, 0), ("--dagger-steps", cfg.dagger_steps, 1),
                             ("--value-warmup", cfg.value_warmup, 0)):
        if value < low:
            raise ConfigError(f"{name} must be >= {low}, not {value}")
    if resume:
        return  # the checkpoint already holds its weights; its sources are in its provenance
    if cfg.demos:
        if is_ai_source(cfg.demos):
            check_ai_source(cfg.demos)
        else:
            check_source_path(cfg.demos)
    if cfg.init_from:
        from kartsim.rl.modelio import check_model_file

        check_model_file(cfg.init_from)
