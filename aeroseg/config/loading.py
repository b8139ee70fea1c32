"""Reading a config file and command-line overrides, with one-line errors (every tool uses this).

fvcore/yacs report an unknown key as a ``KeyError``, a value of the wrong type as a ``ValueError``,
an odd number of overrides as an ``AssertionError`` and a broken file as a YAML or OS error, each
with a traceback. :func:`load_config` turns all of them into a :class:`ConfigError` naming the file
(or the command line), so ``train_net``, ``predict`` and ``benchmark`` fail alike.
"""
import os
from typing import Optional, Sequence

import yaml

from ..utils.errors import ConfigError, one_line

__all__ = ["load_config", "merge_overrides"]


def load_config(config_file: str, opts: Optional[Sequence[str]] = (), cfg=None):
    """``get_cfg()`` (or ``cfg``) merged with ``config_file`` and the ``KEY VALUE`` list ``opts``.

    Raises a one-line :class:`ConfigError` for a missing or invalid file, an unknown key, a value
    of the wrong type or an odd override list. The config is returned unfrozen.
    """
    from . import get_cfg

    if not config_file:  # get_cfg() alone holds detectron2's defaults, not AerOSeg's (Base-AerOSeg.yaml)
        raise ConfigError("--config-file is required, e.g. configs/demo/tiny_cpu.yaml (every config inherits "
                          "configs/Base-AerOSeg.yaml)")
    if not os.path.isfile(config_file):
        raise ConfigError(f"config file {config_file} does not exist")
    cfg = get_cfg() if cfg is None else cfg
    try:
        cfg.merge_from_file(config_file)
    except (KeyError, ValueError, AssertionError) as exc:  # unknown key, bad value type
        raise ConfigError(f"{config_file}: {_clean(exc)}") from None
    except yaml.YAMLError as exc:  # the file itself, or one of its _BASE_ files
        raise ConfigError(f"{config_file} (or a _BASE_ file of it) is not valid YAML: {one_line(exc, 300)}") from None
    except OSError as exc:  # typically a _BASE_ path that does not exist
        missing = getattr(exc, "filename", None) or one_line(exc, 200)
        raise ConfigError(f"{config_file}: cannot read {missing} ({exc.strerror or 'unreadable'}); "
                          f"check its _BASE_ path (relative to the file that names it)") from None
    return merge_overrides(cfg, opts, config_file)


def merge_overrides(cfg, opts: Sequence[str], source: str = "command line"):
    """Merge the ``KEY VALUE`` list ``opts`` into ``cfg`` (one-line :class:`ConfigError` naming ``source``)."""
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(f"{source}: config overrides must be KEY VALUE pairs, got {len(opts)} item(s) "
                          f"({' '.join(map(str, opts))[:200]})")
    try:
        cfg.merge_from_list(opts)
    except (KeyError, ValueError, AssertionError) as exc:
        raise ConfigError(f"{source}: {_clean(exc)}") from None
    return cfg


def _clean(exc: BaseException) -> str:
    return one_line(str(exc).strip().strip('"').strip("'"), 300)
