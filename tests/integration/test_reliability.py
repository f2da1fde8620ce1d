"""Regression tests of issue 13's bad-input and fault sweep, one (or a few) per numbered item.

The data-loss items assert the user's bytes are unchanged. Model-file safety (item 8) and the
umask (item 15) are in tests/rl/test_model_safety.py, interrupts and kills in test_faults.py, the fuzz
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

ROOT = Path(__file__).resolve().parents[2]
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
    return TrainConfig.from_dict(values)


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
    from kartsim.apps.compare import record_ai_laps

    record_ai_laps(path, "circuit.png", "hard", laps=1)
    return path.read_bytes()


def test_2_compare_never_overwrites_an_input_csv_or_a_full_folder(tmp_path):
    from kartsim.apps.compare import compare

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


# ------------------------------------------------------------------------- 3-5. run folder (see test_faults)

def test_3_ctrl_c_during_the_final_save_keeps_the_model(tmp_path, monkeypatch):
    """In-process: SIGINT while the final zip is written (the first save, no checkpoints)."""
    from kartsim.rl.train import train

    monkeypatch.setenv("KARTSIM_FAULT", "save:SIGINT")
    lines: list[str] = []
    result = train(_train_cfg(tmp_path, timesteps=64, save_name="s"), echo=lines.append)
    assert not result.interrupted and result.final_model.is_file()
    assert "Interrupted during the final save: waited for it to finish" in lines


def test_5_resume_keeps_the_first_command_and_lists_the_resumes(tmp_path):
    from kartsim.rl.train import train

    train(_train_cfg(tmp_path, timesteps=64, save_name="c", checkpoint_freq=64), echo=lambda s: None)
    config = tmp_path / "runs" / "c" / "config.json"
    first = json.loads(config.read_text())
    final = tmp_path / "models" / "c_final.zip"
    train(_train_cfg(tmp_path, resume=str(final), timesteps=128), given={"timesteps"}, echo=lambda s: None)
    doc = json.loads(config.read_text())
    assert doc["started"] == first["started"] and doc["command"] == first["command"]
    assert [r["resume"] for r in doc["resumes"]] == [str(final)]
    assert doc["train"]["run"]["timesteps"] == 128


# ------------------------------------------------------------------------------- 11. every value checked

@pytest.mark.parametrize("changes, message", [
    (dict(ent_coef=float("nan")), "--ent-coef must be a finite number, not nan"),
    (dict(clip_range=float("nan")), "--clip-range must be a finite number"),
    (dict(clip_range=float("inf")), "--clip-range must be a finite number"),
    (dict(gamma=float("nan")), "--gamma must be a finite number"),
    (dict(learning_rate=float("inf")), "--learning-rate must be a finite number"),
    (dict(vector_envs="4"), "--vector-envs must be a whole number"),
    (dict(precision="bf16"), "--precision bf16 only applies to the vision CNN"),
])
def test_11_train_flags_nan_inf_and_types(tmp_path, changes, message):
    from kartsim.rl.train import validate

    with pytest.raises(ConfigError) as err:
        validate(_train_cfg(tmp_path, timesteps=64, **changes).resolved())
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("option, message", [
    ({"max_episode_steps": "abc"}, "race.max_episode_steps must be a whole number, not 'abc'"),
    ({"track": 123}, "track must be"),
    ({"ray_range_m": 0}, "ray_range_m must be between 1 and 1000"),
    ({"reward.progress": float("nan")}, "reward.progress must be a finite number"),
    ({"action_repeat": 1_000_000_000}, "race.action_repeat must be between 1 and 100"),
    ({"random_start": "yes"}, "race.random_start must be true or false"),
    ({"kart.dt": 0}, "kart.dt must be between"),
    ({"weather": "snow"}, "race.weather must be one of"),
])
def test_11_env_options_are_checked_before_the_run_folder_exists(tmp_path, option, message):
    from kartsim.rl.train import train

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        train(_train_cfg(tmp_path, timesteps=64, save_name="bad", env_options=option), echo=lambda s: None)
    assert not (tmp_path / "runs" / "bad").exists() and not (tmp_path / "runs" / ".bad.lock").exists()


def test_11_the_same_checks_guard_saved_configs_and_gym_make():
    import gymnasium as gym

    from kartsim.envs import EnvConfig

    with pytest.raises(ConfigError, match="reward.lap must be a finite number"):
        EnvConfig.from_dict({"reward": {"lap": float("inf")}})
    for bad in (None, 123, {"a": 1}):
        with pytest.raises(KartsimError):
            gym.make("kartsim/Kart-v0", track=bad)


# ----------------------------------------------------------------------------------- 13, 14. tracks

def test_13_greyscale_track_images_are_refused_in_one_line(tmp_path):
    import numpy as np
    from PIL import Image

    from kartsim.errors import TrackError
    from kartsim.sim.track import Track

    rgb = Track.load("circuit.png").rgb
    Image.fromarray(rgb).convert("L").save(tmp_path / "grey8.png")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(tmp_path / "grey16.png")
    for name in ("grey8.png", "grey16.png"):
        with pytest.raises(TrackError, match="greyscale image.*save it as an RGB PNG") as err:
            Track.load(tmp_path / name)
        assert "\n" not in str(err.value)


def test_14_a_checkpoints_file_needs_gates_spread_along_the_lap(tmp_path):
    from PIL import Image

    from kartsim.errors import TrackError
    from kartsim.sim.track import Track

    track = Track.load("circuit.png")
    Image.fromarray(track.rgb).save(tmp_path / "t.png")
    gates_px = (track.gates / track.scale).tolist()
    cases = {"one gate": gates_px[:1], "all in the first third": gates_px[: len(gates_px) // 3]}
    for what, gates in cases.items():
        (tmp_path / "t.checkpoints.json").write_text(json.dumps({"track": "t.png", "gates": gates}))
        with pytest.raises(TrackError, match="spread along it"):
            Track.load(tmp_path / "t.png")
    spread = gates_px[:: max(1, len(gates_px) // 6)]
    (tmp_path / "t.checkpoints.json").write_text(json.dumps({"track": "t.png", "gates": spread}))
    assert len(Track.load(tmp_path / "t.png").gates) == len(spread)


def test_10_huge_or_deep_checkpoints_and_legend_files_are_one_line_errors(tmp_path):
    from PIL import Image

    from kartsim.errors import TrackError
    from kartsim.sim.track import Track

    Image.fromarray(Track.load("circuit.png").rgb).save(tmp_path / "t.png")
    cp = tmp_path / "t.checkpoints.json"
    cp.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(TrackError, match="nested too deeply"):
        Track.load(tmp_path / "t.png")
    cp.write_text(json.dumps({"gates": [[1, 2, 3, 4]] * 200_000}))
    with pytest.raises(TrackError, match="over 2000 kB"):
        Track.load(tmp_path / "t.png")
    cp.unlink()
    (tmp_path / "t.json").write_text("{" * 50_000)
    with pytest.raises(TrackError, match="legend"):
        Track.load(tmp_path / "t.png")


# ------------------------------------------------------------------------- 9. dashboard: never a 500

@pytest.fixture
def dashboard(tmp_path):
    from starlette.testclient import TestClient

    from kartsim.dashboard.app import create_app

    runs = tmp_path / "runs"
    runs.mkdir()
    with TestClient(create_app(runs), raise_server_exceptions=False) as client:
        client.runs = runs
        yield client


def _run_folder(runs: Path, name: str, csv_text: str | None = None, config: str | None = None) -> Path:
    run = runs / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / f"{name}_64_steps.zip").write_bytes(b"PK")
    (run / "config.json").write_text(config or json.dumps({"env": {"track": "oval.png"}, "train": {"timesteps": 100}}))
    if csv_text is not None:
        (run / "telemetry_log.csv").write_text(csv_text)
    return run


def test_9_bad_run_files_and_requests_are_never_a_server_error(dashboard):
    from kartsim.telemetry import TELEMETRY_COLUMNS

    header = ",".join(TELEMETRY_COLUMNS)
    row = ",".join("0" for _ in TELEMETRY_COLUMNS)
    _run_folder(dashboard.runs, "good", f"{header}\n{row}\n")
    _run_folder(dashboard.runs, "inf", f"{header}\n{row}\n" + "inf" + row[1:] + "\n")
    _run_folder(dashboard.runs, "huge", f"{header}\n{row}\n" + "1e308" + row[1:] + "\n")
    _run_folder(dashboard.runs, "deep", config="[" * 100_000 + "]" * 100_000)
    r = dashboard.get("/api/runs")
    assert r.status_code == 200, r.text
    assert {"good", "inf", "huge", "deep"} <= {run["name"] for run in r.json()["runs"]}
    for path in ("/api/run/runs/deep", "/api/run/runs/inf", "/api/run/runs/huge", "/api/run/runs/inf/curves",
                 "/api/run/runs/" + "a" * 1500, "/api/run/runs/" + "b" * 1500 + "/curves"):
        r = dashboard.get(path)
        assert r.status_code < 500, (path, r.text[:300])
        assert r.status_code == 200 or r.json()["error"], (path, r.text[:300])
    for body in ('{"laps": [{"csv": "x", "episode": 1e999, "lap": 1}]}', "[" * 100_000 + "]" * 100_000,
                 '{"laps": [{"csv": "x", "episode": "NaN", "lap": 1}]}'):
        r = dashboard.post("/api/compare", content=body, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500 and r.json()["error"], (body[:40], r.status_code, r.text[:200])


# -------------------------------------------------------------------------- 10, 16. damaged job records

def _job_store(tmp_path: Path, job_json: str) -> Path:
    store = tmp_path / "store"
    (store / "jobs" / "bad-0001").mkdir(parents=True)
    (store / "jobs" / "bad-0001" / "job.json").write_text(job_json)
    return store


@pytest.mark.parametrize("job_json", [
    '{"attempts": "lots"}',
    json.dumps({"id": "bad-0001", "backend": "local", "argv": [], "save_name": "b", "timesteps": 5, "attempts": []}),
    json.dumps({"id": "bad-0001", "backend": "local", "argv": [], "save_name": "b", "timesteps": "5",
                "attempts": [{"n": 1, "started": "now"}]}),
    "[" * 100_000 + "]" * 100_000,
    "{not json",
])
def test_10_a_damaged_job_json_is_one_line_and_list_still_works(tmp_path, capsys, job_json):
    from kartsim.cli.jobs_cmd import main as jobs_main

    store = _job_store(tmp_path, job_json)
    capsys.readouterr()
    assert jobs_main(["status", "bad-0001", "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert "damaged" in err or "not valid JSON" in err, err
    assert "unknown job" not in err and err.count("\n") == 1
    assert jobs_main(["list", "--store", str(store)]) == 0


def test_16_a_store_that_is_a_file_says_so(tmp_path, capsys):
    from kartsim.cli.jobs_cmd import main as jobs_main

    (tmp_path / "store.txt").write_text("not a store")
    assert jobs_main(["list", "--store", str(tmp_path / "store.txt")]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def test_16_tiny_checkpoint_freq_is_warned_about(tmp_path):
    from kartsim.rl.train import checkpoint_count_warning

    cfg = _train_cfg(tmp_path, timesteps=2048, checkpoint_freq=1).resolved()  # 2 karts: a zip every vector step
    assert checkpoint_count_warning(cfg).startswith("Warning: --checkpoint-freq 1 writes about 1,024 checkpoints")
    assert checkpoint_count_warning(_train_cfg(tmp_path, timesteps=2048, checkpoint_freq=512).resolved()) is None


# ------------------------------------------------------------------------------ 12. tracebacks

@pytest.mark.parametrize("args, message", [
    (["--length", "0"], "lap length 0.0 m is out of range"),
    (["--length", "nan"], "lap length nan m is out of range"),
    (["--seed", "-1"], "seed -1 is out of range"),
])
def test_12_track_new_bad_numbers(tmp_path, args, message):
    proc = _kartsim("track", "new", str(tmp_path / "t.png"), *args, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "t.png").exists()


def test_12_a_closed_pipe_is_no_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "kartsim", "track", "check", "circuit.png"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head` that has read enough: every write of the command fails
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize("action", ["left", {"steer": 1}, [[1, 2], [3]], None])
def test_12_wrong_actions_are_the_envs_own_message(action):
    import gymnasium as gym

    import kartsim.envs  # noqa: F401  (registers the ids)

    env = gym.make("kartsim/Kart-v0", track="oval.png")
    env.reset(seed=0)
    with pytest.raises(KartsimError, match=r"actions must (be numbers|have shape)"):
        env.step(action)


# ------------------------------------------------------------------------ 6. jobs sync keyed by content

def test_6_sync_keys_tracks_by_content(tmp_path):
    from PIL import Image

    from kartsim.jobs.store import open_store
    from kartsim.jobs.tracks import sync_track
    from kartsim.sim.trackgen import generate_track

    store = open_store(tmp_path / "store")
    for folder, seed in (("a", 1), ("b", 2), ("c", 3)):
        (tmp_path / folder).mkdir()
        Image.fromarray(generate_track(seed, size=512)).save(tmp_path / folder / ("circuit.png" if folder == "c" else "t.png"))
    (tmp_path / "a" / "t.json").write_text(json.dumps({"scale_m_per_px": 0.5}))
    first = sync_track(store, str(tmp_path / "a" / "t.png"))
    second = sync_track(store, str(tmp_path / "b" / "t.png"))
    assert first.name != second.name and first.name.startswith("t-") and second.name.startswith("t-")
    tracks = tmp_path / "store" / "tracks"
    assert (tracks / first.name).read_bytes() == (tmp_path / "a" / "t.png").read_bytes()
    assert (tracks / second.name).read_bytes() == (tmp_path / "b" / "t.png").read_bytes()
    assert (tracks / f"{Path(first.name).stem}.json").is_file()  # a's legend stays with a's image only
    assert not (tracks / f"{Path(second.name).stem}.json").exists()
    assert second.length_m < first.length_m  # b at the default 0.25 m/px, a at its legend's 0.5
    mine = sync_track(store, str(tmp_path / "c" / "circuit.png"))
    assert mine.name != "circuit.png" and not (tracks / "circuit.png").exists()  # the bundled one stays visible
    assert sync_track(store, str(tmp_path / "b" / "t.png")).name == second.name  # same content, same name


def test_16_bf16_without_native_support_is_said(tmp_path, monkeypatch):
    import kartsim.rl.policies as policies
    from kartsim.rl.train import train

    monkeypatch.setattr(policies, "bf16_supported", lambda device: False)
    lines: list[str] = []
    train(_train_cfg(tmp_path, vision=True, timesteps=64, save_name="b", precision="bf16", features_dim=64),
          echo=lines.append)
    assert any("Vision CNN precision: bf16 (emulated: this hardware has no native bf16" in line for line in lines)


@pytest.mark.parametrize("payload", [{"env": "circuit"}, {"env": {}, "train": []}, {"env": {}, "num_timesteps": "x"},
                                     {"env": {"frame_stack": "four"}}, "[" * 50_000 + "]" * 50_000])
def test_10_a_damaged_kartsim_config_json_is_a_one_line_model_error(tmp_path, payload):
    import zipfile

    from kartsim.errors import ModelFileError
    from kartsim.rl.modelio import CONFIG_MEMBER
    from kartsim.rl.play import load_driver
    from kartsim.rl.train import train

    train(_train_cfg(tmp_path, timesteps=64, save_name="k"), echo=lambda s: None)
    good = tmp_path / "models" / "k_final.zip"
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            text = payload if isinstance(payload, str) else json.dumps(payload)
            dst.writestr(item, text.encode() if item.filename == CONFIG_MEMBER else src.read(item))
    with pytest.raises(ModelFileError) as err:
        load_driver(bad)
    assert "\n" not in str(err.value)
