"""``@configurable``: construct a module either from plain arguments or from a config.

detectron2's convention: ``Module(cfg)`` calls ``Module.from_config(cfg)`` to turn the config
into keyword arguments, while ``Module(a=..., b=...)`` passes them directly. This is the
decorator for environments without detectron2; with it, :mod:`aeroseg.compat` gives
detectron2's own, so our modules behave identically inside detectron2.
"""
import functools

from fvcore.common.config import CfgNode


def configurable(init_func):
    if init_func.__name__ != "__init__":
        raise TypeError("@configurable decorates __init__ methods only")

    @functools.wraps(init_func)
    def wrapped(self, *args, **kwargs):
        cfg = kwargs.pop("cfg", None)
        if cfg is None and args and isinstance(args[0], CfgNode):
            cfg, args = args[0], args[1:]
        if cfg is None:
            return init_func(self, *args, **kwargs)
        from_config = getattr(type(self), "from_config", None)
        if from_config is None:
            raise TypeError(f"{type(self).__name__} takes a config but defines no from_config")
        explicit = from_config(cfg, *args, **kwargs)
        return init_func(self, **explicit)

    return wrapped
