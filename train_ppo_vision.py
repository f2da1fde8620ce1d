"""Train the vision (camera + telemetry, CNN) PPO driver: the same as `kartsim train --vision`.

    python train_ppo_vision.py --timesteps 100000 --save-name test_vision --vector-envs 4

Run `python train_ppo_vision.py --help` for every flag.
"""

from kartsim.rl.train_cmd import script_main

if __name__ == "__main__":
    raise SystemExit(script_main(vision=True))
