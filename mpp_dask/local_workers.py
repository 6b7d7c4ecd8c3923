"""Set up the worker processes of the LocalCluster that a run starts.

Ctrl-C in a terminal sends SIGINT to every process of the foreground group, the
LocalCluster's worker processes included. Each would print a KeyboardInterrupt
traceback, although the run process closes them anyway, so they ignore SIGINT.
Unless asked to keep every message, they are also quieted with
:func:`mpp_dask.quiet_logs.quiet_local_worker`.
"""

from __future__ import annotations

import signal
import threading

from distributed.diagnostics.plugin import WorkerPlugin

from mpp_dask.quiet_logs import quiet_local_worker


class LocalWorkerSetup(WorkerPlugin):
    """Ignore SIGINT and, when ``quiet``, quiet the logs of each worker process."""

    name = "mpp-dask-local-worker-setup"

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def setup(self, worker) -> None:
        if self.quiet:
            quiet_local_worker()
        # Only the main thread may change signal handlers. It runs the worker's event
        # loop in a worker process, but not in a LocalCluster of threads, whose
        # workers share the run's process and must leave its Ctrl-C alone.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
