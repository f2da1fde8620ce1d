"""Behaviour cloning and DAgger on stable-baselines3 policies.

`behaviour_clone` fits the policy's *mean* action (SB3's deterministic action) to the demonstrated
actions by mean squared error, with Adam on the actor's parameters only (features extractor, policy
layers, action head): the value head is left to PPO, and so is the action noise (``log_std``), so PPO
fine-tuning starts with the exploration the run asked for. Maximising the Gaussian's log-likelihood
instead also shrinks ``log_std`` towards the demonstrations' residual error, which left PPO almost no
exploration.

`dagger` is the DAgger loop: the cloned policy drives, the teacher (the AI driver, or a model) labels
every state it visits, the labelled states join the data set, and the policy is cloned again.

Why not the ``imitation`` package: its last release (1.0.1) requires gymnasium~=0.29 and
stable-baselines3~=2.2.1, so it cannot be a dependency next to gymnasium 1.x / SB3 2.9 (pip refuses
the combination); installed with ``--no-deps`` its BC trains our policies, but its DAgger needs the
``datasets`` package and an expert that acts on observations, while the AI driver acts on the kart's
state. The loss and loop here are the few lines of BC and DAgger that kartsim needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kartsim.rl.demos import DemoSet, concat, record


@dataclass
class BCReport:
    samples: int
    epochs: int
    train_mse: float
    val_mse: float | None
    steer_mae: float
    throttle_mae: float
    seconds: float

    def line(self) -> str:
        val = f", validation MSE {self.val_mse:.4f}" if self.val_mse is not None else ""
        return (f"behaviour cloning: {self.samples:,} samples x {self.epochs} epochs in {self.seconds:.0f} s, "
                f"train MSE {self.train_mse:.4f}{val}; mean |error| steering {self.steer_mae:.3f}, "
                f"throttle {self.throttle_mae:.3f}")


def actor_parameters(policy: Any) -> list[Any]:
    """The parameters that shape the mean action: everything but the value head and ``log_std``."""
    skip = {id(p) for p in policy.value_net.parameters()}
    skip |= {id(p) for p in policy.mlp_extractor.value_net.parameters()}
    if not policy.share_features_extractor:
        skip |= {id(p) for p in policy.vf_features_extractor.parameters()}
    if hasattr(policy, "log_std"):
        skip.add(id(policy.log_std))
    return [p for p in policy.parameters() if id(p) not in skip and p.requires_grad]


def _batch(obs: Any, idx: np.ndarray) -> Any:
    return {k: v[idx] for k, v in obs.items()} if isinstance(obs, dict) else obs[idx]


def _mean_actions(policy: Any, obs: Any):
    tensor, _ = policy.obs_to_tensor(obs)
    return policy.get_distribution(tensor).mode()


def predict_mean(policy: Any, obs: Any, batch_size: int = 512) -> np.ndarray:
    """The policy's mean actions (clipped to [-1, 1], as the env applies them) for a batch of observations."""
    import torch as th

    n = len(obs["telemetry"] if isinstance(obs, dict) else obs)
    out = []
    policy.set_training_mode(False)
    with th.no_grad():
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(n, start + batch_size))
            out.append(_mean_actions(policy, _batch(obs, idx)).float().cpu().numpy())
    return np.clip(np.concatenate(out), -1.0, 1.0) if out else np.zeros((0, 2), np.float32)


def action_errors(policy: Any, demos: DemoSet) -> tuple[float, float]:
    """Mean absolute error of the policy's actions on the demonstrations: (steering, throttle)."""
    err = np.abs(predict_mean(policy, demos.obs) - demos.actions)
    return float(err[:, 0].mean()), float(err[:, 1].mean())


