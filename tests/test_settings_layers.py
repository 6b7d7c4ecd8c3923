"""Setting layers: defaults, dask's files, environment, user file, command line, and their sources."""

from __future__ import annotations

import os

import dask.config
import pytest

from mpp_dask import settings
from mpp_dask.cluster import resolve_scheduler_address
from mpp_dask.errors import ConfigError

BLOCKSIZE_KEY = "mpp-dask.reading.blocksize"


@pytest.fixture
def layers(monkeypatch, tmp_path):
    """Isolate the environment, dask's config paths and the layers of this process."""
    for name in list(os.environ):
        if name.startswith("DASK_") or name.startswith("MPP_DASK"):
            monkeypatch.delenv(name)
    dask_files = tmp_path / "dask-config"
    dask_files.mkdir()
    # dask.config.collect() reads this list object, so it is changed in place.
    saved_paths = list(dask.config.paths)
    dask.config.paths[:] = [str(dask_files)]
    settings.reset_layers()
    yield dask_files
    monkeypatch.undo()
    dask.config.paths[:] = saved_paths
    settings.reset_layers()


def test_defaults_registered(layers):
    assert settings.get("cluster.connect-timeout") == "10s"
    assert settings.get("cluster.preflight") is True
    assert settings.source_of("mpp-dask.cluster.connect-timeout") == \
        f"default file {settings.DEFAULTS_PATH}"
    assert settings.source_of("scheduler-address") == settings.NOT_SET


def test_each_layer_wins_over_lower(layers, monkeypatch, tmp_path):
    dask_file = layers / "site.yaml"
    user_file = tmp_path / "user.yaml"

    assert settings.get("reading.blocksize") == "64 MiB"

    dask_file.write_text("mpp-dask:\n  reading:\n    blocksize: 1 MiB\n")
    settings.reset_layers()
    assert settings.get("reading.blocksize") == "1 MiB"
    assert settings.source_of(BLOCKSIZE_KEY) == f"dask config file {dask_file}"

    monkeypatch.setenv("DASK_MPP_DASK__READING__BLOCKSIZE", "2 MiB")
    settings.reset_layers()
    assert settings.get("reading.blocksize") == "2 MiB"
    assert settings.source_of(BLOCKSIZE_KEY) == "environment DASK_MPP_DASK__READING__BLOCKSIZE"

    user_file.write_text("mpp-dask:\n  reading:\n    blocksize: 3 MiB\n")
    settings.load_user_file(user_file)
    assert settings.get("reading.blocksize") == "3 MiB"
    assert settings.source_of(BLOCKSIZE_KEY) == f"user file {user_file}"

    settings.apply_command_line({BLOCKSIZE_KEY: "4 MiB", "mpp-dask.cluster.n-workers": None})
    assert settings.get("reading.blocksize") == "4 MiB"
    assert settings.source_of(BLOCKSIZE_KEY) == settings.COMMAND_LINE
    # An option that was not given (None) leaves the setting alone.
    assert settings.get("cluster.n-workers") is None
    assert settings.source_of("mpp-dask.cluster.n-workers").startswith("default file")


def test_environment_values_parsed_like_dask(layers, monkeypatch):
    monkeypatch.setenv("DASK_MPP_DASK__CLUSTER__N_WORKERS", "3")
    monkeypatch.setenv("DASK_MPP_DASK__CLUSTER__PREFLIGHT", "false")
    monkeypatch.setenv("DASK_MPP_DASK__CLUSTER__DASHBOARD_ADDRESS", "null")
    settings.reset_layers()

    assert settings.get("cluster.n-workers") == 3
    assert settings.get("cluster.preflight") is False
    assert settings.get("cluster.dashboard-address") is None
    rows = {row.key: row for row in settings.effective_settings()}
    # Keys are listed as the default file spells them, with their variable as source.
    assert rows["mpp-dask.cluster.n-workers"].value == 3
    assert rows["mpp-dask.cluster.n-workers"].source == \
        "environment DASK_MPP_DASK__CLUSTER__N_WORKERS"


