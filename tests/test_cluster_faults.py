"""Ctrl-C in the middle of a run, and prompt exits of many short runs, on real LocalClusters."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dask_processes import MPP_DASK
from helpers import write_aspect

pytestmark = pytest.mark.slow

EXIT_INTERRUPTED = 130
LOOP_RUNS = 20
# A tiny run took 2.7 to 9.6 s on 2 cores shared with other test runs: Python start
# and imports, the LocalCluster start and 0.1 s of work. A run that hangs at exit
# fails at this timeout.
LOOP_RUN_TIMEOUT = 60


def _start_run(*args: str, env: dict | None = None) -> tuple[subprocess.Popen, list[str]]:
    """Start ``mpp-dask run`` and collect its stderr lines in the background."""
    process = subprocess.Popen([MPP_DASK, "run", *args], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True).start()
    return process, lines


def _wait_for_line(process: subprocess.Popen, lines: list[str], text: str,
                   timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in lines):
        assert process.poll() is None, f"the run ended before {text!r}:\n{''.join(lines)}"
        assert time.monotonic() < deadline, f"no {text!r} in {timeout} s:\n{''.join(lines)}"
        time.sleep(0.1)


def test_interrupt_mid_run_leaves_nothing(example_replay, tmp_path):
    output = tmp_path / "out"
    process, lines = _start_run("-i", str(example_replay), "-o", str(output),
                                "--blocksize", "16 KiB", "--n-workers", "2",
                                "--dashboard-address", "127.0.0.1:0")
    try:
        _wait_for_line(process, lines, "stage build graphs:", timeout=180)
        # Let the workers start decoding and shuffling before the interrupt. The small
        # blocksize makes the run last long enough (hundreds of partitions) that it is
        # still computing then, even with the compiled decoder on a quiet machine.
        time.sleep(1)
        assert process.poll() is None, "the run finished before it could be interrupted"
        interrupted_at = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    exit_seconds = time.monotonic() - interrupted_at
    time.sleep(0.5)  # the reader thread takes the last lines
    stderr = "".join(lines)

    assert process.returncode == EXIT_INTERRUPTED, stderr
    assert "interrupted; nothing of the unfinished replays was committed" in stderr
    assert "Traceback" not in stderr
    unexpected = [line for line in lines if " INFO " not in line
                  and not line.startswith(("Dask dashboard: ", "interrupted; "))]
    assert unexpected == [], stderr
    assert exit_seconds < 30
    left = sorted(path.name for path in output.iterdir()) if output.exists() else []
    assert left == []


def _write_tiny_replay(folder: Path) -> None:
    rows = [[300 * (i + 1), team] + [10 * (i + 1)] * 37 for i in range(3) for team in range(2)]
    write_aspect(folder, "team_stats", rows)


def test_many_short_runs_exit_promptly(tmp_path):
    replay = tmp_path / "tiny"
    _write_tiny_replay(replay)
    # No dashboard, because its server only adds start-up time here.
    env = {**os.environ, "DASK_MPP_DASK__CLUSTER__DASHBOARD_ADDRESS": "null"}

    durations = []
    for run in range(LOOP_RUNS):
        started = time.monotonic()
        result = subprocess.run(
            [MPP_DASK, "run", "-i", str(replay), "-o", str(tmp_path / f"out-{run}"),
             "-s", "resources_by_player", "--n-workers", "1"],
            capture_output=True, text=True, timeout=LOOP_RUN_TIMEOUT, env=env,
            stdin=subprocess.DEVNULL)
        durations.append(time.monotonic() - started)
        assert result.returncode == 0, f"run {run}:\n{result.stderr}"
        assert "Traceback" not in result.stderr, f"run {run}:\n{result.stderr}"

    print(f"{LOOP_RUNS} runs: {sum(durations):.1f} s in total, "
          f"{min(durations):.1f} to {max(durations):.1f} s each")


@pytest.mark.parametrize("delay", [0.2, 0.5])
def test_interrupt_during_start_up(tmp_path, delay):
    # Importing dask, distributed and pandas takes about a second, so the signal
    # arrives while the command is still starting.
    process = subprocess.Popen([MPP_DASK, "list-stats"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)

    assert "Traceback" not in stderr
    # 0 when the command had finished; -SIGINT when the signal came before
    # Python set up its handler.
    assert process.returncode in (EXIT_INTERRUPTED, 0, -signal.SIGINT), stderr