def centre_action_bias(policy: Any, demos: DemoSet, idx: np.ndarray, rng: np.random.Generator,
                       sample: int = 2048) -> None:
    """Shift the action head's bias so the policy's mean action over the demonstrations is theirs.

    A fresh policy acts ~0 while a driver's mean throttle is ~0.8: the first gradient steps of the
    MSE then push every ReLU unit of the vision CNN's fusion layer off at once, and the clone
    collapses to one constant action (train MSE = the actions' variance, measured). Starting at the
    demonstrations' mean leaves only their variation to learn; an already cloned policy (DAgger
    rounds) is barely moved."""
    import torch as th

    if not len(idx) or not hasattr(policy, "action_net"):
        return
    pick = np.sort(rng.choice(idx, min(sample, len(idx)), replace=False))
    gap = np.clip(demos.actions[pick], -1.0, 1.0).mean(axis=0) - predict_mean(policy, _batch(demos.obs, pick)).mean(axis=0)
    with th.no_grad():
        policy.action_net.bias.add_(th.as_tensor(gap, dtype=policy.action_net.bias.dtype, device=policy.device))


def behaviour_clone(policy: Any, demos: DemoSet, *, epochs: int = 10, batch_size: int = 256,
                    learning_rate: float = 1e-3, val_fraction: float = 0.1, seed: int | None = 0,
                    echo: Callable[[str], None] = print) -> BCReport:
    """Fit `policy`'s mean action to ``demos.actions`` (MSE). The last `val_fraction` of the drives
    (whole episodes) are held out to report a validation error."""
    import torch as th

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    episodes = np.unique(demos.episode)
    held = set(rng.permutation(episodes)[: int(len(episodes) * val_fraction)].tolist()) if len(episodes) > 4 else set()
    val_mask = np.isin(demos.episode, list(held))
    train_idx, val_idx = np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
    device = policy.device
    target = th.as_tensor(np.clip(demos.actions, -1.0, 1.0), dtype=th.float32, device=device)
    centre_action_bias(policy, demos, train_idx, rng)
    optimizer = th.optim.Adam(actor_parameters(policy), lr=learning_rate)
    train_mse = float("nan")
    for _ in range(epochs):
        policy.set_training_mode(True)
        order = rng.permutation(train_idx)
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = np.sort(order[start:start + batch_size])
            loss = th.nn.functional.mse_loss(_mean_actions(policy, _batch(demos.obs, idx)), target[idx])
            optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(actor_parameters(policy), 1.0)
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        train_mse = total / max(count, 1)
    policy.set_training_mode(False)
    val_mse = None
    if len(val_idx):
        pred = predict_mean(policy, _batch(demos.obs, val_idx))
        val_mse = float(np.mean((pred - demos.actions[val_idx]) ** 2))
    steer, throttle = action_errors(policy, demos)
    report = BCReport(len(train_idx), epochs, round(train_mse, 5), None if val_mse is None else round(val_mse, 5),
                      round(steer, 4), round(throttle, 4), round(time.perf_counter() - started, 1))
    echo(report.line())
    return report


class _Learner:
    """The policy as a driver for `record` (deterministic mean actions)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def predict(self, obs: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        return predict_mean(self.policy, obs), None


def dagger(policy: Any, demos: DemoSet, env_cfg: Any, teacher: Any, *, rounds: int = 3, steps: int = 4000,
           n_karts: int = 8, epochs: int = 5, batch_size: int = 256, learning_rate: float = 1e-3,
           seed: int | None = 0, echo: Callable[[str], None] = print) -> tuple[DemoSet, list[BCReport]]:
    """`rounds` rounds of: the policy drives `steps` steps, `teacher` (``"ai:LEVEL"`` or a factory
    ``race -> Teacher``) labels them, they join `demos`, the policy is cloned on all of it again.
    In round r (from 1) the teacher's own action is applied on a share 0.5**r of the steps (DAgger's
    beta: the early, poor policies do not drive the karts into states no good driver reaches).
    Returns the aggregated demonstrations and the BC report of each round."""
    reports = []
    for r in range(rounds):
        beta = 0.5 ** (r + 1)
        visited, _ = record(env_cfg, teacher, steps=steps, n_karts=n_karts, driver=_Learner(policy), mix=beta,
                            seed=None if seed is None else seed + 1000 + r)
        demos = concat([demos, visited])
        echo(f"DAgger round {r + 1}/{rounds}: {len(visited):,} states visited (policy driving, the teacher on "
             f"{100 * beta:.0f}% of the steps) and labelled by the teacher; {len(demos):,} samples in all")
        reports.append(behaviour_clone(policy, demos, epochs=epochs, batch_size=batch_size,
                                       learning_rate=learning_rate, seed=seed, echo=echo))
    return demos, reports
