"""``mpp-dask run --scheduler-address`` on real ``dask scheduler`` and ``dask worker`` processes.

The module starts one scheduler and two workers on 127.0.0.1, with a working
folder that does not contain the plugin folder. The example replay is computed
on them, with a plugin stat, and compared table by table with a LocalCluster run
at the same blocksize. One of these runs loses a worker to SIGKILL half-way.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client

from dask_processes import MPP_DASK, DaskProcesses, free_port
from helpers import write_aspect
from mpp_dask.stats.registry import build_registry

pytestmark = pytest.mark.slow

# Small enough that the example replay has tens of partitions, so a run lasts
# long enough to lose a worker in the middle.
BLOCKSIZE = "256 KiB"
RUN_TIMEOUT = 300

PLUGIN_SOURCE = '''"""Test stat plugin: rows of team_stats per team."""

import pandas as pd

from mpp_dask.stats.registry import Stat


def count_rows(partition: pd.DataFrame) -> pd.DataFrame:
    counts = partition.groupby("team_id").size()
    return pd.DataFrame({"team_id": counts.index.astype("int64"),
                         "rows": counts.to_numpy().astype("int64")})


def sort_by_team(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("team_id").reset_index(drop=True)


def build(frames, params):
    counts = frames["team_stats"].map_partitions(count_rows,
                                                 meta={"team_id": "int64", "rows": "int64"})
    totals = counts.groupby("team_id").rows.sum().reset_index()
    return totals.repartition(npartitions=1).map_partitions(sort_by_team)


STAT = Stat(name="team_rows", description="Rows of team_stats per team.",
            aspects=("team_stats",), build=build, default=False)
'''


def _team_stats_rows() -> list:
    # Three teams with 4, 4 and 2 rows; every counter column is the frame / 10.
    rows = []
    for frame in range(0, 1200, 300):
        for team in range(3):
            if team < 2 or frame < 600:
                rows.append([frame, team] + [frame // 10] * 37)
    return rows


def run_cli(*args: str, env: dict | None = None,
            timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``mpp-dask`` with stderr on a pipe, so it is not a terminal."""
    return subprocess.run([MPP_DASK, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def run_cli_on_terminal(*args: str, timeout: float = RUN_TIMEOUT) -> tuple[int, str, str]:
    """Run ``mpp-dask`` with stderr on a pseudo-terminal; return (exit code, stdout, stderr)."""
    primary, secondary = os.openpty()
    process = subprocess.Popen([MPP_DASK, *args], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=secondary)
    os.close(secondary)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    data = os.read(primary, 65536)
                except OSError:  # the terminal closed because the process exited
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        else:
            process.kill()
            pytest.fail(f"mpp-dask {' '.join(args)} ran longer than {timeout} s")
        stdout = process.communicate(timeout=30)[0].decode()
    finally:
        os.close(primary)
    return process.returncode, stdout, b"".join(chunks).decode(errors="replace")


def read_tables(output: Path) -> dict[str, pa.Table]:
    """Return every table of an output folder (not _manifests or _errors), read with pyarrow."""
    return {folder.name: pq.read_table(folder) for folder in sorted(output.iterdir())
            if folder.is_dir() and not folder.name.startswith(("_", "."))}


def assert_same_tables(actual_dir: Path, expected_dir: Path) -> None:
    actual = read_tables(actual_dir)
    expected = read_tables(expected_dir)
    assert sorted(actual) == sorted(expected)
    for name, table in expected.items():
        assert actual[name].schema.equals(table.schema), name
        assert actual[name].num_rows == table.num_rows, name
        assert actual[name].equals(table), f"table {name} differs"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> DaskProcesses:
    processes = DaskProcesses(tmp_path_factory.mktemp("cluster-work"),
                              tmp_path_factory.mktemp("cluster-logs"))
    try:
        processes.start_scheduler()
        processes.start_worker("worker-1")
        processes.start_worker("worker-2")
        processes.wait_for_workers(2)
        yield processes
    finally:
        processes.stop()


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "team_rows.py").write_text(PLUGIN_SOURCE)
    return folder


@pytest.fixture(scope="module")
def stat_options() -> list[str]:
    """``-s`` options for every default stat and the plugin stat."""
    names = [stat.name for stat in build_registry().defaults()] + ["team_rows"]
    return [option for name in names for option in ("-s", name)]


@pytest.fixture(scope="module")
def local_output(tmp_path_factory, example_replay, plugin_dir, stat_options) -> Path:
    """The example replay computed on a LocalCluster: the reference for remote runs."""
    output = tmp_path_factory.mktemp("local") / "out"
    result = run_cli("run", "-i", str(example_replay), "-o", str(output), "--local",
                     "--n-workers", "2", "--dashboard-address", "127.0.0.1:0",
                     "--blocksize", BLOCKSIZE, "--plugin-dir", str(plugin_dir), *stat_options)
    assert result.returncode == 0, result.stderr
    # The P2P shuffles' lifecycle warnings are quieted below DEBUG.
    assert "initialized by task" not in result.stderr
    assert "Traceback" not in result.stderr
    return output


@pytest.fixture
def tiny_replay(tmp_path) -> Path:
    folder = tmp_path / "tiny"
    write_aspect(folder, "team_stats", _team_stats_rows())
    return folder


def test_remote_run_matches_local(cluster, example_replay, plugin_dir, stat_options,
                                  local_output, tmp_path):
    output = tmp_path / "out"

    code, stdout, terminal = run_cli_on_terminal(
        "run", "-i", str(example_replay), "-o", str(output), "--blocksize", BLOCKSIZE,
        "--scheduler-address", cluster.address, "--plugin-dir", str(plugin_dir), *stat_options)

    assert code == 0, terminal
    assert "1 done" in stdout
    assert f"Dask dashboard: http://127.0.0.1:{cluster.dashboard_port}/status" in terminal
    assert "preflight: the scheduler and 2 workers run the same versions" in terminal
    assert "shipped 1 plugin modules to the scheduler and workers" in terminal
    assert "tasks |" in terminal, "no progress bar was drawn on the terminal"
    for stage in ("stage cluster:", "stage build graphs:", "stage compute and commit:",
                  "stage shutdown:"):
        assert stage in terminal
    assert "292289 rows decoded" in terminal
    assert "team_rows" in read_tables(output)
    assert_same_tables(output, local_output)


def _tasks_in_memory(client: Client) -> int:
    return client.run_on_scheduler(
        lambda dask_scheduler: sum(task.state == "memory"
                                   for task in dask_scheduler.tasks.values()))


def test_worker_killed_mid_run(cluster, example_replay, plugin_dir, stat_options, local_output,
                               tmp_path):
    output = tmp_path / "out"
    with Client(cluster.address, timeout=30) as client:
        worker_pids = client.run(os.getpid)
        command = [MPP_DASK, "run", "-i", str(example_replay), "-o", str(output),
                   "--blocksize", BLOCKSIZE, "--scheduler-address", cluster.address,
                   "--plugin-dir", str(plugin_dir), *stat_options]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        stderr_lines: list[str] = []
        reader = threading.Thread(target=lambda: stderr_lines.extend(process.stderr), daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 120
            while _tasks_in_memory(client) < 20:
                assert process.poll() is None, "".join(stderr_lines)
                assert time.monotonic() < deadline, "the run computed no tasks in 120 s"
                time.sleep(0.2)
            victim = sorted(worker_pids.values())[0]
            os.kill(victim, signal.SIGKILL)

            stdout = process.communicate(timeout=RUN_TIMEOUT)[0]
        finally:
            if process.poll() is None:
                process.kill()
        reader.join(timeout=10)
        stderr = "".join(stderr_lines)

        assert process.returncode == 0, stderr
        assert "1 done" in stdout
        # Stderr is a pipe here, so no progress bar is drawn.
        assert "tasks |" not in stderr
        assert_same_tables(output, local_output)

        # The nanny restarts the killed worker, for the tests that follow.
        client.wait_for_workers(2, timeout=60)
        assert victim not in client.run(os.getpid).values()


def test_plugin_stat_on_remote_workers(cluster, plugin_dir, tiny_replay, tmp_path):
    output = tmp_path / "out"
    report = tmp_path / "report.html"
    assert not list(cluster.work_dir.glob("**/team_rows.py"))

    result = run_cli("run", "-i", str(tiny_replay), "-o", str(output), "-s", "team_rows",
                     "--scheduler-address", cluster.address, "--plugin-dir", str(plugin_dir),
                     "--performance-report", str(report))

    assert result.returncode == 0, result.stderr
    table = pq.read_table(output / "team_rows").to_pandas()
    assert table["team_id"].tolist() == [0, 1, 2]
    assert table["rows"].tolist() == [4, 4, 2]
    assert report.exists()
    assert "Dask Performance Report" in report.read_text()
    assert f"wrote the Dask performance report to {report}" in result.stderr


def test_no_progress_keeps_terminal_clean(cluster, tiny_replay, tmp_path):
    code, _, terminal = run_cli_on_terminal(
        "run", "-i", str(tiny_replay), "-o", str(tmp_path / "out"), "-s", "resources_by_player",
        "--scheduler-address", cluster.address, "--no-progress")

    assert code == 0, terminal
    assert "tasks |" not in terminal
    assert "stage compute and commit:" in terminal


def test_dask_scheduler_address_variable(cluster, tiny_replay, tmp_path):
    result = run_cli("run", "-i", str(tiny_replay), "-o", str(tmp_path / "out"),
                     "-s", "resources_by_player",
                     env={"DASK_SCHEDULER_ADDRESS": cluster.address})

    assert result.returncode == 0, result.stderr
    assert (f"connecting to the Dask scheduler at {cluster.address} (dask setting "
            "scheduler-address from environment DASK_SCHEDULER_ADDRESS)") in result.stderr


def test_local_flag_overrides_address_variable(tiny_replay, tmp_path):
    closed_port = free_port()

    result = run_cli("run", "-i", str(tiny_replay), "-o", str(tmp_path / "out"),
                     "-s", "resources_by_player", "--local", "--n-workers", "1",
                     "--dashboard-address", "127.0.0.1:0",
                     env={"DASK_SCHEDULER_ADDRESS": f"tcp://127.0.0.1:{closed_port}"})

    assert result.returncode == 0, result.stderr
    assert "started a local cluster with 1 workers" in result.stderr
    assert "connecting to the Dask scheduler" not in result.stderr


@pytest.mark.parametrize("listener", ["closed port", "silent listener"])
def test_unreachable_scheduler_fails_fast(listener, tiny_replay, tmp_path):
    server = None
    if listener == "silent listener":
        # Accepts connections but never sends the handshake.
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
    else:
        port = free_port()
    address = f"tcp://127.0.0.1:{port}"

    started = time.monotonic()
    try:
        result = run_cli("run", "-i", str(tiny_replay), "-o", str(tmp_path / "out"),
                         "--scheduler-address", address,
                         env={"DASK_MPP_DASK__CLUSTER__CONNECT_TIMEOUT": "2s"}, timeout=60)
    finally:
        if server is not None:
            server.close()
    elapsed = time.monotonic() - started

    assert result.returncode == 6, result.stderr
    assert f"cannot reach the Dask scheduler at {address} (--scheduler-address) within 2 s" \
        in result.stderr
    assert "Traceback" not in result.stderr
    # Python start and imports take a few seconds on a loaded machine; the connection
    # attempt adds the 2 s timeout.
    assert elapsed < 45
    assert not (tmp_path / "out").exists()


def test_preflight_rejects_unfit_clusters(tmp_path, tiny_replay):
    processes = DaskProcesses(tmp_path / "work", tmp_path / "logs")
    processes.work_dir.mkdir()
    processes.log_dir.mkdir()
    env = {"DASK_MPP_DASK__CLUSTER__CONNECT_TIMEOUT": "2s"}
    try:
        address = processes.start_scheduler()
        with Client(address, timeout=60):
            pass  # the scheduler is up

        without_workers = run_cli("run", "-i", str(tiny_replay), "-o", str(tmp_path / "out"),
                                  "--scheduler-address", address, env=env)

        processes.start_worker("fit")
        processes.start_worker("bare", without_mpp_dask=True)
        processes.wait_for_workers(2)
        with Client(address, timeout=30) as client:
            bare_address = next(address for address, info
                                in client.scheduler_info(n_workers=-1)["workers"].items()
                                if info["name"] == "bare")
        mismatched = run_cli("run", "-i", str(tiny_replay), "-o", str(tmp_path / "out"),
                             "--scheduler-address", address, env=env)
    finally:
        processes.stop()

    assert without_workers.returncode == 6, without_workers.stderr
    assert f"the Dask scheduler at {address} has no workers after 2 s" in without_workers.stderr
    assert mismatched.returncode == 6, mismatched.stderr
    assert "the cluster does not run the same software as this client" in mismatched.stderr
    assert (f"mpp-dask does not import on {bare_address}: ModuleNotFoundError: "
            "No module named 'mpp_dask'") in mismatched.stderr
    assert "Install this client's versions on the scheduler and every worker" \
        in mismatched.stderr
    assert not (tmp_path / "out").exists()
