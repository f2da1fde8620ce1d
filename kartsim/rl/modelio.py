"""Model files: SB3 PPO zips that also carry the kartsim configs they were trained with.

Every model kartsim saves (checkpoints, interrupted and final models) is a normal SB3 zip plus
``kartsim_config.json``::

    {"format": 1, "kartsim_version": "0.1.0", "env": EnvConfig.to_dict(), "train": TrainConfig dict,
     "num_timesteps": 12345, "provenance": {"demos": {...}, "init_from": {...}}}   # provenance: when used

(``<name>_best.zip`` adds ``"evaluation"``: the training-time evaluation row that made it the best.)

and, when trained on normalised rewards (SB3 ``VecNormalize``, the default), ``reward_stats.json``:
the running return statistics ``{"mean", "var", "count"}`` that ``kartsim train --resume`` continues.

Loading runs no code from the file (`load_ppo`). SB3's ``data`` member stores the spaces, the policy
class and a few other objects as pickles; for a kartsim model those are rebuilt from
``kartsim_config.json`` instead (SB3's ``custom_objects``, so none is unpickled) and the weights come
from ``policy.pth`` through ``torch.load(weights_only=True)``. Models from other tools (no
``kartsim_config.json``) and the pickled ``vecnormalize.pkl`` of models saved before
``reward_stats.json`` are only read with ``trust=True`` (``--trust-model``). The file still loads
with plain stable-baselines3 (``PPO.load``, which does unpickle: only for files you trust).
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from kartsim import faults
from kartsim.errors import ModelFileError

CONFIG_MEMBER = "kartsim_config.json"
REWARD_STATS_MEMBER = "reward_stats.json"
VECNORMALIZE_MEMBER = "vecnormalize.pkl"  # models saved before reward_stats.json (read with trust only)
FORMAT_VERSION = 1
MAX_JSON_MEMBER_BYTES = 16 * 2**20  # a model's JSON members are a few kB; refuse zip bombs early
TRUST_HINT = "pass --trust-model only if you trust where the file came from"


def save_model(model: Any, path: str | Path, env_config: dict[str, Any], train_config: dict[str, Any],
               provenance: dict[str, Any] | None = None, evaluation: dict[str, Any] | None = None) -> Path:
    """Save `model` (an SB3 algorithm) to `path` with `kartsim_config.json` inside, and the reward
    statistics of its env's VecNormalize when it has one (`REWARD_STATS_MEMBER`); returns the path.
    `provenance`: where its demonstrations and initial weights came from (`kartsim.rl.pretrain`).
    `evaluation`: the training-time evaluation that made this the best model (``<name>_best.zip``).

    Written to a temporary file first and renamed, so a crash never leaves half a model behind; the
    file gets the permissions the umask gives a new file (as ``open`` would), not mkstemp's 0600.
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
        if provenance:
            payload["provenance"] = provenance
        if evaluation is not None:
            payload["evaluation"] = evaluation
        vecnormalize = model.get_vec_normalize_env() if hasattr(model, "get_vec_normalize_env") else None
        with zipfile.ZipFile(tmp, "a", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(CONFIG_MEMBER, json.dumps(payload, indent=2, sort_keys=True))
            if vecnormalize is not None and getattr(vecnormalize, "ret_rms", None) is not None:
                archive.writestr(REWARD_STATS_MEMBER, json.dumps(_rms_dict(vecnormalize.ret_rms)))
        os.chmod(tmp, 0o666 & ~_umask())
        faults.point("save")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _rms_dict(rms: Any) -> dict[str, Any]:
    """A RunningMeanStd as JSON (mean/var are scalars for rewards, lists for other shapes)."""
    import numpy as np

    return {"mean": np.asarray(rms.mean, dtype=float).tolist(), "var": np.asarray(rms.var, dtype=float).tolist(),
            "count": float(rms.count)}


def _read_member(archive: zipfile.ZipFile, name: str, path: Path) -> bytes:
    if archive.getinfo(name).file_size > MAX_JSON_MEMBER_BYTES:
        raise ModelFileError(f"{path}: {name} inside the model is implausibly large; use another model file")
    return archive.read(name)


def _json_member(archive: zipfile.ZipFile, name: str, path: Path) -> Any:
    try:
        return json.loads(_read_member(archive, name, path).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ModelFileError(f"{path}: {name} inside the model is not valid JSON; use another model file") from None


def read_reward_stats(path: str | Path, *, trust: bool = False) -> Any | None:
    """The reward normalisation statistics (a ``RunningMeanStd``) saved in a model zip; None when it
    has none. An older model's pickled ``vecnormalize.pkl`` is read only with `trust`; without it,
    ModelFileError naming ``--trust-model``. ModelFileError (one line) when they cannot be read."""
    import numpy as np
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        if REWARD_STATS_MEMBER in names:
            data = _json_member(archive, REWARD_STATS_MEMBER, path)
            try:
                mean = np.asarray(data["mean"], dtype=np.float64)
                var = np.asarray(data["var"], dtype=np.float64)
                count = float(data["count"])
            except (TypeError, KeyError, ValueError):
                raise ModelFileError(f"{path}: {REWARD_STATS_MEMBER} needs numbers mean, var and count") from None
            if mean.shape != var.shape or not (np.isfinite(mean).all() and np.isfinite(var).all() and (var >= 0).all()
                                                and np.isfinite(count) and count > 0):
                raise ModelFileError(f"{path}: {REWARD_STATS_MEMBER} holds invalid statistics (NaN, inf or negative)")
            rms = RunningMeanStd(shape=mean.shape)
            rms.mean, rms.var, rms.count = mean, var, count
            return rms
        if VECNORMALIZE_MEMBER not in names:
            return None
        if not trust:
            raise ModelFileError(
                f"{path} keeps its reward statistics in a pickle ({VECNORMALIZE_MEMBER}, older kartsim), which "
                f"could run code; {TRUST_HINT}"
            )
        data = archive.read(VECNORMALIZE_MEMBER)
    try:
        return pickle.loads(data).ret_rms  # trusted by the user (--trust-model)
    except Exception as exc:  # an SB3 / numpy too different from the one that saved it
        raise ModelFileError(
            f"{path}: {VECNORMALIZE_MEMBER} inside the model cannot be read ({exc.__class__.__name__}: {exc})"
        ) from None


def visible_models_hint(limit: int = 6) -> str:
    """``"; models here: a.zip, models/b_final.zip, ..."`` (newest first: here, models/, runs/*/), or
    a hint to train one when there are none."""
    found: dict[str, float] = {}
    for pattern in ("*.zip", "models/*.zip", "runs/*/*_final.zip"):
        for p in Path().glob(pattern):
            try:
                found[p.as_posix()] = p.stat().st_mtime
            except OSError:
                pass
    if not found:
        return "; no models here (models/, runs/): train one with python train_ppo.py or kartsim quickstart"
    names = sorted(found, key=found.get, reverse=True)
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return f"; models here: {', '.join(names[:limit])}{more}"


def check_model_file(path: str | Path) -> Path:
    """The path, when it names a readable SB3 model zip; ModelFileError (one line) otherwise."""
    path = Path(path)
    if not path.exists():
        hint = ""
        if path.suffix != ".zip" and path.with_name(path.name + ".zip").exists():
            hint = f" (did you mean {path.name}.zip?)"
        else:
            hint = visible_models_hint()
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
        payload = _json_member(archive, CONFIG_MEMBER, path)
    if not isinstance(payload, dict) or not isinstance(payload.get("env"), dict):
        raise ModelFileError(f"{path}: {CONFIG_MEMBER} inside the model has no 'env' section; use another model file")
    if not isinstance(payload.get("train", {}), dict):
        raise ModelFileError(f"{path}: {CONFIG_MEMBER} inside the model has a 'train' section that is not a mapping")
    steps = payload.get("num_timesteps", 0)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ModelFileError(f"{path}: {CONFIG_MEMBER} inside the model has num_timesteps {steps!r}, not a step count")
    return payload


# SB3 `data` entries a kartsim model pickles that loading can do without (rebuilt by SB3 itself:
# the rollout buffer class and the lr schedule from the plain settings; the last observations and
# episode buffers are reset before any training).
_NOT_NEEDED = ("_last_obs", "_last_episode_starts", "_last_original_obs", "ep_info_buffer", "ep_success_buffer",
               "rollout_buffer_class", "lr_schedule")


def _pickled_entries(path: Path) -> list[str]:
    """Names of the entries of SB3's ``data`` member stored as pickles (``:serialized:``)."""
    with zipfile.ZipFile(path) as archive:
        data = _json_member(archive, "data", path)
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: the 'data' member is not an SB3 parameter table; use another model file")
    return sorted(k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v)


def _policy_fields(train: Any) -> dict[str, Any]:
    """The saved train config's fields that rebuild the policy, from either layout: nested by part
    (``{"policy": {"features_dim": ...}, "ppo": {...}}``) or flat (models saved before the parts).
    (`kartsim.rl.config.flat_train_dict` reads the whole of it; the trainer's config is above this module.)"""
    if not isinstance(train, dict):
        return {}
    nested = {k: v for part in ("policy", "ppo") if isinstance(train.get(part), dict) for k, v in train[part].items()}
    return nested or train


def safe_objects(payload: dict[str, Any], pickled: list[str], device: str, path: Path) -> dict[str, Any]:
    """SB3 ``custom_objects`` that replace every pickled `data` entry of a kartsim model with one
    rebuilt from its `payload` (kartsim_config.json): spaces from a probe env of the saved config,
    policy class and kwargs from `kartsim.rl.policies`; nothing is unpickled."""
    from kartsim.envs import EnvConfig, KartEnv
    from kartsim.errors import KartsimError
    from kartsim.rl.policies import policy_for, resolve_precision

    train = _policy_fields(payload.get("train"))
    env_dict = dict(payload["env"], track="circuit.png")  # spaces do not depend on the track
    try:
        probe = KartEnv(EnvConfig.from_dict(env_dict), render_mode=None)
    except KartsimError as exc:
        raise ModelFileError(f"{path}: its {CONFIG_MEMBER} does not describe a usable env ({exc})") from None
    try:
        obs_space, action_space = sb3_view_of_space(probe.observation_space), probe.action_space
    finally:
        probe.close()
    try:
        vision = bool(env_dict.get("vision"))
        precision = resolve_precision(str(train.get("precision", "fp32")), _concrete_device(device))
        policy, policy_kwargs = policy_for(vision, int(train.get("features_dim", 512)), precision)
        log_std = train.get("log_std_init")
        policy_kwargs["log_std_init"] = float(-0.5 if log_std is None else log_std)
        clip_range = float(train.get("clip_range", 0.2))
        # --lr-schedule linear pickles the schedule; the start value is enough to play or resume
        learning_rate = float(train.get("learning_rate") or 3e-4)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: its {CONFIG_MEMBER} has an invalid train section ({exc})") from None
    if isinstance(policy, str):  # "MlpPolicy": the class itself, as SB3 would have unpickled it
        from stable_baselines3 import PPO

        policy = PPO.policy_aliases[policy]
    objects: dict[str, Any] = {"observation_space": obs_space, "action_space": action_space, "policy_class": policy,
                               "policy_kwargs": policy_kwargs, "clip_range": clip_range, "learning_rate": learning_rate}
    objects.update({key: None for key in _NOT_NEEDED})
    unknown = [key for key in pickled if key not in objects]
    if unknown:
        raise ModelFileError(f"{path} has pickled entries kartsim does not rebuild ({', '.join(unknown)}); {TRUST_HINT}")
    return objects


def _concrete_device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else str(device)


def load_ppo(path: str | Path, *, env: Any = None, device: str = "auto", trust: bool = False, **kwargs: Any):
    """``PPO.load`` without running code from the file (see the module doc), with one-line errors for
    files that are not loadable models. `trust` (``--trust-model``) lets SB3 unpickle a model that is
    not kartsim's own (no ``kartsim_config.json``)."""
    from stable_baselines3 import PPO

    path = check_model_file(path)
    payload = read_kartsim_config(path)
    custom: dict[str, Any] | None = None
    if payload is not None:
        custom = safe_objects(payload, _pickled_entries(path), device, path)
    elif not trust:
        raise ModelFileError(
            f"{path} is not a kartsim model (no {CONFIG_MEMBER}) and loading it would unpickle code from it; {TRUST_HINT}"
        )
    try:
        return PPO.load(path, env=env, device=device, custom_objects=custom, **kwargs)
    except ModelFileError:
        raise
    except RuntimeError as exc:
        if custom is not None and "state_dict" in str(exc):
            raise ModelFileError(f"{path}: its weights (policy.pth) do not fit the network its {CONFIG_MEMBER} "
                                 "describes (was the file edited?); use another model file") from None
        raise ModelFileError(f"{path} cannot be loaded as a PPO model (RuntimeError: {str(exc).splitlines()[0]})") from None
    except ValueError as exc:
        if "space" in str(exc).lower():
            raise ModelFileError(f"{path} does not fit this environment: {str(exc).splitlines()[0]}") from None
        raise ModelFileError(f"{path} cannot be loaded as a PPO model: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # pickle / torch / zip / state-dict errors inside SB3
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


def read_policy_state(path: str | Path) -> dict[str, Any]:
    """The policy weights (``policy.pth``: name -> tensor) of a model zip, read as plain tensors
    (``torch.load(weights_only=True)``: no code from the file runs). ModelFileError when unreadable."""
    import io

    import torch

    path = check_model_file(path)
    with zipfile.ZipFile(path) as archive:
        data = archive.read("policy.pth")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # not tensors only, or damaged
        raise ModelFileError(f"{path}: policy.pth inside the model cannot be read as weights ({exc.__class__.__name__})") from None
    if not isinstance(state, dict):
        raise ModelFileError(f"{path}: policy.pth inside the model is not a table of weights")
    return state
