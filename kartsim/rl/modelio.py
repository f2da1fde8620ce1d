"""Model files: SB3 PPO zips that also carry the kartsim configs they were trained with.

Every model kartsim saves (checkpoints, interrupted and final models) is a normal SB3 zip plus one
extra member, ``kartsim_config.json``::

    {"format": 1, "kartsim_version": "0.1.0", "env": EnvConfig.to_dict(), "train": TrainConfig dict,
     "num_timesteps": 12345}

(``<name>_best.zip`` adds ``"evaluation"``: the training-time evaluation row that made it the best.)

A model trained with normalised rewards (SB3 ``VecNormalize``, the default) also carries
``vecnormalize.pkl``: the wrapper pickled as ``VecNormalize.save`` writes it (running statistics and
settings, without the last batch of observations), which ``kartsim train --resume`` restores. Extract
it and ``VecNormalize.load(it, venv)`` to use it elsewhere.

``PPO.load`` only reads the members it knows ("data", "*.pth", ...), so the file still loads with
plain stable-baselines3; kartsim's play and eval read the extra member to rebuild the same env (they
need no reward statistics).
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from kartsim.errors import ModelFileError

CONFIG_MEMBER = "kartsim_config.json"
VECNORMALIZE_MEMBER = "vecnormalize.pkl"
FORMAT_VERSION = 1


def save_model(model: Any, path: str | Path, env_config: dict[str, Any], train_config: dict[str, Any],
               evaluation: dict[str, Any] | None = None) -> Path:
    """Save `model` (an SB3 algorithm) to `path` with `kartsim_config.json` inside, and the statistics
    of its env's VecNormalize when it has one (`VECNORMALIZE_MEMBER`); returns the path.
    `evaluation`: the training-time evaluation that made this the best model (``<name>_best.zip``).

    Written to a temporary file first and renamed, so a crash never leaves half a model behind.
    """
    from kartsim import __version__

    path = Path(path)
    if path.suffix != ".zip":
        path = path.with_name(path.name + ".zip")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".saving-", suffix=".zip", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        model.save(tmp)
        payload = {
            "format": FORMAT_VERSION,
            "kartsim_version": __version__,
            "env": env_config,
            "train": train_config,
            "num_timesteps": int(model.num_timesteps),
        }
        if evaluation is not None:
            payload["evaluation"] = evaluation
        vecnormalize = model.get_vec_normalize_env() if hasattr(model, "get_vec_normalize_env") else None
        with zipfile.ZipFile(tmp, "a", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(CONFIG_MEMBER, json.dumps(payload, indent=2, sort_keys=True))
            if vecnormalize is not None:
                archive.writestr(VECNORMALIZE_MEMBER, _vecnormalize_bytes(vecnormalize))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _vecnormalize_bytes(vecnormalize: Any) -> bytes:
    """`vecnormalize` pickled as ``VecNormalize.save`` does, less its last observations and rewards."""
    clone = type(vecnormalize).__new__(type(vecnormalize))
    clone.__dict__.update(vecnormalize.__dict__)  # shallow: its __getstate__ drops the env when pickled
    clone.__dict__.pop("old_obs", None)
    clone.__dict__.pop("old_reward", None)
    return pickle.dumps(clone)


def read_vecnormalize(path: str | Path) -> Any | None:
    """The VecNormalize saved inside a model zip, with no env attached (``.set_venv(venv)`` it, or copy
    its ``ret_rms``); None when the zip has none. ModelFileError (one line) when it cannot be read."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        if VECNORMALIZE_MEMBER not in archive.namelist():
            return None
        data = archive.read(VECNORMALIZE_MEMBER)
    try:
        return pickle.loads(data)
    except Exception as exc:  # an SB3 / numpy too different from the one that saved it
        raise ModelFileError(
            f"{path}: {VECNORMALIZE_MEMBER} inside the model cannot be read ({exc.__class__.__name__}: {exc})"
        ) from None


