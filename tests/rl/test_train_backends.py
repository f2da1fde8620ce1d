"""Training: the --vec-backend / --vec-workers flags (worker processes started and stopped), and the
reward normalisation statistics saved in every model zip and restored by --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import pytest
from stable_baselines3.common.callbacks import BaseCallback

from kartsim.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

# Tiny PPO settings: a rollout is n_steps x vector_envs env steps.
TINY = dict(vector_envs=2, n_steps=32, batch_size=32, n_epochs=1, progress_bar=False)
TINY_SUBPROC_FLAGS = ["--vec-backend", "subproc", "--vec-workers", "2", "--vector-envs", "4", "--n-steps", "32",
                      "--batch-size", "64", "--n-epochs", "1", "--device", "cpu", "--no-progress"]

needs_proc = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the workers through /proc")


def _cfg(tmp_path: Path, **kw):
    from kartsim.rl.train import TrainConfig

    values = dict(TINY, runs_dir=str(tmp_path / "runs"), models_dir=str(tmp_path / "models"), device="cpu")
    values.update(kw)
    return TrainConfig.from_dict(values)


def _config_in_zip(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("kartsim_config.json"))


def _marked_pids(marker: str, exclude: int) -> set[int]:
    """Processes of ours whose environment holds `marker` (the train process's children inherit it)."""
    needle = f"KARTSIM_TEST_MARKER={marker}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (exclude, os.getpid()):
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.add(int(entry.name))
        except OSError:  # gone, or not ours
            continue
    return found


def _start_train(tmp_path: Path, marker: str, *args: str, **popen) -> subprocess.Popen:
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", PYTHONPATH=str(ROOT), KARTSIM_TEST_MARKER=marker)
    return subprocess.Popen([sys.executable, "-m", "kartsim", "train", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _wait_until_gone(marker: str, exclude: int, seconds: float = 15.0) -> set[int]:
    deadline = time.monotonic() + seconds
    left = _marked_pids(marker, exclude)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _marked_pids(marker, exclude)
    return left


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(vec_backend="threads"), "--vec-backend must be batched or subproc, not 'threads'"),
        (dict(vec_backend="subproc", vec_workers=0), "--vec-workers must be >= 1, not 0"),
        (dict(vec_backend="subproc", vec_workers=3), "--vec-workers 3 is more than --vector-envs 2"),
        (dict(vec_workers=2), "--vec-workers only applies to --vec-backend subproc"),
    ],
)
def test_validate_rejects_bad_vec_backend_values_with_one_line(tmp_path, changes, message):
    from kartsim.rl.train import validate

    cfg = _cfg(tmp_path, timesteps=1000, **changes).resolved()
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_default_workers_one_per_core_at_most_one_per_env(tmp_path, monkeypatch):
    import kartsim.rl.train as train_mod

    monkeypatch.setattr(train_mod, "usable_cores", lambda: 8)
    assert train_mod.vec_workers_for(_cfg(tmp_path, vec_backend="subproc", vector_envs=4)) == 4
    assert train_mod.vec_workers_for(_cfg(tmp_path, vec_backend="subproc", vector_envs=64)) == 8
    assert train_mod.vec_workers_for(_cfg(tmp_path, vec_backend="subproc", vector_envs=64, vec_workers=3)) == 3
    assert train_mod.vec_workers_for(_cfg(tmp_path, vector_envs=64)) == 0  # batched: no workers


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--vec-backend", "subproc", "--vec-workers", "0"], "error: --vec-workers must be >= 1, not 0"),
        (["--vec-backend", "subproc", "--vec-workers", "9", "--vector-envs", "4"],
         "error: --vec-workers 9 is more than --vector-envs 4 (each worker steps at least one kart); lower --vec-workers"),
        (["--vec-workers", "2"], "error: --vec-workers only applies to --vec-backend subproc"),
    ],
)
def test_cli_bad_vec_flags_exit_2_with_one_line(tmp_path, capsys, argv, message):
    from kartsim.cli import main

    code = main(["train", *argv, "--timesteps", "64", "--runs-dir", str(tmp_path / "runs"),
                 "--models-dir", str(tmp_path / "models"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_cli_unknown_vec_backend_is_an_argparse_error(capsys):
    from kartsim.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--vec-backend", "threads", "--timesteps", "64"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --vec-backend: invalid choice: 'threads'" in err and "Traceback" not in err


# ---------------------------------------------------------------- subproc runs, as the user runs them


@needs_proc
@pytest.mark.slow
def test_subproc_train_run_saves_a_subproc_model_and_leaves_no_workers(tmp_path):
    marker = uuid.uuid4().hex
    proc = _start_train(tmp_path, marker, *TINY_SUBPROC_FLAGS, "--timesteps", "256", "--checkpoint-freq", "128",
                        "--save-name", "sp", "--seed", "1")
    seen: set[int] = set()
    try:
        while proc.poll() is None:
            seen |= _marked_pids(marker, proc.pid)
            time.sleep(0.05)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "Vector envs: 4 (subproc backend: 2 worker processes)" in out
    assert "Starting training for 256 timesteps on CPU..." in out
    assert len(seen) >= 2  # the two workers (besides multiprocessing's forkserver and resource tracker)
    assert _wait_until_gone(marker, proc.pid) == set()

    from stable_baselines3 import PPO

    final = tmp_path / "models" / "sp_final.zip"
    assert PPO.load(final, device="cpu").num_timesteps == 256
    run_cfg = _config_in_zip(final)["train"]["run"]
    assert (run_cfg["vec_backend"], run_cfg["vec_workers"], run_cfg["vector_envs"]) == ("subproc", 2, 4)
    assert json.loads((tmp_path / "runs" / "sp" / "config.json").read_text())["train"]["run"]["vec_backend"] == "subproc"
    assert _config_in_zip(tmp_path / "runs" / "sp" / "checkpoints" / "sp_128_steps.zip")["train"]["run"]["vec_backend"] == "subproc"


@needs_proc
@pytest.mark.slow
def test_subproc_ctrl_c_in_the_terminal_saves_and_stops_the_workers(tmp_path):
    marker = uuid.uuid4().hex
    # its own process group, which the terminal's Ctrl-C reaches as a whole (workers included)
    proc = _start_train(tmp_path, marker, *TINY_SUBPROC_FLAGS, "--timesteps", "50000000", "--checkpoint-freq", "0",
                        "--save-name", "c", start_new_session=True)
    try:
        for line in proc.stdout:
            if line.startswith("Starting training"):
                break
        time.sleep(2.0)
        assert len(_marked_pids(marker, proc.pid)) >= 2
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    saved = Path("runs") / "c" / "checkpoints" / "c_interrupted.zip"
    assert f"saved {saved}" in out
    assert (tmp_path / saved).is_file()
    assert _wait_until_gone(marker, proc.pid) == set()


@pytest.mark.slow
def test_resume_keeps_the_vec_backend_unless_given(tmp_path):
    from kartsim.rl.modelio import read_kartsim_config
    from kartsim.rl.train import train

    lines: list[str] = []
    train(_cfg(tmp_path, timesteps=64, save_name="b", checkpoint_freq=0, vec_backend="subproc", vec_workers=2),
          echo=lines.append)
    assert "Vector envs: 2 (subproc backend: 2 worker processes)" in lines
    final = tmp_path / "models" / "b_final.zip"

    lines.clear()
    train(_cfg(tmp_path, resume=str(final), timesteps=128), given={"timesteps"}, echo=lines.append)
    assert "Vector envs: 2 (subproc backend: 2 worker processes)" in lines
    saved = read_kartsim_config(final)["train"]["run"]
    assert (saved["vec_backend"], saved["vec_workers"]) == ("subproc", 2)

    lines.clear()
    train(_cfg(tmp_path, resume=str(final), timesteps=192, vec_backend="batched"), given={"timesteps", "vec_backend"},
          echo=lines.append)
    assert "Vector envs: 2 (batched backend: one process)" in lines
    saved = read_kartsim_config(final)["train"]["run"]
    assert (saved["vec_backend"], saved["vec_workers"]) == ("batched", None)


# ---------------------------------------------------------------- reward normalisation statistics


class _RetRmsAtStart(BaseCallback):
    """Records the VecNormalize return statistics when learning starts (after any restore)."""

    start: tuple[float, float, float] | None = None

    def _on_training_start(self) -> None:
        rms = self.model.get_vec_normalize_env().ret_rms
        self.start = (float(rms.count), float(rms.mean), float(rms.var))

    def _on_step(self) -> bool:
        return True


def test_resume_continues_the_reward_normalisation_statistics(tmp_path):
    from stable_baselines3 import PPO

    from kartsim.rl.modelio import REWARD_STATS_MEMBER, read_reward_stats
    from kartsim.rl.train import train

    train(_cfg(tmp_path, timesteps=128, save_name="n", checkpoint_freq=64), echo=lambda s: None)
    ckpt = tmp_path / "runs" / "n" / "checkpoints" / "n_64_steps.zip"
    saved = read_reward_stats(ckpt)
    assert saved.count == pytest.approx(64, abs=1e-3)  # one return per env step, 2 envs x 32 steps
    assert read_reward_stats(tmp_path / "models" / "n_final.zip").count == pytest.approx(128, abs=1e-3)
    PPO.load(ckpt, device="cpu")  # the extra member does not bother plain SB3

    probe = _RetRmsAtStart()
    lines: list[str] = []
    # --force: resuming an older checkpoint of a finished run replaces its longer-trained final model
    train(_cfg(tmp_path, resume=str(ckpt), timesteps=256, force=True), given={"timesteps"}, callbacks=[probe],
          echo=lines.append)
    assert probe.start == pytest.approx((saved.count, float(saved.mean), float(saved.var)))
    assert not any("reward normalisation" in line for line in lines)
    # the resumed run's final model: the checkpoint's 64 returns plus the 192 of this run
    assert read_reward_stats(tmp_path / "models" / "n_final.zip").count == pytest.approx(256, abs=1e-3)

    # a zip without the statistics (an older kartsim): one line, then the statistics start afresh
    old = tmp_path / "old.zip"
    with zipfile.ZipFile(ckpt) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            if item.filename != REWARD_STATS_MEMBER:
                dst.writestr(item, src.read(item))
    probe = _RetRmsAtStart()
    lines.clear()
    result = train(_cfg(tmp_path, resume=str(old), timesteps=128, force=True), given={"timesteps"}, callbacks=[probe],
                   echo=lines.append)
    assert result.num_timesteps == 128
    assert [line for line in lines if "reward normalisation" in line] == [
        f"No reward normalisation statistics in {old} (no {REWARD_STATS_MEMBER}); estimating them from scratch"
    ]
    assert probe.start[0] == pytest.approx(1e-4)


def test_raw_reward_runs_save_no_statistics(tmp_path):
    from kartsim.rl.modelio import read_reward_stats
    from kartsim.rl.train import train

    train(_cfg(tmp_path, timesteps=64, save_name="raw", checkpoint_freq=0, normalize_reward=False), echo=lambda s: None)
    assert read_reward_stats(tmp_path / "models" / "raw_final.zip") is None


def test_resume_from_python_without_given_takes_the_fields_the_config_sets(tmp_path):
    from kartsim.rl.train import set_fields, train

    train(_cfg(tmp_path, timesteps=64, save_name="p", checkpoint_freq=0), echo=lambda s: None)
    cfg = _cfg(tmp_path, resume=str(tmp_path / "models" / "p_final.zip"), timesteps=128)
    assert {"run.timesteps", "run.resume"} <= set_fields(cfg) and "ppo.gamma" not in set_fields(cfg)
    result = train(cfg, echo=lambda s: None)  # was: the checkpoint's timesteps won, "already trained 64 steps"
    assert result.trained == 64
