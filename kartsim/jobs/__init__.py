"""Training jobs: ``kartsim jobs ...`` (and ``python tools/track_cli.py ...``).

A job is one ``kartsim train`` run started in the background, on this machine (``local`` backend,
a detached process) or on a Ray cluster (``ray`` backend, the Ray Jobs API). Everything a job
needs and makes lives in a *job store* (a folder, or an fsspec URI such as ``s3://bucket/kartsim``
for Ray)::

    tracks/<name>.png, <stem>.checkpoints.json    tracks synced with `kartsim jobs sync`
    jobs/<id>/job.json                             the job: its train flags, backend, attempts
    jobs/<id>/log.txt                              everything the job printed (all attempts)
    jobs/<id>/progress.json                        steps done / total, steps/s (updated every few s)
    jobs/<id>/attempt-<n>.exit.json                written by the job wrapper when attempt n ends
    jobs/<id>/attempt-<n>.cancel                   a cancel request for attempt n
    runs/<save-name>/                              the `kartsim train` run folder (checkpoints/, tb/,
                                                   telemetry_log.csv, config.json, <name>_final.zip)
    models/<save-name>_final.zip                   the final model

Modules: `store` (the store and its records), `config` (backend / store / address from flags,
environment and config files), `tracks` (sync), `service` (the operations), `local` and
`ray_backend` (the backends), `runner` (the wrapper process a job runs as) and `worker` (the
training process it starts). Nothing here imports torch, stable-baselines3 or Ray at import time.
"""