def check_model_file(path: str | Path) -> Path:
    """The path, when it names a readable SB3 model zip; ModelFileError (one line) otherwise."""
    path = Path(path)
    if not path.exists():
        hint = ""
        if path.suffix != ".zip" and path.with_name(path.name + ".zip").exists():
            hint = f" (did you mean {path.name}.zip?)"
        raise ModelFileError(f"model file not found: {path}{hint}")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder; give the model's .zip file")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is not a model file (not a zip archive, or it is corrupted)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelFileError(f"{path} is corrupted ({exc}); use another checkpoint") from None
    if bad is not None:
        raise ModelFileError(f"{path} is corrupted (member {bad} fails its checksum); use another checkpoint")
    if "data" not in names or "policy.pth" not in names:
        raise ModelFileError(f"{path} is a zip file but not a stable-baselines3 model (no 'data'/'policy.pth' inside)")
    return path


def read_kartsim_config(path: str | Path) -> dict[str, Any] | None:
    """The ``kartsim_config.json`` payload of a model zip, or None for a plain SB3 model."""
    path = check_model_file(path)
    with zipfile.ZipFile(path) as archive:
        if CONFIG_MEMBER not in archive.namelist():
            return None
        try:
            payload = json.loads(archive.read(CONFIG_MEMBER).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise ModelFileError(f"{path}: {CONFIG_MEMBER} inside the model is not valid JSON") from None
    if not isinstance(payload, dict) or "env" not in payload:
        raise ModelFileError(f"{path}: {CONFIG_MEMBER} inside the model has no 'env' section")
    return payload


def load_ppo(path: str | Path, *, env: Any = None, device: str = "auto", **kwargs: Any):
    """``PPO.load`` with one-line errors for files that are not loadable models."""
    from stable_baselines3 import PPO

    path = check_model_file(path)
    try:
        return PPO.load(path, env=env, device=device, **kwargs)
    except ModelFileError:
        raise
    except ValueError as exc:
        if "space" in str(exc).lower():
            raise ModelFileError(f"{path} does not fit this environment: {str(exc).splitlines()[0]}") from None
        raise ModelFileError(f"{path} cannot be loaded as a PPO model: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # pickle / torch / zip errors inside SB3
        raise ModelFileError(
            f"{path} cannot be loaded as a PPO model ({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None


def describe_space(space: Any) -> str:
    """Short text for an observation space, e.g. ``Box(10,)`` or ``Dict(vision=(84, 84, 3), telemetry=(9,))``."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict):
        return "Dict(" + ", ".join(f"{k}={tuple(v.shape)}" for k, v in space.spaces.items()) + ")"
    return f"{space.__class__.__name__}{tuple(getattr(space, 'shape', ()) or ())}"


def sb3_view_of_space(space: Any) -> Any:
    """The observation space as SB3 stores it for `space` (channels-last images transposed)."""
    import gymnasium as gym
    from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
    from stable_baselines3.common.vec_env import VecTransposeImage

    def one(s: Any) -> Any:
        if is_image_space(s) and not is_image_space_channels_first(s):
            return VecTransposeImage.transpose_space(s)
        return s

    if isinstance(space, gym.spaces.Dict):
        return gym.spaces.Dict({k: one(v) for k, v in space.spaces.items()})
    return one(space)


def spaces_match(model_space: Any, env_space: Any) -> bool:
    """Whether a model trained on `model_space` can act in an env with `env_space`."""
    import gymnasium as gym

    env_view = sb3_view_of_space(env_space)
    if isinstance(model_space, gym.spaces.Dict) != isinstance(env_view, gym.spaces.Dict):
        return False
    if isinstance(model_space, gym.spaces.Dict):
        if set(model_space.spaces) != set(env_view.spaces):
            return False
        return all(tuple(model_space[k].shape) == tuple(env_view[k].shape) for k in model_space.spaces)
    return tuple(model_space.shape) == tuple(env_view.shape)
