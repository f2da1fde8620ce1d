"""Vision PPO training speed, measured in one run: ours vs the network-only ceiling vs SB3 on CarRacing.

    python benchmarks/train_speed.py [--steps 16384] [--peer-envs 4] [--peer-steps 8192] [--no-peer]

Rows (steps/s = env steps trained per wall-clock second, collection + updates):
* kartsim default vision config (`kartsim train --vision` defaults: envs, n_steps, batch, epochs,
  precision, threads), measured after the first rollout so start-up is not counted;
* the network-only ceiling of that config: PPO's own update (same policy, batch, epochs,
  precision) on a full rollout buffer, no env: rollout size ÷ update time, with the updates timed
  inside the measured training run (so the ratio is the share of wall time the network gets) and,
  for reference, two standalone updates after it;
* stable-baselines3's default ``PPO("CnnPolicy")`` on Gymnasium's ``CarRacing-v3``, ``--peer-envs``
  envs (default: as many as ours) for ``--peer-steps`` steps; its default n_steps is 2048 per env,
  so the row includes an update only when peer-steps >= 2048 × peer-envs.

Peak memory is measured by ``benchmarks/memory.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time


def _model_and_env(n_envs: int | None = None):
    from stable_baselines3 import PPO

    from kartsim.rl.policies import policy_for, resolve_precision
    from kartsim.rl.train import TrainConfig, build_vec_env, configure_threads, env_config_for, resolve_device

    cfg = TrainConfig.from_dict(dict(vision=True, vector_envs=n_envs, seed=0)).resolved()
    device = resolve_device(cfg.run.device)
    threads = configure_threads(cfg, device)
    precision = resolve_precision(cfg.policy.precision, device)
    venv = build_vec_env(env_config_for(cfg), cfg.run.vector_envs, cfg.run.seed, telemetry_envs=[],
                         normalize_reward_gamma=cfg.ppo.gamma)
    policy, kwargs = policy_for(True, cfg.policy.features_dim, precision)
    kwargs["log_std_init"] = cfg.policy.log_std_init
    model = PPO(policy, venv, learning_rate=cfg.ppo.learning_rate, n_steps=cfg.ppo.n_steps, batch_size=cfg.ppo.batch_size,
                n_epochs=cfg.ppo.n_epochs, policy_kwargs=kwargs, device=device, seed=0, verbose=0)
    return model, cfg, precision, threads


def ours(steps: int) -> tuple[float, float, float, str]:
    """(training steps/s, ceiling steps/s timed inside that run, standalone ceiling steps/s, description).

    The ceiling is PPO's own update (``model.train()``: same policy, batch, epochs, precision, no env)
    on each full rollout buffer. Timing the updates *inside* the measured training run makes
    training / ceiling the share of wall time the network gets, whatever the machine's speed does
    meanwhile (it drifts by tens of percent within a minute here); the standalone figure (two more
    updates after the run) is printed for reference.
    """
    model, cfg, precision, threads = _model_and_env()
    rollout = cfg.ppo.n_steps * cfg.run.vector_envs
    update_s: list[float] = []
    update = model.train

    def timed_update() -> None:
        t = time.perf_counter()
        update()
        update_s.append(time.perf_counter() - t)

    model.train = timed_update  # what learn() calls after each rollout
    model.learn(rollout)  # first rollout + update: warm-up (numba, allocator, autocast caches)
    update_s.clear()
    t0 = time.perf_counter()
    model.learn(max(steps, rollout), reset_num_timesteps=False)
    trained = model.num_timesteps - rollout
    train_rate = trained / (time.perf_counter() - t0)
    in_run = len(update_s) * rollout / sum(update_s)
    t0 = time.perf_counter()
    repeats = 2
    for _ in range(repeats):
        update()
    standalone = repeats * rollout / (time.perf_counter() - t0)
    desc = (f"{cfg.run.vector_envs} envs x {cfg.ppo.n_steps} steps, batch {cfg.ppo.batch_size}, {cfg.ppo.n_epochs} epochs, "
            f"{precision}, {threads} torch thread(s)")
    model.get_env().close()
    return train_rate, in_run, standalone, desc


def peer(n_envs: int, steps: int) -> float | None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    try:
        venv = make_vec_env("CarRacing-v3", n_envs=n_envs, seed=0)
    except Exception as exc:
        print(f"(CarRacing-v3 unavailable: {exc}; install the bench extra: pip install -e .[bench])")
        return None
    model = PPO("CnnPolicy", venv, seed=0, verbose=0, device="cpu")
    t0 = time.perf_counter()
    model.learn(steps)
    rate = model.num_timesteps / (time.perf_counter() - t0)
    venv.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16384, help="env steps timed for our config")
    parser.add_argument("--peer-steps", type=int, default=8192,
                        help="env steps of SB3 CnnPolicy on CarRacing-v3 (8192 = one full rollout + update at 4 envs)")
    parser.add_argument("--peer-envs", type=int, default=None,
                        help="envs of the peer (default: as many as our config; SB3's default n_steps is 2048 "
                             "per env, so 16 envs need 32768 steps before its first update)")
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()

    # Ours before and after the peer (their mean against it), so a drift of the machine's speed
    # during the peer's minutes does not land on one side of the ratio only.
    rate_a, ceiling_a, standalone, desc = ours(args.steps)
    from kartsim.rl.train import TrainConfig

    n_envs = TrainConfig.from_dict(dict(vision=True)).resolved().run.vector_envs
    peer_envs = args.peer_envs or n_envs
    peer_rate = None if args.no_peer else peer(peer_envs, args.peer_steps)
    rate_b, ceiling_b, _, _ = ours(args.steps) if peer_rate else (rate_a, ceiling_a, None, None)
    rate, ceiling = (rate_a + rate_b) / 2, (ceiling_a + ceiling_b) / 2

    print(f"# train_speed  {time.strftime('%Y-%m-%d %H:%M')}  {platform.machine()}  "
          f"{os.cpu_count()} CPUs  load {os.getloadavg()[0]:.1f}")
    print(f"kartsim default vision config: {desc}")
    print(f"{'row':<60} {'steps/s':>10}")
    runs = f" (runs: {rate_a:,.0f}, {rate_b:,.0f})" if peer_rate else ""
    print(f"{'kartsim vision PPO (collection + updates)':<60} {rate:>10,.0f}{runs}")
    print(f"{'network-only ceiling: its updates, timed in the same run':<60} {ceiling:>10,.0f}")
    print(f"{'network-only ceiling: two more updates, standalone':<60} {standalone:>10,.0f}")
    if peer_rate:
        print(f"{f'SB3 PPO(CnnPolicy) on CarRacing-v3, {peer_envs} envs':<60} {peer_rate:>10,.0f}")
    print(f"ratio kartsim / ceiling: {rate / ceiling:.0%}")
    if peer_rate:
        print(f"ratio kartsim / SB3 CnnPolicy on CarRacing-v3: {rate / peer_rate:.1f}x")

if __name__ == "__main__":
    main()
