"""Set up the worker processes of the LocalCluster that a run starts.

Ctrl-C in a terminal sends SIGINT to every process of the foreground group, the
LocalCluster's worker processes included. Each would print a KeyboardInterrupt
traceback, although the run process closes them anyway, so they ignore SIGINT.
They also get the log levels of :data:`mpp_dask.quiet_logs.NOISY_LOGGERS`.
"""

from __future__ import annotations

import logging
import signal
import threading

from distributed.diagnostics.plugin import WorkerPlugin


class LocalWorkerSetup(WorkerPlugin):
    """Ignore SIGINT and set the levels of named loggers on each worker process."""

    name = "mpp-dask-local-worker-setup"

    def __init__(self, logger_levels: dict[str, int]):
        self.logger_levels = dict(logger_levels)

    def setup(self, worker) -> None:
        for logger_name, level in self.logger_levels.items():
            logging.getLogger(logger_name).setLevel(level)
        # Only the main thread may change signal handlers. It runs the worker's event
        # loop in a worker process, but not in a LocalCluster of threads, whose
        # workers share the run's process and must leave its Ctrl-C alone.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
