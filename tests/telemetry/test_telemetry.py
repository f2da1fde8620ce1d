"""Telemetry CSV schema, writer and plots."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from kartsim.errors import ConfigError
from kartsim.telemetry import TELEMETRY_COLUMNS, TelemetryWriter, distance_driven, plot_telemetry, read_telemetry

REQUIRED = ("step", "episode", "lap", "time_s", "x", "y", "speed", "lateral_g", "longitudinal_g", "steering",
            "throttle", "progress", "surface")


def test_schema_has_the_guide_columns():
    assert set(REQUIRED) <= set(TELEMETRY_COLUMNS)
    assert len(set(TELEMETRY_COLUMNS)) == len(TELEMETRY_COLUMNS)


def _log_real_env(path, steps=30):
    import numpy as np

    from kartsim.envs import EnvConfig, KartEnv

    env = KartEnv(EnvConfig(track="oval.png"))
    env.reset(seed=0)
    with TelemetryWriter(path) as writer:
        for i in range(steps):
            _, reward, term, trunc, info = env.step(np.array([0.1, 1.0], np.float32))
            writer.log(info, reward=reward)
            if i == steps // 2:
                writer.end_episode()
    return env


def test_writer_rows_from_real_env_info(tmp_path):
    path = tmp_path / "telemetry_log.csv"
    _log_real_env(path)
    df = pd.read_csv(path)
    assert tuple(df.columns) == TELEMETRY_COLUMNS
    assert len(df) == 30
    assert list(df["step"][:3]) == [1, 2, 3]
    assert df["speed"].iloc[-1] > df["speed"].iloc[0] >= 0  # full throttle
    assert set(df["episode"]) == {0, 1}
    assert set(df["surface"]) <= {"asphalt", "kerb", "grass", "wall"}
    assert df["time_s"].iloc[1] > df["time_s"].iloc[0]
    assert distance_driven(df)[-1] > 0


def test_appending_keeps_one_header(tmp_path):
    path = tmp_path / "t.csv"
    with TelemetryWriter(path) as w:
        w.log({"telemetry": {"x": 1, "y": 2, "speed": 3}})
    with TelemetryWriter(path, append=True) as w:
        w.log({"telemetry": {"x": 1, "y": 2, "speed": 4}})
    df = pd.read_csv(path)
    assert list(df["speed"]) == [3, 4]


def test_read_telemetry_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_telemetry(tmp_path / "none.csv")
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="not a kartsim telemetry log"):
        read_telemetry(other)


@pytest.mark.parametrize("x_axis", ["step", "distance"])
def test_plots_are_written(tmp_path, x_axis):
    path = tmp_path / "telemetry_log.csv"
    env = _log_real_env(path)
    track = env.race.stack.tracks[0]
    written = plot_telemetry(path, tmp_path / "plots", x_axis=x_axis, track_rgb=track.rgb, track_scale=track.scale)
    assert [p.name for p in written] == ["telemetry.png", "driven_line.png"]
    assert all(p.stat().st_size > 5000 for p in written)


def test_cli_telemetry_plot_reads_the_track_from_config_json(tmp_path, capsys):
    from kartsim.cli import main

    path = tmp_path / "telemetry_log.csv"
    _log_real_env(path)
    (tmp_path / "config.json").write_text(json.dumps({"env": {"track": "oval.png"}, "train": {}}))
    assert main(["telemetry", "plot", str(path), "--out", str(tmp_path / "out"), "--x", "distance"]) == 0
    out = capsys.readouterr().out
    assert "driven_line.png" in out and (tmp_path / "out" / "telemetry.png").is_file()
    assert main(["telemetry", "plot", str(path), "--track-name", "no-such-track"]) == 2
    assert "no-such-track" in capsys.readouterr().err