def test_set_in_code_is_named(layers):
    with dask.config.set({BLOCKSIZE_KEY: "5 MiB"}):
        assert settings.source_of(BLOCKSIZE_KEY) == settings.SET_IN_CODE


def test_unknown_keys_and_ignored_variables(layers, monkeypatch, tmp_path):
    user_file = tmp_path / "user.yaml"
    user_file.write_text("mpp-dask:\n  reading:\n    blocksiz: 1 MiB\n"
                         "  stats:\n    plugin_stat:\n      window: 3\n"
                         "  storage-options:\n    anon: true\n")
    monkeypatch.setenv("MPP_DASK__READING__BLOCKSIZE", "1 MiB")

    settings.load_user_file(user_file)

    assert settings.unknown_keys() == ["mpp-dask.reading.blocksiz"]
    assert settings.misnamed_environment_variables() == ["MPP_DASK__READING__BLOCKSIZE"]
    assert settings.get("reading.blocksize") == "64 MiB"


@pytest.mark.parametrize("content, message", [
    ("- just\n- a list\n", "must contain a mapping of settings, found list"),
    ("mpp-dask: [unclosed\n", "is not valid YAML"),
])
def test_invalid_user_file_rejected(layers, tmp_path, content, message):
    user_file = tmp_path / "user.yaml"
    user_file.write_text(content)
    with pytest.raises(ConfigError, match=message):
        settings.load_user_file(user_file)


def test_missing_user_file_rejected(layers, tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        settings.load_user_file(tmp_path / "absent.yaml")


OPTION = "tcp://127.0.0.1:1001"
MPP_SETTING = "tcp://127.0.0.1:1002"
DASK_SETTING = "tcp://127.0.0.1:1003"


@pytest.mark.parametrize("option, local, mpp_setting, dask_setting, expected, source", [
    (OPTION, False, MPP_SETTING, DASK_SETTING, OPTION, "--scheduler-address"),
    (None, True, MPP_SETTING, DASK_SETTING, None, "--local"),
    (None, False, MPP_SETTING, DASK_SETTING, MPP_SETTING,
     "setting mpp-dask.cluster.scheduler-address from environment "
     "DASK_MPP_DASK__CLUSTER__SCHEDULER_ADDRESS"),
    (None, False, None, DASK_SETTING, DASK_SETTING,
     "dask setting scheduler-address from environment DASK_SCHEDULER_ADDRESS"),
    (None, False, None, None, None, "no scheduler address set"),
])
def test_scheduler_address_precedence(layers, monkeypatch, option, local, mpp_setting,
                                      dask_setting, expected, source):
    if mpp_setting:
        monkeypatch.setenv("DASK_MPP_DASK__CLUSTER__SCHEDULER_ADDRESS", mpp_setting)
    if dask_setting:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", dask_setting)
    settings.reset_layers()
    settings.apply_command_line({"mpp-dask.cluster.scheduler-address": option})

    assert resolve_scheduler_address(local) == (expected, source)


def test_dask_file_scheduler_address(layers):
    # Both spellings of dask's own key work, as in dask itself.
    for key in ("scheduler-address", "scheduler_address"):
        (layers / "scheduler.yaml").write_text(f"{key}: {DASK_SETTING}\n")
        settings.reset_layers()
        address, source = resolve_scheduler_address()
        assert address == DASK_SETTING
        assert source == ("dask setting scheduler-address from dask config file "
                          f"{layers / 'scheduler.yaml'}")


def test_local_and_address_option_conflict(layers):
    settings.apply_command_line({"mpp-dask.cluster.scheduler-address": OPTION})
    with pytest.raises(ConfigError, match="--local and --scheduler-address cannot be combined"):
        resolve_scheduler_address(local=True)
