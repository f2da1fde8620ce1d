"""Issue 18 acceptance: the user guide (the vision quick start) walked command for command in a scratch
folder, verbatim apart from ``--timesteps``, failing on any error.

The scratch folder is a checkout as the user has it (the repo's root files and tools/, linked). The
guide's "Visit Modal dashboard" step is `status --wait` (README: the guide's Modal steps, here). The
guide's MLP model `ppo_50m_master.zip` is one the user trained before: a tiny rays job of that name
stands in for it. Steps: 512 (local vision) + 2,048 (remote vision) + 512 (MLP) env steps; the
guide's other training commands (advanced tuning, migration options) are started and cancelled,
which checks every flag they give.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = "512"  # every --timesteps of the guide becomes this (one rollout of 4 or 16 karts)

pytestmark = pytest.mark.slow


@pytest.fixture
def checkout(tmp_path):
    work = tmp_path / "kartsim"
    work.mkdir()
    for item in ROOT.iterdir():
        if item.suffix in (".py", ".md") or item.name == "tools":
            (work / item.name).symlink_to(item)
    return work


def guide_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KARTSIM_")
           and k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    env.update(PYTHONPATH=str(ROOT), XDG_CONFIG_HOME=str(tmp_path / "config"), MPLBACKEND="Agg",
               PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", COLUMNS="200")
    return env


def sh(command: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    """Run one of the guide's commands (``python`` = this interpreter); its output, or fail."""
    argv = command.split()
    if argv[0] == "python":
        argv[0] = sys.executable
    argv = [TINY if i and argv[i - 1] == "--timesteps" else a for i, a in enumerate(argv)]
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"{command}\n{out}"
    assert "Traceback" not in out and "XDG_RUNTIME_DIR" not in out, f"{command}\n{out}"
    return out


def job_of(out: str) -> str:
    return re.search(r"started job (\S+) \(local", out).group(1)


def test_the_vision_guide_verbatim(checkout, tmp_path):
    env = guide_env(tmp_path)
    def run(command: str, **kw) -> str:
        return sh(command, checkout, env, **kw)

    # Quick Start 1-3
    run("python -m pip install opencv-python-headless pandas")
    out = run("python test_vision_env.py")
    for line in ("✓ Environment created", "Observation space: Dict('vision': Box(0, 255, (84, 84, 3)",
                 "'telemetry': Box(-10.0, 10.0, (9,)", "✓ Reset successful", "Vision shape: (84, 84, 3)",
                 "Telemetry shape: (9,)", "🏃 Taking 10 random steps...", "✅ Test completed!"):
        assert line in out, out
    out = run("python train_ppo_vision.py --timesteps 100000 --save-name test_vision --vector-envs 4")
    assert re.search(r"Using device: (cuda|cpu)", out) and "Creating new model with CnnPolicy" in out
    assert re.search(r"Starting training for 512 timesteps on (GPU|CPU)\.\.\.", out)

    # Remote Training 1-4 (the local backend)
    run("python tools/track_cli.py sync --track-name circuit.png")
    out = run("python tools/track_cli.py train --vision --track-name circuit.png --timesteps 5000000 "
              "--save-name karting_vision_v1 --vector-envs 16 --checkpoint-freq 500000 --tensorboard --detach")
    vision_job = job_of(out)
    assert "backend: local = a background process on this machine" in out
    out = run(f"python tools/track_cli.py status {vision_job} --wait")  # "Visit Modal dashboard"
    assert re.search(r"state:\s+succeeded", out) and "(100%)" in out
    run("python tools/track_cli.py fetch --path karting_vision_v1_final.zip --out karting_vision_v1.zip --force")
    assert (checkout / "karting_vision_v1.zip").is_file()
    assert (checkout / "kartsim-jobs" / "runs" / "karting_vision_v1" / "tb").is_dir()  # --tensorboard

    # the user's MLP model from before the guide (Migration Option 2 downloads it as a backup)
    mlp = job_of(run("python tools/track_cli.py train --timesteps 512 --save-name ppo_50m_master "
                     "--vector-envs 4 --detach"))
    run(f"python tools/track_cli.py status {mlp} --wait")
    run("python tools/track_cli.py fetch --path ppo_50m_master.zip --force")

    # Comparing Models (headless: no window, the episode is driven and reported)
    for model in ("ppo_50m_master.zip", "karting_vision_v1.zip"):
        out = run(f"python play_ppo.py --model {model}")
        assert "No display found" in out and re.search(r"Episode 1: .*ended: ", out), out

    # Telemetry Comparison: the snippet, verbatim, where the user ran the commands
    snippet = ('import pandas as pd\n\n# Load telemetry\ndf = pd.read_csv("telemetry_log.csv")\n\n'
               '# Plot comparison\nimport matplotlib.pyplot as plt\n'
               'df.plot(x="step", y=["speed", "lateral_g", "steering"])\nplt.show()\n')
    res = subprocess.run([sys.executable, "-c", snippet], cwd=checkout, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr

    # the guide's other training commands: accepted and started (then stopped: their steps are not needed)
    for command in (
        ("python tools/track_cli.py train --vision --timesteps 10000000 --save-name karting_advanced "
         "--vector-envs 16 --learning-rate 0.0001 --batch-size 512 --features-dim 1024 --frame-stack 4 "
         "--checkpoint-freq 1000000 --tensorboard --detach"),
        ("python tools/track_cli.py train --vision --timesteps 10000000 --save-name karting_vision_baseline "
         "--vector-envs 16 --detach"),
        "python tools/track_cli.py train --vision --timesteps 25000000 --save-name karting_vision_main --detach",
        ("python tools/track_cli.py train --vision --grayscale --frame-stack 1 --timesteps 100000 "
         "--save-name gray --detach"),
    ):
        job = job_of(run(command))
        run(f"python tools/track_cli.py cancel {job} --grace 60")

    # Troubleshooting and Next Steps name these files
    run("ls car.py racing_env_vision.py")
    assert (checkout / "KARTING_SIMULATOR.md").is_file()
