"""Names vulture (dead-code check of `make test`) cannot see being used: framework hooks and
attributes read by other libraries, public API read by tests and tools, dataclass fields."""

# ruff: noqa: F821, B018
# Read by argparse / Starlette / Selenium, not by kartsim
description  # argparse.Action attribute (cli/jobs_cmd.py)
help  # argparse.Action attribute (cli/jobs_cmd.py)
library  # app.state.library: Starlette request state (dashboard/app.py)
binary_location  # selenium ChromeOptions (benchmarks/dashboard_overhead.py)
MAX_IMAGE_PIXELS  # PIL.Image's decompression-bomb limit (sim/track.py)
# Public API and state that tests and tools read
lat_at  # KartLimits.lat_at: the g-g-v envelope (tests, physics envelope test)
subset  # KartState.subset: copies of some karts (tests, tools)
take  # DemoSet.take: a subset of demonstrations
grid_slot  # GridRace.grid_slot: each kart's grid position
sky_mask  # CameraRenderer.sky_mask: pixels above the horizon
ego_pixels  # CameraRenderer.ego_pixels: where the own kart is drawn
# Dataclass fields (written to JSON / shown in tables through asdict)
mean_reward  # ModelScore.mean_reward
final_model  # TrainResult.final_model
final_eval  # TrainResult.final_eval: the final model's evaluation (tests, callers of train())
best_eval  # TrainResult.best_eval: the best evaluation (tests, callers of train())
angle_deg  # Corner.angle_deg
lap_pace  # RewardConfig.lap_pace: a reward weight read by name (REWARD_TERMS)
