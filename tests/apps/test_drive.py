"""`kartsim drive` headless: SDL dummy video driver, scripted key events, telemetry CSV."""

import json
import os

import pandas as pd
import pytest

os.environ["SDL_VIDEODRIVER"] = "dummy"
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

from kartsim.cli import main  # noqa: E402
from kartsim.apps.drive import KeyboardControl, ScriptedEvents, drive_yourself  # noqa: E402
from kartsim.errors import ConfigError  # noqa: E402
from kartsim.telemetry import TELEMETRY_COLUMNS  # noqa: E402
from conftest import KeyboardBot, tiny_rays_model  # noqa: E402


def test_keyboard_control_is_smoothed():
    kc = KeyboardControl()
    kc.press("throttle")
    kc.press("right")
    s, t = kc.update(0.1)
    assert 0 < s < 1 and 0 < t < 1  # not instantly full
    for _ in range(10):
        s, t = kc.update(0.1)
    assert s == 1.0 and t == 1.0
    kc.release("right")
    kc.release("throttle")
    kc.press("brake")
    s, t = kc.update(0.1)
    assert 0 <= s < 1.0 and t < 1.0
    for _ in range(10):
        s, t = kc.update(0.1)
    assert s == 0.0 and t == -1.0
    kc.press("left")
    kc.press("right")  # both: no steering wish
    assert kc.update(0.1)[0] == 0.0


def test_drive_headless_with_scripted_keys_writes_a_csv(tmp_path):
    csv = tmp_path / "human_laps.csv"
    script = [(0.0, "down", "up"), (3.0, "down", "d"), (3.6, "up", "d"), (5.0, "up", "up"),
              (5.0, "down", "down"), (6.0, "up", "down"), (7.0, "down", "escape")]
    res = drive_yourself("oval.png", opponents=2, ai_level="easy", telemetry=csv, events=ScriptedEvents(script),
                realtime=False, render_every=10)
    assert res.quit and res.steps == pytest.approx(350, abs=2)  # 7 s at 50 Hz
    df = pd.read_csv(csv)
    assert tuple(df.columns) == TELEMETRY_COLUMNS
    assert len(df) == res.steps
    t = df["time_s"].to_numpy()
    thr, steer = df["throttle"].to_numpy(), df["steering"].to_numpy()
    assert thr[(t > 1.0) & (t < 3.0)].min() == 1.0  # full throttle after the ramp
    assert thr[(t > 5.5) & (t < 6.0)].max() < 0  # braking
    assert steer[(t > 3.4) & (t < 3.8)].max() > 0.2  # steered right (d)
    assert df["speed"].max() > 8.0
    assert set(df["position"].dropna().astype(int)) <= {1, 2, 3}
    assert len(res.standings) == 3
    with pytest.raises(ConfigError, match="already exists"):
        drive_yourself("oval.png", telemetry=csv, events=ScriptedEvents([(0.0, "quit")]), realtime=False)


def test_drive_records_laps_and_compares(tmp_path):
    csv = tmp_path / "human_laps.csv"
    res = drive_yourself("oval.png", telemetry=csv, events=KeyboardBot(), realtime=False, render_every=25, laps=2,
                max_time_s=120)
    assert res.laps == 2 and len(res.lap_times) == 2 and res.best_lap < 40
    df = pd.read_csv(csv)
    assert df["lap"].max() == 2 and (df["off_track"] == 0).mean() > 0.95
    out = tmp_path / "report"
    assert main(["compare", str(csv), "ai:hard", "--track", "oval.png", "--out", str(out), "--laps", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    human, ai = summary["drivers"]
    assert human["lap_time"] == pytest.approx(res.best_lap, abs=0.021)
    assert ai["lap_time"] < human["lap_time"]


def test_drive_cli_script(tmp_path, capsys):
    script = tmp_path / "keys.json"
    script.write_text(json.dumps([[0, "down", "up"], [2, "quit"]]))
    csv = tmp_path / "laps.csv"
    assert main(["drive", "--track-name", "oval.png", "--script", str(script), "--telemetry", str(csv)]) == 0
    assert "telemetry:" in capsys.readouterr().out
    assert len(pd.read_csv(csv)) == 100
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert main(["drive", "--script", str(bad), "--telemetry", str(tmp_path / "x.csv")]) == 2
    assert main(["drive", "--opponents", "40", "--script", str(script)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 2


def test_drive_with_a_model_ghost(tmp_path):
    model = tiny_rays_model(tmp_path / "ghost.zip")
    res = drive_yourself("oval.png", opponents=1, ghost=str(model), telemetry=tmp_path / "g.csv",
                events=ScriptedEvents([(0, "down", "up"), (3, "quit")]), realtime=False, render_every=10)
    assert [row["kart"] for row in res.standings] != [] and len(res.standings) == 2  # the ghost is not classified
    assert {row["kart"] for row in res.standings} == {0, 1}
