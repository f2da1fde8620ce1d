"""Regression tests of issue 13's bad-input and fault sweep, one (or a few) per numbered item.

The data-loss items assert the user's bytes are unchanged. Model-file safety (item 8) and the
umask (item 15) are in test_model_safety.py, interrupts and kills in test_faults.py, the fuzz
targets in test_fuzz.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kartsim.errors import ConfigError, KartsimError

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(vector_envs=2, n_steps=32, batch_size=32, n_epochs=1, progress_bar=False, device="cpu")


def _kartsim(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), SDL_VIDEODRIVER="dummy")
    return subprocess.run([sys.executable, "-m", "kartsim", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _train_cfg(tmp_path: Path, **kw):
    from kartsim.rl.train import TrainConfig

    values = dict(TINY, runs_dir=str(tmp_path / "runs"), models_dir=str(tmp_path / "models"), telemetry_every=0,
                  checkpoint_freq=0)
    values.update(kw)
    return TrainConfig(**values)


# ------------------------------------------------------------------ 1. fetch --force deletes nothing else

def test_1_folder_fetch_into_the_current_folder_keeps_the_users_files(tmp_path, monkeypatch):
    from kartsim.jobs.service import fetch
    from kartsim.jobs.store import JobError, open_store

    store_dir = tmp_path / "store"
    for rel in ("runs/r1/checkpoints/r1_64_steps.zip", "runs/r1/checkpoints/r1_128_steps.zip"):
        (store_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (store_dir / rel).write_text(rel)
    store = open_store(store_dir)
    here = tmp_path / "work"
    here.mkdir()
    (here / "notes.txt").write_text("my notes")
    (here / "sub").mkdir()
    (here / "sub" / "lap.csv").write_text("step\n1\n")
    monkeypatch.chdir(here)
    before = _snapshot(here)

    rel, dest = fetch(store, "runs/r1/checkpoints", ".", force=True)
    assert dest == Path(".") / "checkpoints"
    assert sorted(p.name for p in (here / "checkpoints").iterdir()) == ["r1_128_steps.zip", "r1_64_steps.zip"]
    assert {k: v for k, v in _snapshot(here).items() if not k.startswith("checkpoints")} == before
    # --out DIR --force: the folder goes inside DIR (as a file does) and only DIR/checkpoints is replaced
    (here / "dl").mkdir()
    (here / "dl" / "keep.txt").write_text("keep")
    fetch(store, "runs/r1/checkpoints", "dl", force=True)
    fetch(store, "runs/r1/checkpoints", "dl", force=True)
    assert (here / "dl" / "keep.txt").read_text() == "keep"
    assert (here / "dl" / "checkpoints" / "r1_64_steps.zip").is_file()
    # the current folder itself (or one above it) is never the one replaced
    monkeypatch.chdir(here / "checkpoints")
    with pytest.raises(JobError, match="current folder"):
        fetch(store, "runs/r1/checkpoints", "..", force=True)
    assert (here / "checkpoints" / "r1_64_steps.zip").is_file()


# ------------------------------------------------------------ 2. compare / eval / telemetry plot overwrite

def _lap_csv(path: Path) -> bytes:
    from kartsim.compare import record_ai_laps

    record_ai_laps(path, "circuit.png", "hard", laps=1)
    return path.read_bytes()


def test_2_compare_never_overwrites_an_input_csv_or_a_full_folder(tmp_path):
    from kartsim.compare import compare

    mine = _lap_csv(tmp_path / "my_lap.csv")
    (tmp_path / "ai_easy.csv").write_text("not a lap")  # the name compare would record ai:easy to
    with pytest.raises(ConfigError, match="--force"):
        compare([str(tmp_path / "my_lap.csv"), "ai:easy"], tmp_path, "circuit.png", laps=1)
    with pytest.raises(ConfigError, match="lies in the --out folder"):
        compare([str(tmp_path / "my_lap.csv"), "ai:easy"], tmp_path, "circuit.png", laps=1, force=True)
    assert (tmp_path / "my_lap.csv").read_bytes() == mine
    assert (tmp_path / "ai_easy.csv").read_text() == "not a lap"
    report = tmp_path / "report"
    (report / "notes").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds files"):
        compare([str(tmp_path / "my_lap.csv"), "ai:easy"], report, "circuit.png", laps=1)
    assert compare([str(tmp_path / "my_lap.csv"), "ai:easy"], report, "circuit.png", laps=1, force=True).html.is_file()


def test_2_eval_json_and_telemetry_plot_out_refuse_without_force(tmp_path):
    (tmp_path / "scores.json").write_text("mine")
    proc = _kartsim("eval", "nothing.zip", "--json", "scores.json", cwd=tmp_path)
    assert proc.returncode == 2 and "--force" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "scores.json").read_text() == "mine"
    _lap_csv(tmp_path / "lap.csv")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "speed.png").write_bytes(b"my picture")
    proc = _kartsim("telemetry", "plot", "lap.csv", "--out", "plots", "--track-name", "circuit", cwd=tmp_path)
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert (tmp_path / "plots" / "speed.png").read_bytes() == b"my picture"
