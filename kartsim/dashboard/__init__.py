"""``kartsim dashboard``: a local web app over the run folders (Starlette + uvicorn, Plotly charts).

Modules:

* `live`    - the live-driving side channel: producers (training, ``kartsim play`` / ``play_ppo.py``,
  ``kartsim drive``) rewrite a small JSON file at most 20 times a second; imports nothing heavy, so
  the producers' hooks cost nothing when no dashboard is open.
* `data`    - read-only views of run folders, the job store, TensorBoard event files and telemetry
  CSVs, with every path checked to stay inside the runs folders; problems become `DashboardError`
  messages, never exceptions that reach the browser.
* `figures` - Plotly figures (learning curves, lap analysis) built from `data`.
* `app`     - the Starlette app: HTML pages, JSON API, the live websocket; `serve()` runs uvicorn.

Nothing in this package is imported by the simulator except `live` (by the producers' hooks).
"""
