"""Quiet the messages that distributed logs during a normal run.

A run of mpp-dask shuffles data with P2P shuffles and may be cancelled with
Ctrl-C; distributed (2026.8) reports both at WARNING level, once per shuffle or
task, from the scheduler and from every worker process. A task that finds bad
input data raises one of mpp-dask's errors, which the worker also logs with its
traceback although the run reports it once, naming file, byte offset and row.
The command line calls :func:`quiet_this_process` and
:func:`quiet_local_worker` on the workers of the LocalCluster it starts
(:mod:`mpp_dask.local_workers`), except with ``--log-level DEBUG``. Workers of
a remote cluster log to their own terminals and keep their levels.
"""

from __future__ import annotations

import logging

from mpp_dask import errors

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


def _error_class_names(base: type) -> set[str]:
    names = {base.__name__}
    for subclass in base.__subclasses__():
        names |= _error_class_names(subclass)
    return names


class _ReportedFailureFilter(logging.Filter):
    """Drop a worker's "Compute Failed" record when the task raised an mpp-dask error.

    The record's fourth argument is the ``repr`` of the exception, such as
    ``"DecodeError('invalid data in ...')"``. Other failures, bugs included, are kept.
    """

    def __init__(self):
        super().__init__()
        self._prefixes = tuple(f"{name}(" for name in _error_class_names(errors.MppDaskError))

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Compute Failed") or len(record.args or ()) < 4:
            return True
        return not str(record.args[3]).startswith(self._prefixes)


class _ClosingHeartbeatFilter(logging.Filter):
    """Drop the traceback of a heartbeat cut off by the scheduler closing.

    The scheduler of a LocalCluster lives in the run's own process. It goes away
    only when the run ends or dies, and the run reports its own death. A worker
    whose heartbeat is in flight at that moment logs a long traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Failed to communicate with scheduler during heartbeat."


# One instance each, so that setting up a process twice adds no second filter.
_reported_failure_filter = _ReportedFailureFilter()
_closing_heartbeat_filter = _ClosingHeartbeatFilter()


def quiet_this_process() -> None:
    """Raise the noisy loggers of this process (client, LocalCluster scheduler) to ERROR."""
    for logger_name, level in NOISY_LOGGERS.items():
        logging.getLogger(logger_name).setLevel(level)
    logging.getLogger("asyncio").addFilter(_abandoned_gather_filter)


def quiet_local_worker() -> None:
    """Quiet a worker process of the LocalCluster that the run started.

    Sets the levels of :data:`NOISY_LOGGERS` and drops failures that the run
    reports itself. Not for the workers of a remote cluster: their logs belong to
    the people who run them.
    """
    for logger_name, level in NOISY_LOGGERS.items():
        logging.getLogger(logger_name).setLevel(level)
    worker_logger = logging.getLogger("distributed.worker")
    worker_logger.addFilter(_reported_failure_filter)
    worker_logger.addFilter(_closing_heartbeat_filter)
