"""Configs shipped with AerOSeg, found the same way from a checkout and from an installed wheel.

    from aeroseg import model_zoo
    cfg = model_zoo.get_config("isaid/aeroseg_vitb.yaml")         # an AerOSeg CfgNode
    path = model_zoo.get_config_file("demo/tiny_cpu.yaml")        # its file, for --config-file

An installed package holds the repository's ``configs/`` as ``aeroseg/model_zoo/configs/``
(setup.py maps the folder there, as detectron2's model zoo does); a checkout uses ``configs/``.
"""
from pathlib import Path
from typing import List, Sequence

from ..utils.errors import ConfigError

__all__ = ["get_config_file", "get_config", "list_configs", "configs_root"]


def configs_root() -> Path:
    """The folder holding the shipped configs (installed copy first, then the checkout's)."""
    installed = Path(__file__).resolve().parent / "configs"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "configs"


def list_configs() -> List[str]:
    """Every shipped config, relative to :func:`configs_root` (e.g. ``"isaid/aeroseg_vitb.yaml"``)."""
    root = configs_root()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.yaml"))


def get_config_file(config_path: str) -> str:
    """Absolute path of the shipped config ``config_path`` (relative to ``configs/``)."""
    path = configs_root() / config_path
    if not path.is_file():
        near = [c for c in list_configs() if Path(c).name == Path(config_path).name]
        hint = f" (did you mean {', '.join(near[:4])}?)" if near else " (aeroseg.model_zoo.list_configs() lists them)"
        raise ConfigError(f"{config_path} is not a config shipped with AerOSeg{hint}")
    return str(path)


def get_config(config_path: str, opts: Sequence[str] = ()):
    """The merged config of ``config_path`` (its ``_BASE_`` chain included), with ``opts`` applied."""
    from ..config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(get_config_file(config_path))
    cfg.merge_from_list(list(opts))
    return cfg
