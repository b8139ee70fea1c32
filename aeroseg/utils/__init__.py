from .errors import AerOSegError, CheckpointError, ConfigError

__all__ = ["AerOSegError", "CheckpointError", "ConfigError"]
