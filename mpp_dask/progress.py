"""The terminal output of a run: a progress bar of its tasks and the rows of each replay."""

from __future__ import annotations

import logging
import sys
import threading
from typing import TextIO

from distributed import Client
from distributed.diagnostics.progress import format_time
from distributed.diagnostics.progressbar import ProgressBar

logger = logging.getLogger("mpp_dask")

# Moves the cursor to the start of the line and erases the line (ANSI escape codes).
CLEAR_LINE = "\r\33[2K"


def should_draw_bar(disabled: bool, stream: TextIO = sys.stderr) -> bool:
    """Return whether to draw a progress bar: only on a terminal ``stream``, unless ``disabled``."""
    if disabled:
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class TerminalProgressBar(ProgressBar):
    """One line on a terminal showing the finished share of the tasks of some futures.

    The scheduler's progress plugin counts every task that the futures depend on
    and sends the counts to this client every ``interval``. The bar is drawn from
    the client's event loop thread, so the main thread stays free to wait for
    results. While the bar is shown, log records first erase its line, and the
    bar reappears with the next update.
    """

    def __init__(self, futures: list, client: Client, stream: TextIO = sys.stderr,
                 width: int = 30, interval: str = "200ms"):
        super().__init__(futures, scheduler=client.scheduler.address, interval=interval,
                         complete=True)
        self.client_loop = client.loop
        self.stream = stream
        self.width = width
        self._lock = threading.Lock()
        self._visible = False
        self._stopped = False
        self._log_filter = _EraseBarFilter(self)
        self._handlers: list[logging.Handler] = []

    def start(self) -> None:
        """Start listening to the scheduler and erase the bar before each log record."""
        for handler in logging.getLogger().handlers:
            if getattr(handler, "stream", None) is self.stream:
                handler.addFilter(self._log_filter)
                self._handlers.append(handler)
        self.client_loop.add_callback(self._listen_quietly)

    async def _listen_quietly(self) -> None:
        try:
            await self.listen()
        except Exception as exc:  # a bar must never break the run it shows
            logger.debug("the progress bar stopped: %s", exc)

    def stop(self) -> None:
        """Erase the bar and stop drawing it. The run itself goes on."""
        with self._lock:
            self._stopped = True
            self._erase_locked()
        for handler in self._handlers:
            handler.removeFilter(self._log_filter)
        comm = getattr(self, "comm", None)
        if comm is not None and not comm.closed():
            self.client_loop.add_callback(comm.close)

    def erase(self) -> None:
        """Erase the bar's line if it is shown."""
        with self._lock:
            self._erase_locked()

    def _erase_locked(self) -> None:
        if self._visible:
            self._write(CLEAR_LINE)
            self._visible = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away; drawing is optional
            self._stopped = True

    def _draw_bar(self, remaining: int, all: int, **kwargs) -> None:
        done = all - remaining
        fraction = done / all if all else 1.0
        filled = int(self.width * fraction)
        line = (f"[{'#' * filled}{' ' * (self.width - filled)}] {int(100 * fraction):3d}% "
                f"| {done}/{all} tasks | {format_time(self.elapsed)}")
        with self._lock:
            if not self._stopped:
                self._write(f"{CLEAR_LINE}{line}")
                self._visible = True

    def _draw_stop(self, **kwargs) -> None:
        self.erase()


class _EraseBarFilter(logging.Filter):
    """Erase the progress bar before a log record is written to the same stream."""

    def __init__(self, bar: TerminalProgressBar):
        super().__init__()
        self.bar = bar

    def filter(self, record: logging.LogRecord) -> bool:
        self.bar.erase()
        return True


def log_rows(outcomes: list) -> None:
    """Log each replay's decoded rows per aspect (the outcomes of ``pipeline.run``)."""
    for outcome in outcomes:
        if outcome.status != "done":
            continue
        per_aspect = ", ".join(f"{name} {rows}"
                               for name, rows in sorted(outcome.rows_per_aspect.items()))
        logger.info("replay %s: %d rows decoded (%s) into %d tables", outcome.replay_id,
                    outcome.rows, per_aspect, len(outcome.tables))
