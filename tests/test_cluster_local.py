"""LocalCluster options, dashboard ports and storage URLs of ``mpp-dask run``."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess

import dask.config
import fsspec
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from dask_processes import MPP_DASK, free_port
from helpers import pack_rows, write_aspect
from mpp_dask import pipeline, settings
from mpp_dask.cli.main import cli
from mpp_dask.cluster import (PRE_SPAWN_ENVIRON_KEY, ClusterOptions, check_storage_reachable,
                              connect, dashboard_link, options_from_settings,
                              resolve_dashboard_address, worker_environment)
from mpp_dask.errors import ClusterError, ConfigError


def _team_stats_rows() -> list:
    return [[300 * (i + 1), team] + [10 * (i + 1)] * 37 for i in range(3) for team in range(2)]


@pytest.fixture
def restore_settings():
    """Undo the user-file and command-line layers that an in-process run adds."""
    yield
    settings.reset_layers()


@pytest.fixture
def busy_port():
    """A port on 127.0.0.1 occupied by a listening socket during the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_busy_default_dashboard_port_falls_back(busy_port):
    address = f"127.0.0.1:{busy_port}"

    assert resolve_dashboard_address(address, explicit=False) == "127.0.0.1:0"

    options = ClusterOptions(n_workers=1, processes=False, dashboard_address=address,
                             dashboard_port_explicit=False)
    with connect(options) as client:
        link = dashboard_link(client, options)
    assert link.startswith("http://127.0.0.1:")
    assert f":{busy_port}/" not in link


def test_busy_requested_dashboard_port_fails(busy_port, tmp_path, restore_settings):
    write_aspect(tmp_path / "in", "team_stats", _team_stats_rows())

    result = CliRunner().invoke(cli, [
        "run", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--n-workers", "1",
        "--dashboard-address", f"127.0.0.1:{busy_port}"])

    assert result.exit_code == ClusterError.exit_code, result.output
    assert f"dashboard address 127.0.0.1:{busy_port} is already in use" in result.output
    assert "use port 0 for any free port" in result.output


def test_free_dashboard_port_kept():
    port = free_port()
    assert resolve_dashboard_address(f"127.0.0.1:{port}", explicit=True) == f"127.0.0.1:{port}"
    assert resolve_dashboard_address(None, explicit=False) is None
    with pytest.raises(ConfigError, match="invalid dashboard address"):
        resolve_dashboard_address("127.0.0.1:http", explicit=True)


def _worker_state() -> tuple[int, int, object]:
    return (os.getpid(), logging.getLogger("distributed.shuffle").level,
            signal.getsignal(signal.SIGINT))


def _arrow_memory_pool() -> str:
    import pyarrow

    return pyarrow.default_memory_pool().backend_name


def test_local_cluster_options_applied():
    options = ClusterOptions(n_workers=2, threads_per_worker=2, memory_limit="1GiB",
                             dashboard_address=None)

    with connect(options) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        states = list(client.run(_worker_state).values())
        pools = list(client.run(_arrow_memory_pool).values())

    assert len(workers) == 2
    assert [worker["nthreads"] for worker in workers] == [2, 2]
    assert [worker["memory_limit"] for worker in workers] == [2**30, 2**30]
    assert len({pid for pid, _, _ in states}) == 2, "workers run in separate processes"
    for _, shuffle_level, sigint_handler in states:
        assert shuffle_level == logging.ERROR
        # Ctrl-C in a terminal reaches the workers too; only the run process handles it.
        assert sigint_handler == signal.SIG_IGN
    assert pools == ["system", "system"]


