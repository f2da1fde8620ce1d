"""`kartsim dashboard` without a browser: the data layer, the JSON API and the live websocket
(Starlette's TestClient), the live publishers, and the refusals (paths outside the runs folder,
malformed CSVs, runs deleted while open)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kartsim.apps.compare import record_ai_laps
from kartsim.dashboard.data import DashboardError, Library
from kartsim.telemetry.live import LivePublisher, TrainingLiveFeed, read_live, session_feed
from kartsim.telemetry import TELEMETRY_COLUMNS

pytest.importorskip("httpx2")
from starlette.testclient import TestClient  # noqa: E402

from kartsim.dashboard.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def lap_csvs(tmp_path_factory):
    d = tmp_path_factory.mktemp("dash_laps")
    fast = record_ai_laps(d / "ai_hard.csv", "oval.png", "hard", laps=1)
    slow = record_ai_laps(d / "ai_easy.csv", "oval.png", "easy", laps=1, seed=1)
    return fast, slow


def make_run(runs: Path, name: str, *, steps: int = 1000, track: str = "oval.png", csv: Path | None = None) -> Path:
    run = runs / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"env": {"track": track, "vision": False},
                                                 "train": {"timesteps": 10_000, "device": "cpu"},
                                                 "started": "2026-01-01T00:00:00"}))
    (run / "checkpoints" / f"{name}_{steps}_steps.zip").write_bytes(b"PK")
    if csv is not None:
        shutil.copyfile(csv, run / "telemetry_log.csv")
    return run


@pytest.fixture
def client(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    with TestClient(create_app(runs)) as c:
        c.runs = runs
        yield c


# ------------------------------------------------------------------------------------ path traversal


@pytest.mark.parametrize("ref", ["runs/../secret.csv", "runs/../../etc/passwd", "runs//etc/passwd",
                                 "/etc/passwd", "elsewhere/x.csv", "runs/a/../../secret.csv", "runs/~/x.csv"])
def test_a_csv_outside_the_runs_folder_is_refused(client, ref):
    (client.runs.parent / "secret.csv").write_text("step\n1\n")
    r = client.get("/api/laps", params={"csv": ref})
    assert r.status_code == 403, r.text
    assert "outside the runs folder" in r.json()["error"]


def test_a_symlink_out_of_the_runs_folder_is_refused(client, lap_csvs):
    outside = client.runs.parent / "outside"
    outside.mkdir()
    shutil.copyfile(lap_csvs[0], outside / "laps.csv")
    (client.runs / "link").symlink_to(outside, target_is_directory=True)
    r = client.get("/api/laps", params={"csv": "runs/link/laps.csv"})
    assert r.status_code == 403 and "outside the runs folder" in r.json()["error"]
    assert not [c for c in client.get("/api/csvs").json()["csvs"] if "link" in c["csv"]]
    r = client.post("/api/compare", json={"laps": [{"csv": "runs/link/laps.csv", "episode": 0, "lap": 1}]})
    assert r.status_code == 403


def test_run_names_that_leave_the_runs_folder_are_refused(client):
    lib = Library(client.runs)
    for name in ("..", ".", "a/b", "", "../runs"):
        with pytest.raises(DashboardError) as exc:
            lib.run_dir("runs", name)
        assert exc.value.status in (403, 404)
    for bad in ("/api/run/runs/..%2F..", "/api/run/elsewhere/x", "/api/live/run/runs/..%2Fx/track"):
        r = client.get(bad)
        assert r.status_code in (403, 404), bad
        assert "error" in r.json()


def test_a_track_outside_the_bundled_ones_is_refused(client, lap_csvs):
    shutil.copyfile(lap_csvs[0], client.runs / "a.csv")
    r = client.post("/api/compare", json={"laps": [{"csv": "runs/a.csv", "episode": 0, "lap": 1}],
                                          "track": "/etc/passwd"})
    assert r.status_code == 403 and "track" in r.json()["error"]


# ---------------------------------------------------------------------------------- malformed CSVs


def test_malformed_csv_gives_a_message_naming_the_line(client, lap_csvs):
    lines = Path(lap_csvs[0]).read_text().splitlines()
    lines[40] = "this,is,not,a,telemetry,row,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,"
    (client.runs / "broken.csv").write_text("\n".join(lines) + "\n")
    r = client.get("/api/laps", params={"csv": "runs/broken.csv"})
    assert r.status_code == 422
    msg = r.json()["error"]
    assert "malformed" in msg and "line 41" in msg, msg

    lines = Path(lap_csvs[0]).read_text().splitlines()
    cells = lines[30].split(",")
    cells[TELEMETRY_COLUMNS.index("speed")] = "fast"
    lines[30] = ",".join(cells)
    (client.runs / "words.csv").write_text("\n".join(lines) + "\n")
    msg = client.get("/api/laps", params={"csv": "runs/words.csv"}).json()["error"]
    assert "line 31" in msg and "'speed'" in msg and "not a number" in msg, msg


@pytest.mark.parametrize("content, words", [
    ("", "no complete header"),
    ("step,episode,la", "no complete header"),
    ("a,b,c\n1,2,3\n", "not a kartsim telemetry CSV"),
    (",".join(TELEMETRY_COLUMNS) + "\n", "no rows yet"),
    ("\x00\xff\xfe garbage \x00\n\x01\x02\n", "not a kartsim telemetry CSV"),
])
def test_empty_or_foreign_csvs_give_a_message(client, content, words):
    (client.runs / "odd.csv").write_bytes(content.encode("latin-1"))
    r = client.get("/api/laps", params={"csv": "runs/odd.csv"})
    assert r.status_code == 422, r.text
    assert words in r.json()["error"]


def test_a_truncated_csv_is_read_up_to_its_last_whole_line(client, lap_csvs):
    data = Path(lap_csvs[0]).read_bytes()
    cut = data[: len(data) - 37]  # the last row half-written
    (client.runs / "cut.csv").write_bytes(cut)
    r = client.get("/api/laps", params={"csv": "runs/cut.csv"})
    assert r.status_code == 200, r.text
    # and the file grows: the new rows are read, the lap appears when it is complete
    (client.runs / "cut.csv").write_bytes(data)
    r = client.get("/api/laps", params={"csv": "runs/cut.csv"})
    assert r.status_code == 200 and r.json()["count"] == 1


def test_a_malformed_tensorboard_file_and_half_written_config_give_messages(client):
    run = make_run(client.runs, "half")
    (run / "config.json").write_text('{"env": {"track": "oval.png"')  # cut short
    (run / "tb" / "PPO_1").mkdir(parents=True)
    (run / "tb" / "PPO_1" / "events.out.tfevents.1.host.0.0").write_bytes(b"\x00\x01garbage")
    s = client.get("/api/run/runs/half").json()
    assert any("not complete JSON" in w for w in s["warnings"])
    r = client.get("/api/run/runs/half/curves")
    assert r.status_code == 200
    assert r.json()["figures"] == [] and r.json()["messages"]


# ------------------------------------------------------------------------------- deleted while open


def test_a_run_deleted_while_open_answers_a_message(client, lap_csvs):
    run = make_run(client.runs, "gone", csv=lap_csvs[0])
    assert client.get("/api/run/runs/gone").status_code == 200
    assert client.get("/api/laps", params={"csv": "runs/gone/telemetry_log.csv"}).status_code == 200
    shutil.rmtree(run)
    for url in ("/api/run/runs/gone", "/api/run/runs/gone/curves"):
        r = client.get(url)
        assert r.status_code == 404 and "no longer exists" in r.json()["error"], url
    r = client.get("/api/laps", params={"csv": "runs/gone/telemetry_log.csv"})
    assert r.status_code == 404 and "no longer exists" in r.json()["error"]
    assert [x["name"] for x in client.get("/api/runs").json()["runs"]] == []


def test_live_websocket_reports_a_deleted_run(client):
    run = make_run(client.runs, "w")
    pub = LivePublisher(run / "live.feed", kind="train", name="w", hz=50)
    pub.publish({"karts": [[1.0, 2.0, 0.0, 3.0]], "ego": 0, "tel": {"speed": 3.0}})
    with client.websocket_connect("/ws/live/run/runs/w") as ws:
        first = json.loads(ws.receive_text())
        assert "type" not in first and first["karts"] == [[1.0, 2.0, 0.0, 3.0]] and first["kind"] == "train"
        shutil.rmtree(run)
        msg = json.loads(ws.receive_text())
        assert msg["type"] == "status" and "no live feed" in msg["message"]


# ------------------------------------------------------------------------------------- runs and jobs


def test_runs_list_states_and_progress(client):
    running = make_run(client.runs, "running")
    (running / "live.feed").write_text(json.dumps({
        "v": 1, "kind": "train", "pid": os.getpid(), "host": None, "active": True, "t": time.time(),
        "progress": {"num_timesteps": 4321, "total_timesteps": 10000, "steps_per_second": 250.0, "eta_s": 22.7,
                     "device": "cpu"}}))
    dead = make_run(client.runs, "dead")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (dead / "live.feed").write_text(json.dumps({"v": 1, "kind": "train", "pid": proc.pid, "active": True}))
    done = make_run(client.runs, "done", steps=2000)
    (done / "done_final.zip").write_bytes(b"PK")
    stopped = make_run(client.runs, "stopped", steps=3000)
    (stopped / "checkpoints" / "stopped_interrupted.zip").write_bytes(b"PK")
    (client.runs / "not_a_run").mkdir()
    (client.runs / "_live").mkdir()

    runs = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    assert set(runs) == {"running", "dead", "done", "stopped"}
    r = runs["running"]
    assert (r["state"], r["steps"], r["total"], r["steps_per_second"], r["eta_s"], r["device"]) == \
        ("running", 4321, 10000, 250.0, 22.7, "cpu")
    assert r["last_checkpoint"]["name"] == "running_1000_steps.zip" and r["live"]
    assert runs["dead"]["state"] == "stopped" and "gone" in runs["dead"]["reason"]
    assert runs["done"]["state"] == "finished" and runs["done"]["steps"] == 2000
    assert runs["stopped"]["state"] == "interrupted"


def test_jobs_of_a_local_job_store_are_listed(tmp_path):
    from kartsim.jobs.store import Attempt, JobRecord, LocalStore, save_job

    store = LocalStore(tmp_path / "store")
    job = JobRecord(id="j1-abcd", backend="local", config={}, save_name="j1", timesteps=5000,
                    attempts=[Attempt(n=1, started="2026-01-01T00:00:00", pid=None)])
    save_job(store, job)
    store.write_json("jobs/j1-abcd/progress.json", {"num_timesteps": 1200, "total_timesteps": 5000,
                                                    "steps_per_second": 300.0, "eta_s": 12.0})
    make_run(store.root / "runs", "j1", steps=1000)
    runs = tmp_path / "runs"
    runs.mkdir()
    with TestClient(create_app(runs, job_store=str(store.root))) as c:
        data = c.get("/api/runs").json()
        (j,) = data["jobs"]["jobs"]
        assert (j["id"], j["state"], j["steps"], j["total"], j["last_checkpoint"]) == \
            ("j1-abcd", "failed", 1200, 5000, "j1_1000_steps.zip")
        assert j["eta_s"] is None  # not running
        assert j["run"] == {"root": "jobs", "name": "j1"}
        assert [r["name"] for r in data["runs"] if r["root"] == "jobs"] == ["j1"]
        assert c.get("/api/run/jobs/j1").status_code == 200


def test_ray_jobs_with_an_unreachable_cluster_are_listed_as_unknown(tmp_path):
    pytest.importorskip("ray")
    from kartsim.jobs.store import Attempt, JobRecord, LocalStore, save_job

    store = LocalStore(tmp_path / "store")
    save_job(store, JobRecord(id="r1-abcd", backend="ray", config={}, save_name="r1", timesteps=5000,
                              address="http://127.0.0.1:9", options={"num_gpus_used": 1.0},
                              attempts=[Attempt(n=1, started="2026-01-01T00:00:00", submission_id="r1-abcd")]))
    (tmp_path / "runs").mkdir()
    with TestClient(create_app(tmp_path / "runs", job_store=str(store.root))) as c:
        (j,) = c.get("/api/runs").json()["jobs"]["jobs"]
        assert j["state"] == "unknown" and "cannot reach a Ray cluster" in j["reason"]
        assert j["device"] == "GPU"


# ------------------------------------------------------------------------------------ learning curves


def test_learning_curves_from_tensorboard_and_the_telemetry_csv(client, lap_csvs):
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.compat.proto import event_pb2, summary_pb2

    run = make_run(client.runs, "curves", csv=lap_csvs[1])
    w = EventFileWriter(str(run / "tb" / "PPO_1"))
    for step in (256, 512, 768):
        for tag, value in (("rollout/ep_rew_mean", step / 100), ("racing/best_lap_time", 60 - step / 100),
                           ("train/value_loss", 1 / step), ("reward/progress", step / 50), ("reward/lap", 10.0),
                           ("reward/off_track", -step / 1000), ("eval/ref_ratio", 1.3 - step / 10000)):
            summ = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
            w.add_event(event_pb2.Event(step=step, wall_time=time.time(), summary=summ))
    w.close()
    w = EventFileWriter(str(run / "tb" / "PPO_2"))  # a resumed race run: a term the first logs lack
    summ = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="reward/position", simple_value=2.5)])
    w.add_event(event_pb2.Event(step=1024, wall_time=time.time(), summary=summ))
    w.close()
    r = client.get("/api/run/runs/curves/curves")
    assert r.status_code == 200, r.text
    figs = {f["key"]: f for f in r.json()["figures"]}
    assert {"rollout/ep_rew_mean", "racing/best_lap_time", "train/value_loss", "eval/ref_ratio"} <= set(figs)
    assert "csv/reward" in figs or "csv/mean_speed" in figs
    trace = figs["rollout/ep_rew_mean"]["figure"]["data"][0]
    assert trace["x"] == [256, 512, 768]
    # the reward terms: one figure, a line per reward/* tag found in the logs (not a figure each)
    terms = figs["reward/*"]
    assert terms["title"] == "reward terms (per episode)" and not any(k.startswith("reward/") and k != "reward/*"
                                                                      for k in figs)
    lines = {t["name"]: t for t in terms["figure"]["data"]}
    assert set(lines) == {"progress", "lap", "off_track", "position"}
    assert lines["progress"]["x"] == [256, 512, 768] and lines["progress"]["y"] == pytest.approx([5.12, 10.24, 15.36])
    assert lines["position"]["x"] == [1024] and lines["position"]["y"] == [2.5]
    assert len({t["line"]["color"] for t in lines.values()}) == 4 and terms["figure"]["layout"]["showlegend"]
    template = r.json()["template"]
    assert template["layout"]["plot_bgcolor"] == "white"  # plotly_white, sent once per page
    assert "template" not in client.get("/api/run/runs/curves/curves?template=0").json()


# --------------------------------------------------------------------------------------- lap analysis


def test_lap_analysis_api_overlays_two_laps(client, lap_csvs):
    d = client.runs / "drives"
    d.mkdir()
    for p in lap_csvs:
        shutil.copyfile(p, d / Path(p).name)
    csvs = {c["csv"] for c in client.get("/api/csvs").json()["csvs"]}
    assert {"runs/drives/ai_hard.csv", "runs/drives/ai_easy.csv"} <= csvs
    laps = client.get("/api/laps", params={"csv": "runs/drives/ai_hard.csv"}).json()
    assert laps["count"] == 1 and laps["track"] == "oval.png"  # recognised from the driven line
    body = {"laps": [{"csv": "runs/drives/ai_hard.csv", "episode": 0, "lap": 1},
                     {"csv": "runs/drives/ai_easy.csv", "episode": 0, "lap": 1}]}
    r = client.post("/api/compare", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out["figures"]) == {"speed", "inputs", "delta", "lines", "gg"}
    assert out["track"] == "oval"
    t = out["table"]
    assert [row["driver"] for row in t] == ["drives/ai_hard e0 L1", "drives/ai_easy e0 L1"]
    assert t[0]["gap"] == 0 and t[1]["gap"] > 0
    assert abs(sum(t[0]["sectors"]) - t[0]["lap_time"]) < 0.05
    assert any(tr.get("type") == "image" for tr in out["figures"]["lines"]["data"])


def test_compare_rejects_bad_requests(client):
    for body in ({}, {"laps": []}, {"laps": [{"csv": "runs/x.csv", "episode": "a", "lap": 1}]}, [1, 2]):
        r = client.post("/api/compare", json=body)
        assert r.status_code == 400, body
        assert r.json()["error"]
    r = client.post("/api/compare", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


# ------------------------------------------------------------------------------------- live publishers


def test_publisher_rate_limits_and_writes_whole_documents(tmp_path):
    pub = LivePublisher(tmp_path / "live.json", kind="play", name="x", hz=20)
    assert pub.due()
    pub.publish({"karts": [[1, 2, 3, 4]], "tel": {"speed": float("nan")}})
    assert not pub.due()  # 50 ms until the next frame
    doc = read_live(tmp_path / "live.json")
    assert doc["seq"] == 1 and doc["active"] and doc["tel"]["speed"] is None and doc["pid"] == os.getpid()
    pub.close()
    assert read_live(tmp_path / "live.json")["active"] is False
    # a folder that disappears turns the publisher off instead of raising
    gone = LivePublisher(tmp_path / "nope" / "live.json", kind="play", name="y")
    gone.publish({})
    assert gone.failed and not gone.due()


def test_feed_file_readers_never_see_half_a_document(tmp_path):
    import struct
    import threading

    pub = LivePublisher(tmp_path / "x.feed", kind="train", name="x", hz=1e6)
    pub.period = 0.0
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            i += 1
            pub.publish({"karts": [[float(i), 0.0, 0.0, 0.0]] * (1 + i % 60), "i": i})
            time.sleep(0.0002)  # a frame every fraction of a millisecond (real feeds: every 50 ms)

    th = threading.Thread(target=writer)
    th.start()
    try:
        # Count frames, not tries: on a busy machine the writer thread may not have published
        # anything during the first few hundred reads (a missing or mid-write feed reads as None).
        seen, tries = [], 0
        while len(seen) < 60 and tries < 200_000:
            tries += 1
            doc = read_live(tmp_path / "x.feed")
            if doc is None:
                time.sleep(0.0001)
                continue
            assert len(doc["karts"]) == 1 + doc["i"] % 60 and doc["karts"][-1][0] == doc["i"]
            seen.append(doc["i"])
    finally:
        stop.set()
        th.join()
    assert len(seen) >= 60 and seen == sorted(seen)
    # a writer that died in the middle of a frame leaves an odd sequence number: no document
    with open(tmp_path / "x.feed", "r+b") as fh:
        fh.seek(8)
        fh.write(struct.pack("<Q", 7))
    assert read_live(tmp_path / "x.feed", retries=3) is None


def test_session_feeds_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KARTSIM_RUNS_DIR", raising=False)
    monkeypatch.delenv("KARTSIM_LIVE", raising=False)
    assert session_feed("drive", "oval") is None  # no ./runs: nothing is written
    (tmp_path / "runs").mkdir()
    pub = session_feed("drive", "oval track")
    assert pub is not None and pub.path.parent == Path("runs/_live") and "oval_track" in pub.path.name
    pub.publish({"karts": []})
    assert pub.path.exists()
    pub.close()
    assert not pub.path.exists()  # sessions remove their file
    monkeypatch.setenv("KARTSIM_LIVE", "0")
    assert session_feed("drive", "oval") is None
    assert TrainingLiveFeed.for_run(tmp_path / "runs" / "x") is None


def test_drive_publishes_kart_positions_to_a_live_file(tmp_path, monkeypatch):
    from kartsim.apps.drive import ScriptedEvents, drive_yourself

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KARTSIM_LIVE", raising=False)
    (tmp_path / "runs").mkdir()
    frames = []

    class Spy(ScriptedEvents):
        def poll(self, sim_time):
            for p in (tmp_path / "runs" / "_live").glob("*.feed"):
                doc = read_live(p)
                if doc:
                    frames.append(doc)
            return super().poll(sim_time)

    monkeypatch.setenv("KARTSIM_LIVE_HZ", "50")
    drive_yourself("oval.png", opponents=1, events=Spy([(0.0, "down", "up")]), window=False, realtime=False,
          telemetry=None, max_time_s=3.0)
    assert frames, "no live frame was written"
    last = frames[-1]
    assert last["kind"] == "drive" and len(last["karts"]) == 2 and last["track"]["name"] == "oval"
    assert last["tel"]["throttle"] > 0
    assert not list((tmp_path / "runs" / "_live").glob("*.feed"))  # removed at the end


def test_live_sources_list_hides_dead_sessions(client):
    folder = client.runs / "_live"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (folder / "play-old-1.feed").write_text(json.dumps({"kind": "play", "pid": proc.pid, "active": True}))
    pub = LivePublisher(folder / "drive-oval-2.feed", kind="drive", name="drive oval")
    pub.publish({"track": {"name": "oval", "path": None}, "karts": [[5.0, 5.0, 0.0, 1.0]]})
    sources = client.get("/api/live").json()["sources"]
    assert [s["id"] for s in sources] == ["session/runs/drive-oval-2"]
    r = client.get("/api/live/session/runs/drive-oval-2/track")
    assert r.status_code == 200 and r.json()["source"].startswith("data:image/png;base64,")
    with client.websocket_connect("/ws/live/session/runs/drive-oval-2") as ws:
        assert json.loads(ws.receive_text())["karts"] == [[5.0, 5.0, 0.0, 1.0]]
        pub.publish({"karts": [[6.0, 5.0, 0.0, 1.0]]})
        assert json.loads(ws.receive_text())["karts"] == [[6.0, 5.0, 0.0, 1.0]]
        pub.close()
        assert json.loads(ws.receive_text())["type"] == "status"


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_warns_when_exposed_and_refuses_a_busy_port(tmp_path, monkeypatch, capsys):
    import socket

    from kartsim.cli import build_parser, main
    from kartsim.dashboard import app as app_module

    calls = []
    monkeypatch.setattr(app_module, "serve", lambda *a, **k: calls.append(k))
    args = build_parser().parse_args(["dashboard", "--runs", str(tmp_path), "--host", "0.0.0.0", "--no-jobs"])
    assert args.func(args) == 0
    assert calls and calls[0]["host"] == "0.0.0.0"
    assert "warning" in capsys.readouterr().err
    args = build_parser().parse_args(["dashboard", "--runs", str(tmp_path), "--no-jobs"])
    assert args.host == "127.0.0.1" and args.port == 8050
    args.func(args)
    assert "warning" not in capsys.readouterr().err
    monkeypatch.undo()

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["dashboard", "--runs", str(tmp_path), "--port", str(port), "--no-jobs"]) == 2
    assert "cannot listen" in capsys.readouterr().err


def test_pages_and_plotly_are_served_locally(client):
    for url in ("/", "/live", "/laps", "/run/runs/anything"):
        r = client.get(url)
        assert r.status_code == 200 and "<html" in r.text
        assert "http://" not in r.text and "https://" not in r.text  # nothing from a CDN
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000
    assert client.get("/api/nothing").json()["error"]
