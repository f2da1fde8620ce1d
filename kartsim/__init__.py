"""kartsim: a karting simulator for training driving agents with reinforcement learning."""

__version__ = "0.1.0"
