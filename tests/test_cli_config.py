"""The ``mpp-dask config`` command: effective values and their sources."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from click.testing import CliRunner

from dask_processes import MPP_DASK
from mpp_dask import settings
from mpp_dask.cli.main import cli


def _rows(output: str) -> dict[str, tuple[str, str]]:
    """Return ``{key: (value, source)}`` from the table that ``mpp-dask config`` prints."""
    rows = {}
    for line in output.splitlines()[1:]:
        if line.startswith("warning:"):
            continue
        key, value, source = re.split(r"\s{2,}", line.strip(), maxsplit=2)
        rows[key] = (value, source)
    return rows


@pytest.fixture
def restore_settings():
    yield
    settings.reset_layers()


def test_config_reads_environment_and_dask_files(tmp_path):
    dask_files = tmp_path / "dask-config"
    dask_files.mkdir()
    (dask_files / "cluster.yaml").write_text("mpp-dask:\n  cluster:\n    n-workers: 2\n")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("DASK_", "MPP_DASK"))}
    env.update({"DASK_CONFIG": str(dask_files),
                "DASK_MPP_DASK__READING__BLOCKSIZE": "16 MiB",
                "DASK_SCHEDULER_ADDRESS": "tcp://127.0.0.1:8786",
                "MPP_DASK__READING__SKIP_ON_ERROR": "true"})

    result = subprocess.run([MPP_DASK, "config"], capture_output=True, text=True, env=env,
                            timeout=120, stdin=subprocess.DEVNULL)

    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    assert rows["mpp-dask.reading.blocksize"] == (
        "16 MiB", "environment DASK_MPP_DASK__READING__BLOCKSIZE")
    assert rows["mpp-dask.cluster.n-workers"] == (
        "2", f"dask config file {dask_files / 'cluster.yaml'}")
    assert rows["scheduler-address"] == (
        "tcp://127.0.0.1:8786", "environment DASK_SCHEDULER_ADDRESS")
    assert rows["mpp-dask.reading.skip-on-error"][0] == "false"
    assert rows["mpp-dask.reading.skip-on-error"][1].startswith("default file ")
    assert ("warning: the environment variable MPP_DASK__READING__SKIP_ON_ERROR is ignored"
            in result.stderr)
    assert "use DASK_MPP_DASK__READING__SKIP_ON_ERROR instead" in result.stderr


def test_config_user_file_and_set(tmp_path, restore_settings):
    user_file = tmp_path / "user.yaml"
    user_file.write_text("mpp-dask:\n  cluster:\n    threads-per-worker: 2\n"
                         "    memory-limit: 3GiB\n  output:\n    compresion: gzip\n")

    result = CliRunner().invoke(cli, [
        "config", "--config", str(user_file), "--set", "mpp-dask.cluster.memory-limit=4GiB",
        "--set", "mpp-dask.storage-options={anon: true}"])

    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    assert rows["mpp-dask.cluster.threads-per-worker"] == ("2", f"user file {user_file}")
    assert rows["mpp-dask.cluster.memory-limit"] == ("4GiB", "command line")
    assert rows["mpp-dask.storage-options.anon"] == ("true", "command line")
    assert rows["mpp-dask.cluster.connect-timeout"][1].startswith("default file ")
    assert "warning: mpp-dask.output.compresion is not a known setting" in result.stderr


@pytest.mark.parametrize("assignment, message", [
    ("mpp-dask.cluster.n-workers", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("mpp-dask.cluster.n-workers=[1", "invalid value in --set"),
])
def test_config_invalid_set_rejected(assignment, message, restore_settings):
    result = CliRunner().invoke(cli, ["config", "--set", assignment])
    assert result.exit_code == 2
    assert message in result.stderr
