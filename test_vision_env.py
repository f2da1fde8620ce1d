"""Quick-start check: `python test_vision_env.py` (same as `kartsim env test`)."""

import sys

from kartsim.cli import main

if __name__ == "__main__":
    sys.exit(main(["env", "test", *sys.argv[1:]]))
