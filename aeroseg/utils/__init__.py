from .detectron2_compat import detectron2_available
from .errors import AerOSegError, CheckpointError, ConfigError

__all__ = ["AerOSegError", "CheckpointError", "ConfigError", "detectron2_available"]
