"""The fast training path: bf16 and fp32 vision models train, save, load with plain PPO.load and play."""

import subprocess
import sys
import zipfile

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_vision_precision_trains_and_plays(tmp_path, precision):
    from stable_baselines3 import PPO

    run = [sys.executable, "-m", "kartsim", "train", "--vision", "--precision", precision, "--timesteps", "64",
           "--n-steps", "16", "--batch-size", "32", "--vector-envs", "2", "--n-epochs", "1", "--track-name",
           "oval.png", "--save-name", f"p_{precision}", "--runs-dir", str(tmp_path / "runs"), "--models-dir",
           str(tmp_path / "models"), "--no-progress", "--seed", "0", "--checkpoint-freq", "0"]
    out = subprocess.run(run, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert f"Vision CNN precision: {precision}" in out.stdout
    model_path = tmp_path / "models" / f"p_{precision}_final.zip"
    with zipfile.ZipFile(model_path) as z:
        assert "kartsim_config.json" in z.namelist()
    model = PPO.load(model_path, device="cpu")
    assert model.policy.features_extractor.bf16 == (precision == "bf16")
    gif = tmp_path / "lap.gif"
    play = [sys.executable, "play_ppo.py", "--model", str(model_path), "--episodes", "1", "--max-steps", "20",
            "--record", str(gif)]
    out = subprocess.run(play, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert gif.stat().st_size > 0
