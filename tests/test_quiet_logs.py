"""What a run prints when a task fails on bad data: the run's own error, once."""

from __future__ import annotations

import logging
import subprocess
import sys

from helpers import pack_rows
from mpp_dask.quiet_logs import quiet_local_worker


def _compute_failed(exception_text: str) -> logging.LogRecord:
    return logging.LogRecord(
        "distributed.worker", logging.ERROR, __file__, 1,
        "Compute Failed\nKey:       %s\nState:     %s\nTask:  %s\nException: %r\nTraceback: %r\n",
        ("key", "executing", "task", exception_text, "traceback"), None)


def test_worker_drops_only_failures_the_run_reports():
    quiet_local_worker()
    worker_logger = logging.getLogger("distributed.worker")

    assert not worker_logger.filter(_compute_failed("DecodeError('invalid data in f')"))
    assert not worker_logger.filter(_compute_failed("FrameOrderError('frames decrease')"))
    assert worker_logger.filter(_compute_failed("ZeroDivisionError('division by zero')"))
    assert worker_logger.filter(logging.LogRecord(
        "distributed.worker", logging.ERROR, __file__, 1, "Some other message", (), None))


def test_bad_data_prints_one_clear_error(tmp_path):
    replay = tmp_path / "replay"
    replay.mkdir()
    good = [[30 * i, 1, 2, 100 + i, 5, 200, 6, 7, i, 150, False, 10, 0, 20] for i in range(20)]
    (replay / "damage_log.mpk").write_bytes(pack_rows(good[:10]) + b"\xc1" * 4
                                            + pack_rows(good[10:]))

    result = subprocess.run(
        [sys.executable, "-m", "mpp_dask", "run", "r", "-i", str(replay),
         "-o", str(tmp_path / "out"), "-s", "damage_by_unit_def", "--n-workers", "1",
         "--no-progress", "--dashboard-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=300)

    assert result.returncode == 4, result.stderr
    assert "error: invalid data in" in result.stderr
    assert "row 10" in result.stderr
    assert "Compute Failed" not in result.stderr
    assert "Traceback" not in result.stderr
