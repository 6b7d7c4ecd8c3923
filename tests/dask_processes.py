"""Real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 for the cluster tests.

Every process is started in its own session, so that stopping it also stops the
worker process its nanny spawned. :meth:`DaskProcesses.stop` ends exactly the
process groups started here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from distributed import Client

DASK = str(Path(sys.executable).with_name("dask"))
MPP_DASK = str(Path(sys.executable).with_name("mpp-dask"))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now (another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DaskProcesses:
    """A scheduler and workers started as subprocesses, with their logs in ``log_dir``."""

    def __init__(self, work_dir: Path, log_dir: Path):
        self.work_dir = work_dir
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen] = []
        self.address: str | None = None
        self.dashboard_port: int | None = None

    def _start(self, name: str, command: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")
        process = subprocess.Popen(command, cwd=self.work_dir, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()
        self.processes.append(process)
        return process

    def start_scheduler(self) -> str:
        """Start a scheduler on free ports and return its address."""
        port = free_port()
        self.dashboard_port = free_port()
        self._start("scheduler", [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--dashboard-address", f"127.0.0.1:{self.dashboard_port}"])
        self.address = f"tcp://127.0.0.1:{port}"
        return self.address

    def start_worker(self, name: str, without_mpp_dask: bool = False) -> subprocess.Popen:
        """Start one worker with its nanny; ``without_mpp_dask`` hides the editable install.

        Python's -S skips site-packages' .pth files, among them the one of the
        editable mpp-dask install, while PYTHONPATH still provides dask, pandas and
        the other packages. multiprocessing passes -S on to the worker process.
        """
        arguments = [self.address, "--host", "127.0.0.1", "--nthreads", "1", "--nworkers", "1",
                     "--no-dashboard", "--local-directory", str(self.work_dir / name),
                     "--name", name]
        if not without_mpp_dask:
            return self._start(name, [DASK, "worker", *arguments])
        env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
        return self._start(name, [sys.executable, "-S", "-m", "distributed.cli.dask_worker",
                                  *arguments], env=env)

    def wait_for_workers(self, count: int, timeout: float = 90) -> None:
        """Wait until ``count`` workers are connected to the scheduler."""
        with Client(self.address, timeout=timeout) as client:
            client.wait_for_workers(count, timeout=timeout)

    def stop(self) -> None:
        """Stop every process group started here: SIGTERM, then SIGKILL after 10 s."""
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                # The group also contains the worker process that a nanny spawned.
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
