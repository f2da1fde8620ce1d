"""Training jobs in the background or on a Ray cluster: the same as `kartsim jobs`.

    python tools/track_cli.py sync --track-name circuit.png
    python tools/track_cli.py train --vision --track-name circuit.png --timesteps 5000000 \
        --save-name karting_vision_v1 --vector-envs 16 --checkpoint-freq 500000 --tensorboard --detach
    python tools/track_cli.py status
    python tools/track_cli.py fetch --path karting_vision_v1_final.zip --out karting_vision_v1.zip

Run `python tools/track_cli.py --help` (or `ACTION --help`) for every command and flag.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kartsim.cli.jobs_cmd import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
