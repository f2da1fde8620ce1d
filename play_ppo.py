"""Drive a trained model: the same as `kartsim play`.

    python play_ppo.py --model models/karting_vision_v1_final.zip
    python play_ppo.py --model models/kart_rays_final.zip --record lap.gif

Run `python play_ppo.py --help` for every flag.
"""

from kartsim.cli.play_cmd import script_main

if __name__ == "__main__":
    raise SystemExit(script_main())
