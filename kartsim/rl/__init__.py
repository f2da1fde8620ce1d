"""Reinforcement learning: policies, training, play, evaluation (stable-baselines3 PPO)."""
