"""``kartsim sweep``: hyperparameter studies over training runs (Optuna), run by local workers or Ray Tune.

(A regular package: setuptools' ``packages.find`` skips folders without this file, so a wheel would
have left the sweeps out.)
"""
