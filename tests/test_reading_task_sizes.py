"""Sizes that Dask's ``sizeof`` reports for the reader's task results."""

from __future__ import annotations

import sys
from pathlib import Path

from dask.sizeof import sizeof
from helpers import write_aspect

from mpp_dask.reading.partitions import FileTally, confirm_range
from mpp_dask.reading.task_sizes import decode_measured_range

ROWS = 20_000


def _decoded_positions(tmp_path: Path):
    rows = [[frame, frame % 50, 7, frame % 4, frame, 0, -frame, 1, 2, 3, 90]
            for frame in range(ROWS)]
    path = write_aspect(tmp_path, "unit_positions", rows)
    size = path.stat().st_size
    decoded = decode_measured_range(str(path), aspect_name="unit_positions", offset=0,
                                    stop=size, file_size=size)
    return path, decoded


def test_decoded_range_counts_its_frame(tmp_path):
    _, decoded = _decoded_positions(tmp_path)
    frame_bytes = int(decoded.frame.memory_usage(index=False).sum())

    assert len(decoded.frame) == ROWS
    # 11 columns of 8 bytes per row. Without the registration, sizeof returns about 100.
    assert frame_bytes == ROWS * 11 * 8
    assert sizeof(decoded) >= frame_bytes
    assert sizeof(decoded) == sys.getsizeof(decoded) + sizeof(decoded.frame) + sizeof([])


def test_confirmed_partition_and_tally_sizes(tmp_path):
    path, decoded = _decoded_positions(tmp_path)
    size = path.stat().st_size

    frame, tally = confirm_range(decoded, FileTally(str(path)), urlpath=str(path),
                                 aspect_name="unit_positions", offset=0, stop=size,
                                 file_size=size)

    assert isinstance(tally, FileTally)
    assert tally.rows_kept == ROWS
    assert sizeof(tally) == sys.getsizeof(tally) + sizeof([])
    # The confirm task returns both, so its result is measured as the frame plus the tally.
    assert sizeof((frame, tally)) >= sizeof(frame) + sizeof(tally)
