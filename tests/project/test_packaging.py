"""What `pip install .` ships: read from the checkout, and installed into fresh virtualenvs."""
import ast
import fnmatch
import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

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
    hint = "did you mean dlrsd/aeroseg_vitb.yaml, isaid/aeroseg_vitb.yaml, oem/aeroseg_vitb.yaml"
    with pytest.raises(ConfigError, match=hint):
        model_zoo.get_config_file("aeroseg_vitb.yaml")


def test_package_data_covers_every_config():
    patterns = _setup_value("package_data")["aeroseg.model_zoo.configs"]
    assert _setup_value("package_dir") == {"aeroseg.model_zoo.configs": "configs"}
    configs = model_zoo.list_configs()
    assert "isaid/guidance/sam2.1_hiera_bplus.yaml" in configs and len(configs) > 20
    missed = [c for c in configs if not any(fnmatch.fnmatch(c, p) and c.count("/") == p.count("/") for p in patterns)]
    assert not missed, f"configs the wheel would not ship: {missed}"


@pytest.mark.parametrize("entry", _setup_value("ENTRY_POINTS"))
def test_console_scripts_exist_and_answer_help(entry, capsys):
    name, target = (s.strip() for s in entry.split("="))
    module_name, function = target.split(":")
    module = importlib.import_module(module_name)
    with pytest.raises(SystemExit) as exit_info:
        getattr(module, function)(["--help"])
    assert exit_info.value.code == 0
    assert "--config-file" in capsys.readouterr().out


def _without_pythonpath() -> dict:
    """This environment minus PYTHONPATH, which would make any checkout importable in the new venv."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _fresh_venv(path: Path) -> Path:
    """A new virtualenv without AerOSeg that sees this environment's other packages (torch, ...).

    This environment's site-packages is put on its path by a ``.pth`` line, which adds the folder
    but does not run the ``.pth`` files inside it: this environment's own (editable) AerOSeg stays
    invisible, so the console scripts can only work through the installation made in the test.
    pip and setuptools come from this environment too (a venv's own bundled setuptools may be too
    old to build wheels), so nothing is downloaded.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, capture_output=True)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "_parent_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = subprocess.run([str(python), "-c", "import aeroseg"], capture_output=True, cwd=path,
                           env=_without_pythonpath())
    assert probe.returncode != 0, "the fresh virtualenv already imports aeroseg"
    return python


def _checkout_copy(dst: Path) -> Path:
    """The checkout's tracked files (what a clone holds), so that building leaves the checkout clean."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell which files a clone holds")
    for name in listed.stdout.decode().split("\0"):
        if name and (REPO / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dst / name)
    return dst


@pytest.mark.parametrize("editable", [True, False], ids=["pip install -e .", "pip install ."])
def test_console_scripts_work_after_installation(tmp_path, editable):
    source = _checkout_copy(tmp_path / "checkout")
    python = _fresh_venv(tmp_path / "venv")
    install = [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    env = _without_pythonpath()
    subprocess.run(install + (["-e", str(source)] if editable else [str(source)]), check=True, capture_output=True,
                   cwd=tmp_path, env=env)
    for script in (entry.split("=")[0].strip() for entry in _setup_value("ENTRY_POINTS")):
        result = subprocess.run([str(tmp_path / "venv" / "bin" / script), "--help"], capture_output=True, text=True,
                                cwd=tmp_path, env=env)
        assert result.returncode == 0, f"{script} --help: {result.stderr[-2000:]}"
        assert "--config-file" in result.stdout
    shipped = subprocess.run([str(python), "-c", "from aeroseg import model_zoo; "
                              "print(model_zoo.get_config_file('demo/tiny_cpu.yaml'))"],
                             capture_output=True, text=True, cwd=tmp_path, check=True, env=env).stdout.strip()
    assert Path(shipped).is_file() and (str(source) in shipped) == editable
