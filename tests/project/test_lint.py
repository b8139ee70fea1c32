"""The whole tree is clean under the project's linter settings (pyproject.toml, [tool.ruff])."""
import subprocess
import sys

import pytest

from conftest import REPO


def test_ruff_is_clean_on_the_whole_tree():
    pytest.importorskip("ruff", reason="ruff is part of the dev extra: pip install -e '.[dev]'")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)], capture_output=True,
                            text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
