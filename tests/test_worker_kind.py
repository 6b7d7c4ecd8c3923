"""Thread workers for small inputs, worker processes for large ones."""

from __future__ import annotations

import threading

import dask.config
import pytest
from click.testing import CliRunner

from helpers import write_aspect
from mpp_dask import settings
from mpp_dask.cli import main as cli_main
from mpp_dask.cli.main import cli
from mpp_dask.cluster import ClusterOptions, choose_worker_kind, connect, options_from_settings
from mpp_dask.errors import ConfigError
from mpp_dask.reading.replays import ReplaySource, aspect_bytes


@pytest.fixture
def three_replays(tmp_path):
    """Three replay folders with 100 bytes of aspect files each, and other files."""
    sources = []
    for name in ("a", "b", "c"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "team_stats.mpk").write_bytes(b"\x00" * 60)
        (folder / "damage_log.mpk.gz").write_bytes(b"\x00" * 40)
        (folder / "defs.csv").write_bytes(b"\x00" * 1000)
        sources.append(ReplaySource(name, str(folder)))
    return sources


def test_aspect_bytes_counts_only_aspect_files(three_replays):
    assert aspect_bytes(three_replays, None, limit=10**9) == 300


def test_aspect_bytes_stops_at_the_limit(three_replays):
    # The total passes 150 with the second replay, so the third is not listed.
    assert aspect_bytes(three_replays, None, limit=150) == 200
    assert aspect_bytes(three_replays, None, limit=100) == 100


def test_missing_folder_counts_as_empty(tmp_path, three_replays):
    sources = [ReplaySource("gone", str(tmp_path / "gone")), *three_replays]
    assert aspect_bytes(sources, None, limit=10**9) == 300


def test_small_input_gets_thread_workers():
    options = ClusterOptions(processes=None, process_workers_min_bytes=1000)

    assert choose_worker_kind(options, 1, lambda limit: 999).processes is False
    assert choose_worker_kind(options, 1, lambda limit: 1000).processes is True


def test_several_replays_get_worker_processes():
    options = ClusterOptions(processes=None, process_workers_min_bytes=1000)
    never_called = lambda limit: pytest.fail("the input size was not needed")

    assert choose_worker_kind(options, 2, never_called).processes is True


def test_explicit_choice_and_remote_cluster_kept():
    never_called = lambda limit: pytest.fail("the input size was not needed")

    for processes in (True, False):
        options = ClusterOptions(processes=processes)
        assert choose_worker_kind(options, 1, never_called).processes is processes
    remote = ClusterOptions(scheduler_address="tcp://127.0.0.1:8786", processes=None)
    assert choose_worker_kind(remote, 1, never_called).processes is True


@pytest.mark.parametrize("value, expected", [("auto", None), (True, True), (False, False)])
def test_processes_setting(value, expected):
    with dask.config.set({"mpp-dask.cluster.processes": value,
                          "mpp-dask.cluster.process-workers-min-bytes": "1 KiB"}):
        options = options_from_settings()

    assert options.processes is expected
    assert options.process_workers_min_bytes == 1024


def test_invalid_processes_setting_rejected():
    with dask.config.set({"mpp-dask.cluster.processes": "sometimes"}):
        with pytest.raises(ConfigError, match="expected true, false or auto"):
            options_from_settings()
    with dask.config.set({"mpp-dask.cluster.process-workers-min-bytes": "lots"}):
        with pytest.raises(ConfigError, match="expected bytes"):
            options_from_settings()


def test_default_is_auto():
    settings.reset_layers()
    assert options_from_settings().processes is None


def _thread_name() -> str:
    return threading.current_thread().name


def test_thread_workers_as_many_as_processes_would_be():
    options = ClusterOptions(processes=False, n_workers=None, threads_per_worker=1,
                             dashboard_address=None)

    with connect(options) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        names = client.run(_thread_name)

    assert len(workers) == dask.system.CPU_COUNT
    # client.run executes on each worker's event loop, which for thread workers is
    # not the main thread of the process.
    assert all(name != "MainThread" for name in names.values())


def test_cli_run_of_small_replay_uses_thread_workers(tmp_path, monkeypatch):
    chosen = []
    real_run_on_cluster = cli_main.run_on_cluster

    def recording_run_on_cluster(sources, plan, registry, options, **kwargs):
        chosen.append(options.processes)
        return real_run_on_cluster(sources, plan, registry, options, **kwargs)

    # Records the options of the real run, which still computes everything.
    monkeypatch.setattr(cli_main, "run_on_cluster", recording_run_on_cluster)
    rows = [[300 * (i + 1), team] + [10 * (i + 1)] * 37 for i in range(3) for team in range(2)]
    write_aspect(tmp_path / "in", "team_stats", rows)
    with dask.config.set({"mpp-dask.cluster.processes": "auto"}):
        result = CliRunner().invoke(cli, ["run", "r", "-i", str(tmp_path / "in"),
                                          "-o", str(tmp_path / "out"), "-s",
                                          "resources_by_player", "--dashboard-address",
                                          "127.0.0.1:0"])
    settings.reset_layers()

    assert result.exit_code == 0, result.output
    assert chosen == [False]
