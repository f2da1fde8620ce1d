"""Rebuild the bundled tracks (kartsim/tracks/*.png and their checkpoints files) reproducibly.

Usage: python tools/make_tracks.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kartsim.sim.trackgen import build_bundled_tracks  # noqa: E402

if __name__ == "__main__":
    for path in build_bundled_tracks(sys.argv[1] if len(sys.argv) > 1 else None):
        print(path)
