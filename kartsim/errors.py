"""User-facing errors: one line that names the problem and the fix."""


class KartsimError(Exception):
    """An error caused by user input (a file, a flag, an array). The CLI prints it as one line."""


class TrackError(KartsimError):
    """A track image, legend or checkpoints file that cannot be used."""


class ConfigError(KartsimError):
    """A configuration value, CLI flag or saved config that does not make sense."""


class ModelFileError(KartsimError):
    """A model file that is missing, corrupted, or does not fit the environment."""
