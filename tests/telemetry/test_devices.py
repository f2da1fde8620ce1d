"""Issue 18 item 12: the training device's utilisation and memory (NVML on CUDA, the CPUs otherwise)
in `status`, the dashboard and TensorBoard."""

from __future__ import annotations

import json
import time

from starlette.testclient import TestClient

from kartsim.dashboard.app import create_app
from kartsim.telemetry.live import TrainingLiveFeed
from kartsim.telemetry.devices import DeviceMonitor, DeviceSample, sample_text
from kartsim.jobs.worker import progress_line


def test_cpu_sample_is_a_busy_share_and_memory():
    mon = DeviceMonitor("cpu")
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:  # keep a core busy so the share is above zero
        pass
    s = mon.sample()
    assert s.kind == "cpu" and 0.0 < s.util_pct <= 100.0
    assert 0 < s.mem_used_mb < s.mem_total_mb
    assert s.text().startswith("CPU ") and "memory" in s.text()


def test_gpu_sample_says_why_when_there_is_no_gpu():
    mon = DeviceMonitor("cuda")
    s = mon.sample()
    if s is None:  # no NVIDIA driver here
        assert mon.problem and "NVML" in mon.problem
    else:
        assert s.kind == "gpu" and 0 <= s.util_pct <= 100 and 0 < s.mem_used_mb <= s.mem_total_mb


def test_status_line_shows_the_utilisation_while_running():
    usage = DeviceSample("gpu", "NVIDIA H200", 87.0, 20_000.0, 140_000.0).to_dict()
    p = {"num_timesteps": 500, "total_timesteps": 1000, "steps_per_second": 1300.0, "eta_s": 60, "utilisation": usage}
    assert progress_line(p).endswith("GPU 87% (NVIDIA H200), memory 19.5 / 136.7 GB")
    assert "GPU" not in progress_line(p, eta=False)
    assert sample_text(None) is None and sample_text({"bad": 1}) is None


class _Model:
    num_timesteps = 4096
    _total_timesteps = 10_000
    device = "cpu"


def test_live_feed_and_dashboard_show_the_utilisation(tmp_path):
    runs = tmp_path / "runs"
    run = runs / "busy"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"env": {"track": "oval.png"}, "train": {"timesteps": 10_000}}))
    feed = TrainingLiveFeed(run)
    progress = feed._progress(_Model())
    assert progress["utilisation"]["kind"] == "cpu"
    feed.pub.publish({"karts": [], "progress": progress})
    with TestClient(create_app(runs)) as client:
        row = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}["busy"]
        assert row["usage"].startswith("CPU ") and "memory" in row["usage"]
        assert "device use" in client.get("/").text


def test_a_run_stopped_early_by_design_reads_as_complete(tmp_path):
    """Issue 18 item 11: the finished quickstart (stopped at its first lap) showed 160,000 / 2,000,000 (8 %)."""
    from kartsim.telemetry.live import read_live

    class Callback:
        model = _Model()

    (tmp_path / "early").mkdir()
    feed = TrainingLiveFeed(tmp_path / "early")
    model = _Model()
    model.num_timesteps = 0
    feed.start(model)
    time.sleep(0.2)
    feed._progress(_Model())
    feed.close(Callback())
    progress = read_live(tmp_path / "early" / "live.feed")["progress"]
    assert progress["total_timesteps"] == 4096 and progress["stopped_early_of"] == 10_000
    assert progress["eta_s"] is None
    # the final rate counts from the start of training, as `kartsim train` prints it
    assert 0 < progress["steps_per_second"] <= 4096 / 0.2


def test_tensorboard_gets_system_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kartsim.rl.train import TrainConfig, train

    cfg = TrainConfig.from_dict(dict(vector_envs=2, n_steps=32, batch_size=32, n_epochs=1, progress_bar=False, device="cpu",
                      timesteps=128, save_name="tb", seed=0, tensorboard=True, checkpoint_freq=0, telemetry_link=False,
                      runs_dir=str(tmp_path / "runs"), models_dir=str(tmp_path / "models")))
    train(cfg, echo=lambda line: None)
    events = next((tmp_path / "runs" / "tb" / "tb").rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"system/cpu_util_pct", "system/cpu_mem_used_gb"} <= tags
    assert all(0 <= e.value <= 100 for e in acc.Scalars("system/cpu_util_pct"))
