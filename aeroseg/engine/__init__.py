from .defaults import default_argument_parser, default_setup, seed_all_rng, setup_logger
from .launch import launch
from .trainer import Trainer

__all__ = ["Trainer", "default_argument_parser", "default_setup", "launch", "seed_all_rng", "setup_logger"]
