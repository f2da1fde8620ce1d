"""Loading a model file runs no code from it (issue 13, item 8); saved zips follow the umask (item 15).

The hostile zips below carry a pickle that creates a marker file when unpickled: every kartsim
command that loads a model must leave the marker absent (or refuse with a one-line error naming
``--trust-model``), and the one trusted load shows the payload is real.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kartsim.errors import ModelFileError

ROOT = Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears only if the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_bytes(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker))


def _rewrite(src: Path, dst: Path, *, data=None, drop=(), add=None) -> Path:
    """A copy of the zip `src` with `data` (a function of the parsed ``data`` JSON) applied, members
    in `drop` left out and `add` ({name: bytes}) added."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            if item.filename in drop or (add and item.filename in add):
                continue
            blob = zin.read(item)
            if item.filename == "data" and data is not None:
                blob = json.dumps(data(json.loads(blob))).encode()
            zout.writestr(item, blob)
        for name, blob in (add or {}).items():
            zout.writestr(name, blob)
    return dst


def _serialized(marker: Path) -> dict:
    return {":type:": "<class 'evil'>", ":serialized:": base64.b64encode(_evil_bytes(marker)).decode()}


@pytest.fixture(scope="module")
def model(trained_model) -> Path:
    return trained_model


def test_kartsim_models_store_no_pickle_of_their_own(model):
    from kartsim.rl.modelio import REWARD_STATS_MEMBER, VECNORMALIZE_MEMBER

    with zipfile.ZipFile(model) as archive:
        names = archive.namelist()
        stats = json.loads(archive.read(REWARD_STATS_MEMBER))
    assert VECNORMALIZE_MEMBER not in names
    assert stats["count"] == pytest.approx(64, abs=1e-3)


@pytest.mark.parametrize("entry", ["observation_space", "policy_class", "_last_obs", "lr_schedule"])
def test_pickles_in_sb3_data_never_run_for_a_kartsim_model(model, tmp_path, entry):
    """A kartsim model whose pickled `data` entries were replaced by a payload loads (those entries
    are rebuilt from kartsim_config.json) and the payload never runs."""
    from kartsim.rl.play import load_driver

    marker = tmp_path / "pwned"
    evil = _rewrite(model, tmp_path / "evil.zip", data=lambda d: {**d, entry: _serialized(marker)})
    driver = load_driver(evil)
    assert driver.model.num_timesteps == 64
    assert not marker.exists()


def test_an_unknown_pickled_entry_is_refused_naming_trust_model(model, tmp_path):
    from kartsim.rl.modelio import load_ppo

    marker = tmp_path / "pwned"
    evil = _rewrite(model, tmp_path / "evil.zip", data=lambda d: {**d, "surprise": _serialized(marker)})
    with pytest.raises(ModelFileError, match="--trust-model") as err:
        load_ppo(evil, device="cpu")
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_a_foreign_model_is_refused_unless_trusted(model, tmp_path):
    """No kartsim_config.json: refused in one line; with trust the payload runs (the test is real)."""
    from kartsim.rl.modelio import CONFIG_MEMBER, load_ppo

    marker = tmp_path / "pwned"
    foreign = _rewrite(model, tmp_path / "foreign.zip", drop=(CONFIG_MEMBER,),
                       data=lambda d: {**d, "surprise": _serialized(marker)})
    with pytest.raises(ModelFileError, match="not a kartsim model.*--trust-model"):
        load_ppo(foreign, device="cpu")
    assert not marker.exists()
    load_ppo(foreign, device="cpu", trust=True)
    assert marker.exists()


def test_cli_play_eval_compare_refuse_and_run_nothing(model, tmp_path):
    from kartsim.rl.modelio import CONFIG_MEMBER

    marker = tmp_path / "pwned"
    foreign = _rewrite(model, tmp_path / "foreign.zip", drop=(CONFIG_MEMBER,),
                       data=lambda d: {**d, "observation_space": _serialized(marker)})
    env = dict(os.environ, PYTHONPATH=str(ROOT), SDL_VIDEODRIVER="dummy")
    for args in (["play", "--model", str(foreign), "--no-window", "--max-steps", "5"],
                 ["eval", str(foreign), "--episodes", "1", "--max-steps", "5"],
                 ["compare", str(foreign), "ai:easy", "--track", "circuit", "--out", str(tmp_path / "rep")]):
        proc = subprocess.run([sys.executable, "-m", "kartsim", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "--trust-model" in proc.stderr.strip().splitlines()[-1]
    assert not marker.exists()


class _VecNormalizeLike:
    """Stands in for the VecNormalize an older kartsim pickled: an object with ``ret_rms``."""


def _old_format(model: Path, dst: Path, stats_pickle: bytes) -> Path:
    """`model` as kartsim saved it before reward_stats.json: the statistics in vecnormalize.pkl."""
    from kartsim.rl.modelio import REWARD_STATS_MEMBER, VECNORMALIZE_MEMBER

    return _rewrite(model, dst, drop=(REWARD_STATS_MEMBER,), add={VECNORMALIZE_MEMBER: stats_pickle})


def test_resume_never_unpickles_vecnormalize_without_trust(model, tmp_path):
    from kartsim.rl.train import TrainConfig, train

    marker = tmp_path / "pwned"
    evil = _old_format(model, tmp_path / "evil.zip", _evil_bytes(marker))
    lines: list[str] = []
    result = train(TrainConfig.from_dict(dict(resume=str(evil), timesteps=128, save_name="other", progress_bar=False, device="cpu",
                               runs_dir=str(tmp_path / "runs"), models_dir=str(tmp_path / "models"))),
                   given={"timesteps", "save_name"}, echo=lines.append)
    assert result.num_timesteps == 128
    assert not marker.exists()
    assert any("not restored" in line and "--trust-model" in line for line in lines)


def test_old_models_still_load_and_trusted_resume_restores_their_statistics(model, tmp_path):
    """A model saved before this change (statistics pickled in vecnormalize.pkl) plays without
    --trust-model, and --trust-model restores its statistics on resume."""
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    from kartsim.rl.modelio import read_reward_stats
    from kartsim.rl.play import load_driver

    saved = _VecNormalizeLike()
    saved.ret_rms = RunningMeanStd(shape=())
    saved.ret_rms.count = 42.0
    old = _old_format(model, tmp_path / "old.zip", pickle.dumps(saved))
    assert load_driver(old).model.num_timesteps == 64
    with pytest.raises(ModelFileError, match="--trust-model"):
        read_reward_stats(old)
    assert read_reward_stats(old, trust=True).count == 42.0


def test_saved_models_follow_the_umask(model, tmp_path):
    """Saved zips get 0666 & ~umask like any new file, not mkstemp's private 0600 (item 15)."""
    mask = os.umask(0)
    os.umask(mask)
    assert model.stat().st_mode & 0o777 == 0o666 & ~mask
