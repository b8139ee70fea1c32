"""A config file that cannot be used is a one-line error naming it."""

import pytest

from aeroseg.engine import train_net
from conftest import error_line as _error

pytestmark = pytest.mark.usefixtures("datasets_env")


def test_config_file_errors_are_one_line(tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("MODEL:\n  DEVICE: [cpu\n")
    assert train_net.run(["--config-file", str(bad_yaml)]) == 2
    assert "bad.yaml" in _error(capsys)
    no_base = tmp_path / "nobase.yaml"
    no_base.write_text('_BASE_: "missing-base.yaml"\n')
    assert train_net.run(["--config-file", str(no_base)]) == 2
    err = _error(capsys)
    assert "missing-base.yaml" in err and "_BASE_" in err
