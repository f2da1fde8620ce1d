"""Issue 18 items 7 and 8: on a machine without a display, `kartsim drive` says so in one line and
exits 2 instead of hanging, and nothing prints SDL's "error: XDG_RUNTIME_DIR is invalid" (check_env's
human render check, scripted driving, the env test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def headless_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER", "XDG_RUNTIME_DIR")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=headless_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_drive_without_a_display_says_so_and_exits_2(tmp_path):
    res = run(["-m", "kartsim", "drive", "--laps", "1"], tmp_path, timeout=60)
    assert res.returncode == 2, res.stderr
    assert "No display found" in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert "XDG_RUNTIME_DIR" not in res.stderr + res.stdout
    assert not (tmp_path / "runs").exists()  # nothing written


def test_no_sdl_message_from_check_env_scripted_drive_or_env_test(tmp_path):
    code = ("import gymnasium as gym, kartsim.envs\n"
            "from gymnasium.utils.env_checker import check_env\n"
            "check_env(gym.make('kartsim/Kart-v0', track='oval.png').unwrapped)\n"
            "print('checked')\n")
    res = run(["-c", code], tmp_path)
    assert res.returncode == 0 and "checked" in res.stdout, res.stderr
    assert "XDG_RUNTIME_DIR" not in res.stderr
    (tmp_path / "keys.json").write_text(json.dumps([[0.0, "down", "up"], [1.0, "quit"]]))
    res = run(["-m", "kartsim", "drive", "--track-name", "oval.png", "--script", "keys.json",
               "--telemetry", "d.csv"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "XDG_RUNTIME_DIR" not in res.stderr + res.stdout
    res = run([str(ROOT / "test_vision_env.py")], tmp_path)
    assert res.returncode == 0 and "XDG_RUNTIME_DIR" not in res.stderr + res.stdout, res.stderr


def test_drive_telemetry_goes_where_runs_go():
    from kartsim.apps.drive import DEFAULT_TELEMETRY

    assert DEFAULT_TELEMETRY.parts == ("runs", "drive_laps.csv")
