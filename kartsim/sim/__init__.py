"""The simulation core: tracks, track generation, batched kart physics, sensors, races of N karts.

Imports numpy/numba/scipy only, never gymnasium, stable-baselines3 or torch. Import the modules
themselves, e.g. ``from kartsim.sim.race import Race``.
"""
