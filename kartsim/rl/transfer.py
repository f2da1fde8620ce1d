"""``--init-from MODEL.zip [--init-parts cnn|policy|all]``: start a new run from another model's weights.

Parts: ``cnn`` = the vision features extractor (CNN, telemetry MLP and their fusion layer);
``policy`` = those plus the policy layers, the action head and the action noise (``log_std``): all but
the value function; ``all`` = every weight, the value function too. The weights are read as plain
tensors (`kartsim.rl.modelio.read_policy_state`), never by unpickling the model.

The first convolution adapts between RGB and grayscale with the same frame stack (an RGB filter's
three colour planes are summed for a grayscale run; a grayscale filter is split by the luma weights
for an RGB run, so both respond alike to a grey image); any other shape difference is an error that
names both shapes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from kartsim.errors import ModelFileError

INIT_PARTS = ("cnn", "policy", "all")
_EXTRACTORS = ("features_extractor.", "pi_features_extractor.", "vf_features_extractor.")
_POLICY = _EXTRACTORS + ("mlp_extractor.policy_net.", "action_net.", "log_std")
FIRST_CONV = "cnn.0.weight"
LUMA = (0.299, 0.587, 0.114)


def _wanted(key: str, parts: str) -> bool:
    if parts == "all":
        return True
    prefixes = _EXTRACTORS if parts == "cnn" else _POLICY
    return key.startswith(prefixes)


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _adapt_first_conv(w: Any, target: tuple[int, ...]) -> Any | None:
    """An RGB <-> grayscale version of first-convolution weights `w` of shape `target`, or None."""
    import torch

    out_c, in_src = w.shape[0], w.shape[1]
    in_dst = target[1]
    if tuple(w.shape[2:]) != tuple(target[2:]) or out_c != target[0]:
        return None
    if in_src == 3 * in_dst:  # RGB -> gray: per frame, the colour planes summed
        return w.reshape(out_c, in_dst, 3, *w.shape[2:]).sum(dim=2)
    if in_dst == 3 * in_src:  # gray -> RGB: each frame's plane split by the luma weights
        luma = torch.tensor(LUMA, dtype=w.dtype).view(1, 1, 3, 1, 1)
        return (w.unsqueeze(2) * luma).reshape(out_c, in_dst, *w.shape[2:])
    return None


def init_from(policy: Any, path: str | Path, parts: str = "all", *, vision: bool) -> dict[str, Any]:
    """Copy `parts` of the model zip `path`'s weights into `policy` (an SB3 policy of a new run).
    ModelFileError (one line) when the model is of the other observation kind or a shape differs.
    Returns the provenance record (path, sha256, parts, tensors copied, adapted layers)."""
    from kartsim.rl.modelio import read_kartsim_config, read_policy_state

    if parts not in INIT_PARTS:
        raise ModelFileError(f"--init-parts must be one of {', '.join(INIT_PARTS)}, not {parts!r}")
    payload = read_kartsim_config(path)
    if payload is not None and bool(payload["env"].get("vision")) != bool(vision):
        kind, want = ("vision", "rays") if payload["env"].get("vision") else ("rays", "vision")
        raise ModelFileError(f"--init-from {path} is a {kind} model but this run trains a {want} policy; "
                             f"start from a {want} model")
    if parts == "cnn" and not vision:
        raise ModelFileError("--init-parts cnn copies a vision CNN; rays runs take --init-parts policy or all")
    source = read_policy_state(path)
    target = policy.state_dict()
    merged, copied, adapted = dict(target), 0, []
    for key, value in target.items():
        if not _wanted(key, parts):
            continue
        if key not in source:
            raise ModelFileError(f"--init-from {path} has no weight {key} (a different network); use --init-parts cnn "
                                 "or a model trained by this kartsim")
        w = source[key]
        if tuple(w.shape) != tuple(value.shape):
            fixed = _adapt_first_conv(w, tuple(value.shape)) if key.endswith(FIRST_CONV) else None
            if fixed is None:
                raise ModelFileError(
                    f"--init-from {path}: {key} is {tuple(w.shape)} in that model but {tuple(value.shape)} in this run "
                    "(different image size, frame stack, features_dim or network); use the same settings")
            w = fixed
            adapted.append(key)
        merged[key] = w.to(dtype=value.dtype, device=value.device)
        copied += 1
    policy.load_state_dict(merged)
    return {"path": str(path), "sha256": sha256(path), "parts": parts, "tensors": copied,
            "adapted": sorted({k.split(".", 1)[1] for k in adapted}),
            "source_steps": (payload or {}).get("num_timesteps")}
