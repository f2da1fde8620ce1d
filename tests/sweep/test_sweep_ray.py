"""`kartsim sweep run --backend ray`: a 2-trial sweep as Ray Tune trials on a real Ray head started
on 127.0.0.1 (the `ray_head` fixture in conftest.py), its study read by `sweep status`, its trial
folders in the job store where `kartsim jobs fetch` finds them."""

from __future__ import annotations

import pytest

pytest.importorskip("ray.tune", reason="Ray Tune is not installed: pip install 'kartsim[ray]'")

from kartsim.cli import main as kartsim_main

TINY = ["--vector-envs", "2", "--n-steps", "64", "--batch-size", "64", "--eval-max-steps", "100"]


@pytest.mark.slow
def test_two_trial_sweep_on_a_ray_head(tmp_path, monkeypatch, capfd, ray_head):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("KARTSIM_JOBS_CONFIG", raising=False)
    monkeypatch.setenv("KARTSIM_RAY_ADDRESS", ray_head)
    store = tmp_path / "shared-store"
    monkeypatch.setenv("KARTSIM_JOB_STORE", str(store))

    code = kartsim_main(["sweep", "run", "rt", "--backend", "ray", "--set", "n_epochs=choice:1,2", "--trials", "2",
                         "--pruner", "none", "--timesteps", "256", "--eval-every", "128", *TINY])
    out, err = capfd.readouterr()
    assert code == 0, out + err
    assert "started sweep rt on Ray at http://127.0.0.1:" in out and "finished" in out
    assert (store / "sweeps" / "rt" / "study.db").is_file()  # the study lives in the job store

    assert kartsim_main(["sweep", "status", "rt"]) == 0
    out, _ = capfd.readouterr()
    assert "sweep rt: 2 / 2 trials finished (2 complete" in out, out
    assert "train it: kartsim train" in out

    from kartsim.cli.jobs_cmd import main as jobs_main
    from kartsim.rl.modelio import read_kartsim_config

    for n in (0, 1):
        assert (store / "runs" / f"rt-{n}" / "config.json").is_file()
        assert jobs_main(["fetch", "--path", f"rt-{n}_final.zip", "--out", f"rt-{n}.zip"]) == 0
        assert read_kartsim_config(tmp_path / f"rt-{n}.zip")["num_timesteps"] >= 256
