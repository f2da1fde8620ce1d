"""Applications on top of the envs and the trainer: human driving (``kartsim drive``) and the driver
comparison report (``kartsim compare``). The dashboard, jobs and CLI are packages beside this one."""
