"""Training: flags reach the model and env, run outputs, checkpoints, resume, interrupt, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kartsim.errors import ConfigError, KartsimError, ModelFileError

ROOT = Path(__file__).resolve().parents[2]

# Tiny PPO settings: a rollout is n_steps x vector_envs env steps.
TINY = dict(vector_envs=2, n_steps=32, batch_size=32, n_epochs=1, progress_bar=False)


def _run(script: str, *args: str, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _config_in_zip(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("kartsim_config.json"))


def _cfg(tmp_path: Path, **kw):
    from kartsim.rl.train import TrainConfig

    values = dict(TINY, runs_dir=str(tmp_path / "runs"), models_dir=str(tmp_path / "models"), device="cpu")
    values.update(kw)
    return TrainConfig.from_dict(values)


# ---------------------------------------------------------------- validation (no env needed)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(batch_size=48), "does not divide"),
        (dict(batch_size=1), "--batch-size must be >= 2"),
        (dict(batch_size=128), "larger than a rollout"),
        (dict(features_dim=0), "--features-dim"),
        (dict(learning_rate=-1.0), "--learning-rate"),
        (dict(timesteps=0), "--timesteps"),
        (dict(vector_envs=0), "--vector-envs"),
        (dict(frame_stack=0), "--frame-stack"),
        (dict(checkpoint_freq=-5), "--checkpoint-freq"),
        (dict(save_name="../escape"), "--save-name"),
        (dict(camera="roof"), "--camera"),
    ],
)
def test_validate_rejects_bad_values_with_one_line(tmp_path, changes, message):
    from kartsim.rl.train import validate

    cfg = _cfg(tmp_path, **{"timesteps": 1000, **changes}).resolved()
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_cuda_without_cuda_is_a_clear_error(tmp_path):
    import torch

    from kartsim.rl.train import resolve_device

    if torch.cuda.is_available():
        assert resolve_device("cuda") == "cuda"
        return
    with pytest.raises(ConfigError, match="CUDA is not available on this machine; use --device cpu or auto"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"


def test_vision_only_flags_need_vision(capsys):
    from kartsim.cli import main

    assert main(["train", "--frame-stack", "4", "--timesteps", "10"]) == 2
    assert "--frame-stack only applies to vision training" in capsys.readouterr().err


def test_unknown_track_is_the_track_loaders_error(tmp_path):
    from kartsim.rl.train import train

    with pytest.raises(KartsimError, match="no-such-track"):
        train(_cfg(tmp_path, timesteps=64, track=["no-such-track.png"]))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unknown_env_option(tmp_path):
    from kartsim.rl.train import train

    with pytest.raises(ConfigError, match="unknown env option 'warp_speed'"):
        train(_cfg(tmp_path, timesteps=64, env_options={"warp_speed": 9}))


# ---------------------------------------------------------------- end to end, as the user runs it


@pytest.mark.slow
def test_train_ppo_rays_script_end_to_end(tmp_path):
    proc = _run(
        "train_ppo.py", "--timesteps", "256", "--save-name", "rays", "--vector-envs", "2", "--n-steps", "64",
        "--batch-size", "64", "--n-epochs", "1", "--checkpoint-freq", "128", "--tensorboard", "--device", "cpu",
        "--seed", "3", "--no-progress", cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Using device: cpu" in out
    assert "Creating new model with MlpPolicy" in out
    assert "Starting training for 256 timesteps on CPU..." in out

    from stable_baselines3 import PPO

    final = tmp_path / "models" / "rays_final.zip"
    run = tmp_path / "runs" / "rays"
    assert final.is_file() and (run / "rays_final.zip").is_file()
    model = PPO.load(final, device="cpu")  # plain SB3 load ignores kartsim_config.json
    assert model.num_timesteps == 256
    assert model.observation_space.shape == (26,)  # the rich rays observation, kartsim train's default
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["rays_128_steps.zip", "rays_256_steps.zip"]
    payload = _config_in_zip(run / "checkpoints" / "rays_128_steps.zip")
    assert payload["env"]["vision"] is False and payload["train"]["run"]["seed"] == 3
    assert payload["env"]["ray_observation"] == "rich" and payload["train"]["task"]["observation"] == "rich"
    assert payload["num_timesteps"] == 128
    assert json.loads((run / "config.json").read_text())["train"]["run"]["save_name"] == "rays"

    # TensorBoard with the racing metrics
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((run / "tb").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "racing/total_laps" in acc.Tags()["scalars"]

    # telemetry CSV of env 0, one row per step
    import pandas as pd

    from kartsim.telemetry import TELEMETRY_COLUMNS

    df = pd.read_csv(run / "telemetry_log.csv")
    assert tuple(df.columns) == TELEMETRY_COLUMNS
    assert len(df) == 256 // 2
    assert df["time_s"].iloc[1] > df["time_s"].iloc[0]
    assert set(df["surface"]) <= {"asphalt", "kerb", "grass", "wall"}

    # the same name again: refused, naming the flag
    again = _run("train_ppo.py", "--timesteps", "64", "--save-name", "rays", cwd=tmp_path)
    assert again.returncode == 2
    assert "already exists; pass --force" in again.stderr
    assert "Traceback" not in again.stderr


@pytest.mark.slow
def test_train_ppo_vision_script_every_flag_reaches_model_and_env(tmp_path):
    proc = _run(
        "train_ppo_vision.py", "--timesteps", "64", "--save-name", "vis", "--vector-envs", "2",
        "--learning-rate", "0.001", "--batch-size", "16", "--n-steps", "32", "--n-epochs", "2",
        "--features-dim", "64", "--frame-stack", "2", "--grayscale", "--camera", "driver",
        "--track-name", "oval.png", "--seed", "7", "--device", "cpu", "--checkpoint-freq", "0", cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Creating new model with CnnPolicy" in proc.stdout
    assert "Starting training for 64 timesteps on CPU..." in proc.stdout
    assert not (tmp_path / "runs" / "vis" / "checkpoints").exists()

    from stable_baselines3 import PPO

    from kartsim.rl.policies import KartVisionExtractor

    path = tmp_path / "models" / "vis_final.zip"
    model = PPO.load(path, device="cpu")
    assert model.learning_rate == pytest.approx(0.001)
    assert (model.batch_size, model.n_steps, model.n_epochs, model.n_envs) == (16, 32, 2, 2)
    assert isinstance(model.policy.features_extractor, KartVisionExtractor)
    assert model.policy.features_extractor.features_dim == 64
    image = model.observation_space["vision"]
    assert sorted(image.shape) == [2, 84, 84]  # 2 grayscale frames
    env = _config_in_zip(path)["env"]
    assert (env["track"], env["camera"], env["grayscale"], env["frame_stack"]) == ("oval.png", "driver", True, 2)
    assert _config_in_zip(path)["train"]["run"]["seed"] == 7


# ---------------------------------------------------------------- resume, interrupt, overwrite


@pytest.mark.slow
def test_resume_continues_the_step_count_in_the_same_run(tmp_path):
    from kartsim.rl.modelio import read_kartsim_config
    from kartsim.rl.train import train

    first = train(_cfg(tmp_path, timesteps=128, save_name="r", checkpoint_freq=64), echo=lambda s: None)
    assert first.num_timesteps == 128
    ckpt = tmp_path / "runs" / "r" / "checkpoints" / "r_64_steps.zip"
    assert ckpt.is_file()

    with pytest.raises(ConfigError, match="conflicts with the checkpoint"):
        train(_cfg(tmp_path, resume=str(ckpt), features_dim=128, timesteps=256), given={"features_dim", "timesteps"})
    with pytest.raises(ConfigError, match="already trained 64 steps"):
        train(_cfg(tmp_path, resume=str(ckpt), timesteps=64), given={"timesteps"})

    # the run's final model (128 steps) is not replaced by one resumed from 64 steps without --force
    with pytest.raises(ConfigError, match="holds 128 steps and resuming from 64 would replace it; pass --force"):
        train(_cfg(tmp_path, resume=str(ckpt), timesteps=256), given={"timesteps"})
    lines: list[str] = []
    second = train(_cfg(tmp_path, resume=str(ckpt), timesteps=256, n_epochs=3, force=True),
                   given={"timesteps", "n_epochs", "force"}, echo=lines.append)
    assert any(l.startswith(f"Resuming model from {ckpt}") for l in lines)
    assert second.num_timesteps == 256
    payload = read_kartsim_config(tmp_path / "models" / "r_final.zip")
    assert payload["num_timesteps"] == 256 and payload["train"]["ppo"]["n_epochs"] == 3
    names = sorted(p.name for p in (tmp_path / "runs" / "r" / "checkpoints").iterdir())
    assert "r_192_steps.zip" in names and "r_256_steps.zip" in names
    # telemetry of both parts in one CSV, the step column continuing
    import pandas as pd

    steps = pd.read_csv(tmp_path / "runs" / "r" / "telemetry_log.csv")["step"]
    assert steps.iloc[-1] == 256
    assert steps.is_monotonic_increasing and steps.is_unique  # the rows after step 64 were dropped, then re-logged
    assert any("dropped 32 row(s) logged after step 64" in line for line in lines)


def test_ctrl_c_saves_an_interrupted_checkpoint(tmp_path):
    from stable_baselines3.common.callbacks import BaseCallback

    from kartsim.rl.modelio import read_kartsim_config
    from kartsim.rl.train import train

    class CtrlC(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps >= 64:
                raise KeyboardInterrupt
            return True

    lines: list[str] = []
    result = train(_cfg(tmp_path, timesteps=10_000, save_name="i"), callbacks=[CtrlC()], echo=lines.append)
    assert result.interrupted and result.final_model is None
    saved = tmp_path / "runs" / "i" / "checkpoints" / "i_interrupted.zip"
    assert result.interrupted_model == saved and saved.is_file()
    assert read_kartsim_config(saved)["num_timesteps"] == 64
    assert any(f"Resume with: kartsim train --resume {saved} --timesteps 10000" in l for l in lines)
    assert not (tmp_path / "models" / "i_final.zip").exists()


def test_force_overwrites_an_existing_run(tmp_path):
    from kartsim.rl.train import train

    (tmp_path / "runs" / "f").mkdir(parents=True)
    (tmp_path / "runs" / "f" / "stale.txt").write_text("old")
    with pytest.raises(ConfigError, match="pass --force"):
        train(_cfg(tmp_path, timesteps=64, save_name="f"))
    train(_cfg(tmp_path, timesteps=64, save_name="f", force=True, checkpoint_freq=0), echo=lambda s: None)
    assert not (tmp_path / "runs" / "f" / "stale.txt").exists()
    assert (tmp_path / "models" / "f_final.zip").is_file()


def test_resume_of_a_file_that_is_not_a_model(tmp_path):
    from kartsim.rl.train import train

    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ModelFileError, match="not a model file"):
        train(_cfg(tmp_path, resume=str(bad), timesteps=64), given={"timesteps"})


@pytest.mark.slow
def test_quickstart_flow(tmp_path, capsys, monkeypatch):
    """`kartsim quickstart` trains, then records the first lap (here: too short a run to lap, which it
    says honestly); a second run reuses the model."""
    import kartsim.cli.quickstart_cmd as quickstart_cmd
    from kartsim.cli import main

    tiny = {**quickstart_cmd.QUICKSTART_TRAIN, **TINY}
    monkeypatch.setattr(quickstart_cmd, "QUICKSTART_TRAIN", tiny)
    argv = ["quickstart", "--timesteps", "128", "--max-steps", "15", "--runs-dir", str(tmp_path / "runs"),
            "--models-dir", str(tmp_path / "models")]
    code = main(argv)
    out = capsys.readouterr().out
    assert "Training the default rays driver on circuit.png" in out
    assert (tmp_path / "models" / "quickstart_final.zip").is_file()
    assert (tmp_path / "runs" / "quickstart" / "lap.mp4").is_file()  # MP4 where imageio-ffmpeg is installed
    if code == 1:
        assert "did not complete a lap" in out
    else:
        assert code == 0 and "Best lap:" in out and "x the reference lap" in out
    main(argv)
    assert "Found " in capsys.readouterr().out


def test_resume_a_final_model_to_train_longer(tmp_path):
    from kartsim.rl.train import train

    train(_cfg(tmp_path, timesteps=64, save_name="g", checkpoint_freq=0), echo=lambda s: None)
    final = tmp_path / "models" / "g_final.zip"
    result = train(_cfg(tmp_path, resume=str(final), timesteps=128), given={"timesteps"}, echo=lambda s: None)
    assert result.num_timesteps == 128 and result.run_dir == tmp_path / "runs" / "g"
    # under a new name: a new run folder, which must not exist yet
    (tmp_path / "runs" / "h").mkdir()
    with pytest.raises(ConfigError, match="pass --force"):
        train(_cfg(tmp_path, resume=str(final), timesteps=192, save_name="h"), given={"timesteps", "save_name"})


def test_an_interrupt_inside_a_numba_kernel_load_counts_as_ctrl_c():
    """numba turns a KeyboardInterrupt that lands while it loads a cached kernel into a SystemError."""
    from kartsim.rl.train import is_interrupt

    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as ki:
            raise SystemError("CPUDispatcher(<function _cast_rays_kernel>) returned a result with an exception set") from ki
    except SystemError as wrapped:
        assert is_interrupt(wrapped)
    assert is_interrupt(KeyboardInterrupt()) and not is_interrupt(SystemError("another problem"))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_real_ctrl_c_in_the_terminal(tmp_path):
    import signal
    import time

    env = dict(os.environ, SDL_VIDEODRIVER="dummy", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train_ppo.py"), "--timesteps", "50000000", "--save-name", "c", "--vector-envs",
         "2", "--n-steps", "64", "--batch-size", "64", "--n-epochs", "1", "--checkpoint-freq", "0"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        for line in proc.stdout:
            if line.startswith("Starting training"):
                break
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    saved = Path("runs") / "c" / "checkpoints" / "c_interrupted.zip"
    assert f"saved {saved}" in out
    assert f"Resume with: kartsim train --resume {saved} --timesteps 50000000" in out
    assert (tmp_path / saved).is_file()


def test_default_batch_size_fits_a_small_rollout(tmp_path):
    from kartsim.rl.train import TrainConfig, validate

    cfg = TrainConfig.from_dict(dict(vision=True, vector_envs=2, n_steps=100)).resolved()
    ppo = cfg.ppo
    assert ppo.n_steps * cfg.run.vector_envs % ppo.batch_size == 0 and ppo.batch_size <= 200
    validate(cfg)
    given = TrainConfig.from_dict(dict(vision=True, vector_envs=2, n_steps=100, batch_size=512)).resolved()
    with pytest.raises(ConfigError, match="larger than a rollout"):
        validate(given)


def test_vision_defaults_follow_the_kart_count():
    from kartsim.rl.train import TrainConfig, validate

    guide = TrainConfig.from_dict(dict(vision=True, vector_envs=4)).resolved()  # the guide's --vector-envs 4
    assert (guide.ppo.batch_size, guide.ppo.n_epochs, guide.policy.log_std_init) == (128, 6, -1.0)
    validate(guide)
    default = TrainConfig.from_dict(dict(vision=True)).resolved()  # 16 karts: unchanged
    assert (default.run.vector_envs, default.ppo.batch_size, default.ppo.n_epochs, default.policy.log_std_init) == \
        (16, 512, 3, -0.5)
    given = TrainConfig.from_dict(dict(vision=True, vector_envs=4, n_epochs=2, batch_size=256, log_std_init=0.0)).resolved()
    assert (given.ppo.batch_size, given.ppo.n_epochs, given.policy.log_std_init) == (256, 2, 0.0)  # flags win
    rays = TrainConfig.from_dict(dict(vector_envs=4)).resolved()
    assert (rays.ppo.n_epochs, rays.policy.log_std_init) == (5, -0.5)
