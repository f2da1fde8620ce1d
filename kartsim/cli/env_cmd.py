"""`kartsim env test`: build an env, show its spaces, take a few random steps (the quick-start check)."""

from __future__ import annotations

import argparse

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    env = subparsers.add_parser("env", help="inspect the Gymnasium envs")
    sub = env.add_subparsers(dest="env_command", metavar="ENV_COMMAND", required=True)
    test = sub.add_parser("test", help="create an env, reset it and take random steps")
    test.add_argument("--rays", action="store_true", help="test the rays env (Kart-v0) instead of vision")
    test.add_argument("--track-name", default="circuit.png", help="track PNG, bundled name, folder or 'random'")
    test.add_argument("--camera", choices=("chase", "driver"), default="chase")
    test.add_argument("--grayscale", action="store_true")
    test.add_argument("--frame-stack", type=int, default=1)
    test.add_argument("--steps", type=int, default=10)
    test.add_argument("--seed", type=int, default=0)
    test.set_defaults(func=run_test)


def run_test(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import kartsim.envs  # noqa: F401  (registers the env ids)

    env_id = "kartsim/Kart-v0" if args.rays else "kartsim/KartVision-v0"
    kwargs = {"track": args.track_name}
    if not args.rays:
        kwargs.update(camera=args.camera, grayscale=args.grayscale, frame_stack=args.frame_stack)
    env = gym.make(env_id, **kwargs)
    print(f"✓ Environment created: {env_id} on {args.track_name}")
    print(f"  Observation space: {env.observation_space}")
    print(f"  Action space: {env.action_space}")
    obs, info = env.reset(seed=args.seed)
    print("✓ Reset successful")
    if isinstance(obs, dict):
        print(f"  Vision shape: {obs['vision'].shape}")
        print(f"  Telemetry shape: {obs['telemetry'].shape}")
    else:
        print(f"  Rays shape: {obs.shape}")
    print(f"🏃 Taking {args.steps} random steps...")
    env.action_space.seed(args.seed)
    total = 0.0
    for _ in range(args.steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        total += reward
        if terminated or truncated:
            obs, info = env.reset()
    tel = info.get("telemetry", {})
    print(f"  reward {total:+.3f}, speed {tel.get('speed', 0.0):.2f} m/s, progress {info.get('progress', 0.0):.1f} m")
    env.close()
    print("✅ Test completed!")
    return 0 if np.isfinite(total) else 1
