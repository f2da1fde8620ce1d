"""TrainConfig in parts: one from_dict (nested, dotted, the old flat layout), validation in one
place, and kartsim train's flags generated from the fields (so help and defaults cannot drift)."""

from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from kartsim.errors import ConfigError
from kartsim.rl.config import FEW_KARTS_VISION, MODE_DEFAULTS, PART_OF, PARTS, TrainConfig, validate
from kartsim.rl.train_cmd import add_train_arguments, config_from_args


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    return p


def test_from_dict_reads_parts_dotted_overrides_and_the_flat_layout():
    nested = TrainConfig.from_dict({"ppo": {"gamma": 0.9}, "run": {"timesteps": 5000}})
    dotted = TrainConfig.from_dict({"ppo.gamma": 0.9, "run.timesteps": 5000})
    flat = TrainConfig.from_dict({"gamma": 0.9, "timesteps": 5000})  # models saved before the parts
    assert nested == dotted == flat and flat.ppo.gamma == 0.9 and flat.run.timesteps == 5000
    mixed = TrainConfig.from_dict({**nested.to_dict(), "ppo.gamma": 0.995, "vector_envs": 8})
    assert (mixed.ppo.gamma, mixed.run.vector_envs, mixed.run.timesteps) == (0.995, 8, 5000)
    assert TrainConfig.from_dict(mixed.to_dict()) == mixed
    assert mixed.get("ppo.gamma") == mixed.get("gamma") == 0.995


