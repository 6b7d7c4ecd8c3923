"""Quiet the messages that distributed logs as warnings during a normal run.

A run of mpp-dask shuffles data with P2P shuffles and may be cancelled with
Ctrl-C; distributed (2026.8) reports both at WARNING level, once per shuffle or
task, from the scheduler and from every worker process. The command line calls
:func:`quiet_this_process` and sets the same levels on the workers of the
LocalCluster it starts (:mod:`mpp_dask.local_workers`), except with
``--log-level DEBUG``. Workers of a remote cluster log to their own terminals
and keep their levels.
"""

from __future__ import annotations

import logging

try:
    from distributed.client import AllExit
except ImportError:  # a later distributed may move or drop it; then nothing is dropped
    AllExit = None

# Logger name -> the level it is raised to.
NOISY_LOGGERS = {
    # "Shuffle <id> initialized by task ...", "... deactivated due to stimulus ..."
    # and restarts after a lost worker, for every P2P shuffle.
    "distributed.shuffle": logging.ERROR,
    # "Async instruction for <Task ...> ended with CancelledError" for each task
    # that was running when the run was interrupted.
    "distributed.worker.state_machine": logging.ERROR,
}


class _AbandonedGatherFilter(logging.Filter):
    """Drop asyncio's "Task exception was never retrieved" for gathers cut off by Ctrl-C.

    When the main thread is interrupted inside ``Client.gather``, the client's
    waiting tasks end with ``AllExit`` when no coroutine awaits them any more.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (AllExit is not None and isinstance(exc, AllExit))


_abandoned_gather_filter = _AbandonedGatherFilter()


def quiet_this_process() -> None:
    """Raise the noisy loggers of this process (client, LocalCluster scheduler) to ERROR."""
    for logger_name, level in NOISY_LOGGERS.items():
        logging.getLogger(logger_name).setLevel(level)
    logging.getLogger("asyncio").addFilter(_abandoned_gather_filter)
