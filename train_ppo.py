"""Train the rays (MLP) PPO driver: the same as `kartsim train`. Run `python train_ppo.py --help`."""

from kartsim.rl.train_cmd import script_main

if __name__ == "__main__":
    raise SystemExit(script_main(vision=False))
