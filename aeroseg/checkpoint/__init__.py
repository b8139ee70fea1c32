from .checkpointer import AerOSegCheckpointer, check_state_dict_compatible

__all__ = ["AerOSegCheckpointer", "check_state_dict_compatible"]
