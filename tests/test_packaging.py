"""What `pip install .` ships, checked from the checkout (no installation needed)."""
import ast
import fnmatch
import importlib
import importlib.util

import pytest

from aeroseg import model_zoo
from aeroseg.utils.errors import ConfigError
from conftest import REPO


def _setup_value(name):
    """A literal assigned or passed as keyword ``name`` in setup.py (read, not executed)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
        if isinstance(node, ast.keyword) and node.arg == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py sets no {name}")


def test_get_config_file_finds_shipped_configs_with_their_bases():
    path = model_zoo.get_config_file("isaid/aeroseg_vitb.yaml")
    assert path == str(REPO / "configs" / "isaid" / "aeroseg_vitb.yaml")
    cfg = model_zoo.get_config("demo/tiny_cpu.yaml", ["SOLVER.MAX_ITER", "7"])
    assert cfg.MODEL.CLIP.IMAGE_SIZE == 128 and cfg.SOLVER.MAX_ITER == 7  # _BASE_ merged, opts applied
    with pytest.raises(ConfigError, match="did you mean dlrsd/aeroseg_vitb.yaml, isaid/aeroseg_vitb.yaml, oem/aeroseg_vitb.yaml"):
        model_zoo.get_config_file("aeroseg_vitb.yaml")


def test_package_data_covers_every_config():
    patterns = _setup_value("package_data")["aeroseg.model_zoo.configs"]
    assert _setup_value("package_dir") == {"aeroseg.model_zoo.configs": "configs", "aeroseg.tools": "tools"}
    configs = model_zoo.list_configs()
    assert "isaid/guidance/sam2.1_hiera_bplus.yaml" in configs and len(configs) > 20
    missed = [c for c in configs if not any(fnmatch.fnmatch(c, p) and c.count("/") == p.count("/") for p in patterns)]
    assert not missed, f"configs the wheel would not ship: {missed}"


@pytest.mark.parametrize("entry", _setup_value("ENTRY_POINTS"))
def test_console_scripts_exist_and_answer_help(entry, capsys):
    name, target = (s.strip() for s in entry.split("="))
    module_name, function = target.split(":")
    if module_name.startswith("aeroseg.tools."):  # tools/ is installed as aeroseg.tools
        path = REPO / "tools" / (module_name.rsplit(".", 1)[1] + ".py")
        spec = importlib.util.spec_from_file_location(f"_entry_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    with pytest.raises(SystemExit) as exit_info:
        getattr(module, function)(["--help"])
    assert exit_info.value.code == 0
    assert "--config-file" in capsys.readouterr().out
