"""`kartsim compare`: a report (PNGs + HTML) from two telemetry CSVs."""

import json

import pandas as pd
import pytest

from kartsim.cli import main
from kartsim.apps.compare import compare, record_ai_laps
from kartsim.telemetry.laps import extract_laps
from kartsim.errors import ConfigError
from kartsim.telemetry import TELEMETRY_COLUMNS, read_telemetry


@pytest.fixture(scope="module")
def two_csvs(tmp_path_factory):
    d = tmp_path_factory.mktemp("laps")
    fast = record_ai_laps(d / "ai_laps.csv", "oval.png", "hard", laps=2)
    slow = record_ai_laps(d / "human_laps.csv", "oval.png", "easy", laps=2, seed=1)
    return fast, slow


def test_ai_laps_csv_has_the_training_schema(two_csvs):
    df = pd.read_csv(two_csvs[0])
    assert tuple(df.columns[: len(TELEMETRY_COLUMNS)]) == TELEMETRY_COLUMNS
    laps = extract_laps(read_telemetry(two_csvs[0]), "ai")
    assert [lap.number for lap in laps] == [1, 2]
    assert all(18.0 < lap.time < 25.0 for lap in laps)
    for lap in laps:
        assert lap.distance[0] < 5.0 and lap.distance[-1] > 440.0
        assert lap.elapsed[-1] <= lap.time


def test_compare_builds_a_report_from_two_csvs(two_csvs, tmp_path, capsys):
    fast, slow = two_csvs
    out = tmp_path / "report"
    assert main(["compare", str(slow), str(fast), "--track", "oval.png", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "human_laps" in text and "ai_laps" in text and "S1" in text
    for name in ("speed.png", "inputs.png", "gg.png", "lines.png", "delta.png", "report.html", "summary.json"):
        assert (out / name).stat().st_size > 500, name
    page = (out / "report.html").read_text()
    assert page.count("<img") == 5 and "ai_laps" in page
    summary = json.loads((out / "summary.json").read_text())
    a, b = summary["drivers"]
    assert b["lap_time"] < a["lap_time"] and b["gap"] < 0
    assert sum(b["sectors"]) == pytest.approx(b["lap_time"], abs=1e-6)
    assert 0.97 < b["ref_ratio"] < 1.03


def test_compare_errors(two_csvs, tmp_path):
    with pytest.raises(ConfigError, match="at least two"):
        compare([str(two_csvs[0])], tmp_path)
    partial = tmp_path / "partial.csv"
    df = pd.read_csv(two_csvs[0])
    df[df["lap"] == 0].to_csv(partial, index=False)
    with pytest.raises(ConfigError, match="no complete lap"):
        compare([str(partial), str(two_csvs[0])], tmp_path / "r")
    assert main(["compare", str(two_csvs[0]), "missing.csv"]) == 2
    assert main(["compare", str(two_csvs[0]), "model.txt"]) == 2
