from .checkpointer import AerOSegCheckpointer, check_state_dict_compatible, periodic_checkpoint_name

__all__ = ["AerOSegCheckpointer", "check_state_dict_compatible", "periodic_checkpoint_name"]
