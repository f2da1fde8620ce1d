"""Property-based fuzzing (Hypothesis, bounded examples) of everything a user or a shared job store
hands kartsim: track images, sidecar JSON (legend, checkpoints), a model zip's
``kartsim_config.json``, ``job.json``, and the dashboard's request paths and bodies.

The only outcomes allowed: success, or a `KartsimError` with a one-line message (the dashboard: a
2xx, or a 4xx whose JSON names the problem). Anything else (a traceback, an HTTP 500) fails.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kartsim.errors import KartsimError

FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

# Any JSON value (NaN and infinities included: Python's json reads them), a few levels deep.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


def _one_line_error(exc: KartsimError) -> None:
    assert str(exc) and "\n" not in str(exc), repr(exc)


def _load_track(path: Path):
    """The track at `path`, or None after checking the KartsimError it raised is one line."""
    from kartsim.sim.track import Track

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return Track.load(path)
        except KartsimError as exc:
            _one_line_error(exc)
            return None


# ------------------------------------------------------------------------------------ track images

# surface colours (asphalt grey, kerb red/white, grass green, wall black) plus anything else
_colours = st.sampled_from([(128, 128, 128), (200, 30, 30), (255, 255, 255), (40, 160, 40), (0, 0, 0)]) | \
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))


@st.composite
def track_images(draw) -> np.ndarray:
    """A picture of blocks: sometimes a ring road on grass, then random rectangles painted over it."""
    size = draw(st.sampled_from([256, 300]))
    img = np.zeros((size, size, 3), np.uint8)
    if draw(st.booleans()):
        img[:] = (40, 160, 40)
        yy, xx = np.mgrid[:size, :size]
        r = np.hypot(yy - size / 2, xx - size / 2)
        img[(r > size * 0.25) & (r < size * 0.4)] = (128, 128, 128)
    for _ in range(draw(st.integers(0, 6))):
        y0, x0 = draw(st.integers(0, size - 1)), draw(st.integers(0, size - 1))
        h, w = draw(st.integers(1, size)), draw(st.integers(1, size))
        img[y0:y0 + h, x0:x0 + w] = draw(_colours)
    return img


@FUZZ
@given(image=track_images(), mode=st.sampled_from(["RGB", "RGBA", "L", "P", "I;16"]))
def test_track_images(tmp_path_factory, image, mode):
    from PIL import Image


    path = tmp_path_factory.mktemp("img") / "t.png"
    picture = Image.fromarray(image)
    picture = picture.convert("I;16") if mode == "I;16" else picture.convert(mode)
    picture.save(path)
    track = _load_track(path)
    if track is not None:
        assert track.length > 0 and len(track.gates) >= 4 and np.isfinite(track.width).all()


@FUZZ
@given(data=st.binary(max_size=2000))
def test_track_files_that_are_not_images(tmp_path_factory, data):
    from kartsim.sim.track import Track

    path = tmp_path_factory.mktemp("bin") / "t.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data if data[:1] == b"\x00" else data)
    with pytest.raises(KartsimError) as err:
        Track.load(path)
    _one_line_error(err.value)


# ------------------------------------------------------------------------------------- sidecar JSON

@pytest.fixture(scope="module")
def circuit(tmp_path_factory) -> Path:
    from PIL import Image

    from kartsim.sim.track import Track

    folder = tmp_path_factory.mktemp("circuit")
    Image.fromarray(Track.load("circuit.png").rgb).save(folder / "c.png")
    return folder / "c.png"


@st.composite
def legends(draw):
    base = {"scale_m_per_px": 0.25, "grey_tolerance": 25, "colors": [{"rgb": [128, 128, 128], "surface": "asphalt"}]}
    if draw(st.booleans()):
        return draw(json_values)
    key = draw(st.sampled_from(["scale_m_per_px", "grey_tolerance", "grey_min", "grey_max", "colors", "other"]))
    return {**base, key: draw(json_values)}


@st.composite
def checkpoints(draw):
    gate = st.lists(st.floats(-1e4, 1e4) | st.integers(-10, 3000), min_size=2, max_size=4)
    if draw(st.booleans()):
        return draw(json_values)
    return {"track": "c.png", "direction": draw(st.sampled_from(["ccw", "cw", "up", None])),
            "gates": draw(st.lists(gate, max_size=12) | json_values)}


@FUZZ
@given(legend=legends(), cps=checkpoints(), which=st.sampled_from(["legend", "checkpoints", "both"]))
def test_sidecar_json(circuit, legend, cps, which):

    legend_path = circuit.with_suffix(".json")
    cp_path = circuit.with_name("c.checkpoints.json")
    for p in (legend_path, cp_path):
        p.unlink(missing_ok=True)
    if which in ("legend", "both"):
        legend_path.write_text(json.dumps(legend))
    if which in ("checkpoints", "both"):
        cp_path.write_text(json.dumps(cps))
    track = _load_track(circuit)
    if track is not None:
        assert track.length > 0 and len(track.gates) >= 4


# ------------------------------------------------------------------ a model zip's kartsim_config.json

@pytest.fixture(scope="module")
def model(trained_model) -> Path:
    return trained_model


_CONFIG_PATHS = ["env", "train", "num_timesteps", "env.track", "env.vision", "env.frame_stack", "env.image_size",
                 "env.ray_range_m", "env.race", "env.race.action_repeat", "env.reward.progress", "env.kart.dt",
                 "env.ray_angles_deg", "train.features_dim", "train.log_std_init", "train.precision", "train.clip_range"]


@FUZZ
@given(where=st.sampled_from(_CONFIG_PATHS), value=json_values, whole=st.booleans())
def test_model_config_json(model, tmp_path_factory, where, value, whole):
    from kartsim.rl.modelio import CONFIG_MEMBER
    from kartsim.rl.play import load_driver

    with zipfile.ZipFile(model) as archive:
        payload = json.loads(archive.read(CONFIG_MEMBER))
    if whole:
        payload = value
    else:
        node = payload
        *parents, last = where.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    edited = tmp_path_factory.mktemp("edit") / "m.zip"
    with zipfile.ZipFile(model) as src, zipfile.ZipFile(edited, "w") as dst:
        for item in src.infolist():
            blob = json.dumps(payload).encode() if item.filename == CONFIG_MEMBER else src.read(item)
            dst.writestr(item, blob)
    try:
        driver = load_driver(edited)
    except KartsimError as exc:
        _one_line_error(exc)
        return
    assert driver.model is not None


# ------------------------------------------------------------------------------------------ job.json

@st.composite
def job_records(draw):
    good = {"id": "j-0001", "backend": "local", "argv": ["--timesteps", "64"], "save_name": "j", "timesteps": 64,
            "attempts": [{"n": 1, "started": "2026-01-01T00:00:00", "pid": None}]}
    if draw(st.booleans()):
        return draw(json_values)
    key = draw(st.sampled_from(sorted(good) + ["vision", "tracks", "options", "attempts.0.n", "attempts.0.pid"]))
    value = draw(json_values)
    if key.startswith("attempts.0."):
        good["attempts"][0][key.rsplit(".", 1)[1]] = value
    else:
        good[key] = value
    return good


@FUZZ
@given(record=job_records(), raw=st.booleans())
def test_job_json(tmp_path_factory, capsys, record, raw):
    from kartsim.cli.jobs_cmd import main as jobs_main

    store = tmp_path_factory.mktemp("store")
    (store / "jobs" / "j-0001").mkdir(parents=True)
    text = json.dumps(record)
    (store / "jobs" / "j-0001" / "job.json").write_text(text[: len(text) // 2] if raw else text)
    for argv in (["status", "j-0001"], ["list"], ["logs", "j-0001"]):
        capsys.readouterr()
        code = jobs_main([*argv, "--store", str(store)])
        out, err = capsys.readouterr()
        assert code in (0, 1, 2), (argv, code)
        assert "Traceback" not in out + err
        if code == 2:
            assert err.startswith("error: ") and err.count("\n") == 1, err


# ------------------------------------------------------------------------------------------ dashboard

@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    from starlette.testclient import TestClient

    from kartsim.dashboard.app import create_app

    runs = tmp_path_factory.mktemp("dash") / "runs"
    (runs / "r" / "checkpoints").mkdir(parents=True)
    (runs / "r" / "config.json").write_text(json.dumps({"env": {"track": "oval.png"}, "train": {"timesteps": 10}}))
    with TestClient(create_app(runs), raise_server_exceptions=False) as client:
        yield client


_segment = st.text(st.characters(codec="utf-8", exclude_characters="/?#"), min_size=0, max_size=300) | \
    st.sampled_from(["r", "runs", "jobs", "..", "%2e%2e", "curves", "track", "a" * 2000])


def _check_response(r) -> None:
    assert r.status_code < 500, (r.request.url, r.status_code, r.text[:300])
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
        assert r.json().get("error"), r.text[:300]


@FUZZ
@given(prefix=st.sampled_from(["/api/run", "/api/live", "/api/laps", "/run", "/api", "/api/runs"]),
       parts=st.lists(_segment, max_size=4), query=st.text(max_size=40))
def test_dashboard_paths(dashboard, prefix, parts, query):
    from urllib.parse import quote

    path = prefix + "".join("/" + quote(p, safe="") for p in parts)
    _check_response(dashboard.get(path, params={"csv": query, "template": query}))


@FUZZ
@given(body=json_values | st.fixed_dictionaries({"laps": st.lists(
    st.fixed_dictionaries({"csv": json_values, "episode": json_values, "lap": json_values}), max_size=3)}),
    raw=st.binary(max_size=200), use_raw=st.booleans())
def test_dashboard_compare_bodies(dashboard, body, raw, use_raw):
    content = raw if use_raw else json.dumps(body).encode()
    _check_response(dashboard.post("/api/compare", content=content, headers={"content-type": "application/json"}))