@pytest.mark.parametrize("data, message", [
    ({"ppo.gama": 0.9}, "unknown config key 'ppo.gama'; PPOConfig keys: "),
    ({"gama": 0.9}, "unknown config key 'gama'"),
    ({"ppo": {"gama": 0.9}}, "unknown config key 'ppo.gama'"),
    ({"nope.gamma": 0.9}, "'nope' is not a nested config of TrainConfig"),
])
def test_from_dict_names_an_unknown_key(data, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        TrainConfig.from_dict(data)


def test_every_field_is_a_flag_with_its_docstring_as_help():
    actions = {a.dest: a for a in _parser()._actions if a.option_strings}
    for part, cls in PARTS.items():
        for f in dataclasses.fields(cls):
            action = actions[f"{part}.{f.name}"]
            assert action.help and len(action.help) > 15, f.name  # the field's docstring (or EnvConfig's)
            assert action.default is None  # so the command line says which fields were given
    assert set(actions) - {"help"} == {f"{PART_OF[n]}.{n}" for n in PART_OF}


def test_help_states_the_defaults_of_the_fields():
    helps = {a.option_strings[0]: a.help for a in _parser()._actions if a.option_strings}
    rays, vision, few = MODE_DEFAULTS[False]["n_epochs"], MODE_DEFAULTS[True]["n_epochs"], FEW_KARTS_VISION["n_epochs"]
    karts = MODE_DEFAULTS[True]["vector_envs"]  # "4 for vision" when the help was written by hand
    assert f"(default {rays} rays, {vision} vision; {few} with fewer than {karts} vision karts)" in helps["--n-epochs"]
    assert "(default 0.99)" in helps["--gamma"] and "(default circuit.png)" in helps["--track-name"]
    assert "(default 100,000)" in helps["--checkpoint-freq"]
    assert helps["--no-progress"].startswith("turn off: Show SB3's progress bar")


def test_help_states_each_default_once():
    for flag, text in ((a.option_strings[0], a.help) for a in _parser()._actions if a.option_strings):
        assert len(re.findall(r"\bdefault", text, re.IGNORECASE)) <= 1, flag  # docstring and note both said it


def test_help_reads_as_text_without_docstring_markup():
    text = _parser().format_help()  # flag helps and the part groups' descriptions
    assert "``" not in text and "`" not in text and ":class:" not in text and ":mod:" not in text
    assert "env_options sets any other EnvConfig field" in " ".join(text.split())


def test_flags_keep_their_names_and_behaviour():
    args = _parser().parse_args(["--timesteps", "5_000", "--save-name", "x", "--vector-envs", "4", "--track-name",
                                 "oval", "circuit.png", "--env-option", "max_episode_steps=30", "--no-progress",
                                 "--no-normalize-reward", "--device", "cuda:1", "--vision", "--frame-stack", "2"])
    cfg, given = config_from_args(args)
    assert (cfg.run.timesteps, cfg.run.save_name, cfg.run.vector_envs) == (5000, "x", 4)
    assert cfg.task.track == ["oval", "circuit.png"] and cfg.task.env_options == {"max_episode_steps": 30}
    assert cfg.run.progress_bar is False and cfg.ppo.normalize_reward is False and cfg.task.frame_stack == 2
    assert cfg.run.device == "cuda:1"  # parsed: resolve_device decides (no GPU here: a one-line error)
    assert given == {"run.timesteps", "run.save_name", "run.vector_envs", "task.track", "task.env_options",
                     "run.progress_bar", "ppo.normalize_reward", "run.device", "task.vision", "task.frame_stack"}
    with pytest.raises(ConfigError, match="only applies to vision training"):
        config_from_args(_parser().parse_args(["--frame-stack", "2"]))


def test_device_cuda_n_is_accepted_as_resolve_device_accepts_it():
    import torch

    from kartsim.rl.config import resolve_device

    cfg = TrainConfig.from_dict({"device": "cuda:1", "timesteps": 1000}).resolved()
    if torch.cuda.device_count() > 1:
        validate(cfg)
    else:
        with pytest.raises(ConfigError, match=r"^(CUDA is not available|--device cuda:1: this machine has)"):
            validate(cfg)
    with pytest.raises(ConfigError, match=r"--device must be auto, cpu, cuda or cuda:N, not 'tpu'"):
        resolve_device("tpu")


@pytest.mark.parametrize("flags, message", [
    (["--camera", "roof"], "invalid choice: 'roof'"),
    (["--n-steps", "many"], "expected a whole number, got 'many'"),
    (["--vec-backend", "threads"], "invalid choice: 'threads'"),
    # the train command's usage and error, not the top level's, with the closest flag
    (["--gama", "0.9"], "kartsim train: error: unrecognized arguments: --gama 0.9 (did you mean --gamma?)"),
    (["--zzz-freq", "5"], "kartsim train: error: unrecognized arguments: --zzz-freq 5\n"),  # no far-off guess
])
def test_bad_flags_are_one_line_errors(flags, message, capsys):
    from kartsim.cli import main

    with pytest.raises(SystemExit) as err:
        main(["train", *flags])
    out = capsys.readouterr().err
    assert err.value.code == 2 and message in out and "Traceback" not in out


@pytest.mark.parametrize("changes, message", [
    ({"task.camera": "roof"}, "--camera must be chase or driver, not 'roof'"),
    ({"policy.precision": "fp8"}, "--precision must be auto, bf16 or fp32, not 'fp8'"),
    ({"task.image_size": 8}, "--image-size must be between 16 and 512, not 8"),  # EnvConfig's limits
    ({"task.env_options": {"max_episode_step": 3}}, "unknown env option 'max_episode_step'"),
])
def test_validation_names_the_flag(changes, message):
    cfg = TrainConfig.from_dict({"timesteps": 1000, "vision": True, **changes}).resolved()
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(cfg)


def test_a_missing_evaluation_track_is_named_before_training():
    from kartsim.errors import TrackError

    cfg = TrainConfig.from_dict({"timesteps": 1000, "eval.eval_tracks": ["oval", "nosuch.png"]}).resolved()
    with pytest.raises(TrackError, match="track 'nosuch.png' not found"):  # was only found at the first evaluation
        validate(cfg)
    validate(TrainConfig.from_dict({"timesteps": 1000, "eval.eval_tracks": ["oval", "random"]}).resolved())


def test_a_pre_trained_rays_run_fine_tunes_with_gentler_ppo_defaults():
    from kartsim.rl.config import PRETRAINED_RAYS

    demos = TrainConfig.from_dict({"demos": "ai:hard"}).resolved()
    assert (demos.ppo.learning_rate, demos.policy.log_std_init) == (PRETRAINED_RAYS["learning_rate"], PRETRAINED_RAYS["log_std_init"])
    init = TrainConfig.from_dict({"init_from": "a.zip", "learning_rate": 5e-4}).resolved()
    assert (init.ppo.learning_rate, init.policy.log_std_init) == (5e-4, PRETRAINED_RAYS["log_std_init"])  # given: kept
    scratch, vision = TrainConfig().resolved(), TrainConfig.from_dict({"vision": True, "demos": "ai:hard"}).resolved()
    assert scratch.ppo.learning_rate == MODE_DEFAULTS[False]["learning_rate"]
    assert vision.ppo.learning_rate == MODE_DEFAULTS[True]["learning_rate"]
