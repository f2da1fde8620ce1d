"""Drivers that are not the agent being trained: the racing line and the AI driver that follows it,
frozen trained models (their model files) and the opponents of a multi-kart race."""