def test_worker_environment_keeps_configured_pool():
    configured = {"MALLOC_TRIM_THRESHOLD_": 65536, "ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}

    with dask.config.set({PRE_SPAWN_ENVIRON_KEY: configured}):
        environment = worker_environment()
    with dask.config.set({PRE_SPAWN_ENVIRON_KEY: {"MALLOC_TRIM_THRESHOLD_": 65536}}):
        default = worker_environment()

    assert environment == configured
    assert default == {"MALLOC_TRIM_THRESHOLD_": 65536, "ARROW_DEFAULT_MEMORY_POOL": "system"}


def test_debug_keeps_worker_log_levels():
    options = ClusterOptions(n_workers=1, dashboard_address=None, quiet_worker_logs=False)

    with connect(options) as client:
        [(_, shuffle_level, sigint_handler)] = client.run(_worker_state).values()

    assert shuffle_level == logging.NOTSET
    assert sigint_handler == signal.SIG_IGN


def test_command_line_options_win(restore_settings):
    settings.apply_command_line({"mpp-dask.cluster.n-workers": 3,
                                 "mpp-dask.cluster.threads-per-worker": 2,
                                 "mpp-dask.cluster.memory-limit": "2GiB",
                                 "mpp-dask.cluster.dashboard-address": "127.0.0.1:0"})

    options = options_from_settings()

    assert (options.n_workers, options.threads_per_worker) == (3, 2)
    assert options.memory_limit == "2GiB"
    assert options.dashboard_address == "127.0.0.1:0"
    assert options.dashboard_port_explicit
    assert not options.is_remote


def test_invalid_cluster_settings_rejected(restore_settings):
    cases = [
        ("mpp-dask.cluster.n-workers", 0, "expected a positive integer or null"),
        ("mpp-dask.cluster.threads-per-worker", "two", "expected a positive integer or null"),
        ("mpp-dask.cluster.memory-limit", "lots", "invalid memory limit 'lots'"),
        ("mpp-dask.cluster.connect-timeout", "soon", "expected a duration"),
        ("mpp-dask.cluster.connect-timeout", 0, "is not positive"),
    ]
    for key, value, message in cases:
        with dask.config.set({key: value}):
            with pytest.raises(ConfigError, match=message):
                options_from_settings()


def test_memory_urls_need_thread_workers():
    options = ClusterOptions(processes=True)
    with pytest.raises(ConfigError, match="memory:// files exist only in this process"):
        check_storage_reachable(["/data/in", "memory://out"], options)

    check_storage_reachable(["memory://in", "memory://out"], ClusterOptions(processes=False))
    remote = ClusterOptions(scheduler_address="tcp://127.0.0.1:8786", processes=False)
    with pytest.raises(ConfigError):
        check_storage_reachable(["memory://in"], remote)


def test_memory_urls_with_thread_cluster(monkeypatch, restore_settings):
    fs = fsspec.filesystem("memory")
    fs.pipe("/mpp-dask-test/in/team_stats.mpk", pack_rows(_team_stats_rows()))
    plans = []
    real_run = pipeline.run

    def recording_run(sources, plan, registry, client=None, on_submit=None):
        plans.append(plan)
        return real_run(sources, plan, registry, client, on_submit=on_submit)

    # Records the plan of the real pipeline run, which still computes everything.
    monkeypatch.setattr(pipeline, "run", recording_run)
    try:
        with dask.config.set({"mpp-dask.cluster.processes": False,
                              "mpp-dask.storage-options": {"from_setting": 1, "shared": 1}}):
            result = CliRunner().invoke(cli, [
                "run", "-i", "memory://mpp-dask-test/in", "-o", "memory://mpp-dask-test/out",
                "-s", "resources_by_player", "--n-workers", "1",
                "--dashboard-address", "127.0.0.1:0",
                "--storage-options", json.dumps({"from_option": 2, "shared": 2})])

        assert result.exit_code == 0, result.output
        assert plans[0].storage_options == {"from_setting": 1, "from_option": 2, "shared": 2}
        assert plans[0].output_dir == "memory://mpp-dask-test/out"
        parts = fs.glob("/mpp-dask-test/out/resources_by_player/replay_id=in/*.parquet")
        assert len(parts) == 1
        with fs.open(parts[0], "rb") as stream:
            table = pq.read_table(stream)
        assert table.column("player_id").to_pylist() == [0, 1]
    finally:
        fs.rm("/mpp-dask-test", recursive=True)


def test_invalid_storage_options_rejected(tmp_path, restore_settings):
    write_aspect(tmp_path / "in", "team_stats", _team_stats_rows())
    for text, message in [("{anon: true}", "not JSON"), ("[1, 2]", "expected a JSON object")]:
        result = CliRunner().invoke(cli, ["run", "-i", str(tmp_path / "in"),
                                          "-o", str(tmp_path / "out"),
                                          "--storage-options", text])
        assert result.exit_code == ConfigError.exit_code, result.output
        assert message in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_file_urls_and_relative_paths(tmp_path):
    write_aspect(tmp_path / "replays" / "tiny", "team_stats", _team_stats_rows())
    input_url = (tmp_path / "replays" / "tiny").as_uri()
    assert input_url.startswith("file:///")

    # Run from another folder than the output's, with a relative output path:
    # workers must get it as an absolute path.
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [MPP_DASK, "run", "-i", input_url, "-o", "out", "-s", "resources_by_player",
         "--n-workers", "1", "--dashboard-address", "127.0.0.1:0"],
        cwd=work, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)

    assert result.returncode == 0, result.stderr
    assert f"output in {work / 'out'}" in result.stdout
    table = pq.read_table(work / "out" / "resources_by_player")
    assert table.column("player_id").to_pylist() == [0, 1]
    manifest_path = work / "out" / "_manifests" / "tiny" / "_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["input_dir"] == str(tmp_path / "replays" / "tiny")
