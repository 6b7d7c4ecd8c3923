"""Decode one byte range of an aspect file into a clean pandas partition."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import fsspec
import numpy as np
import pandas as pd

from mpp_dask.errors import RowProblem
from mpp_dask.reading.columns import build_clean_frame
from mpp_dask.reading.rows import NeedMoreData, find_row_start, scan_rows
from mpp_dask.schema import Aspect, get_aspect

# Bytes read past the end of a range to finish its last row; doubled (and the range
# decoded again) in the rare case that is not enough.
INITIAL_OVERRUN = 64 * 1024


@dataclass
class DecodedRange:
    """A range decoded from a proposed start, before it is confirmed.

    Row numbers in ``problems`` count from 0 at ``start``; the partition layer turns
    them into file row numbers once the rows before the range are known.
    """

    frame: pd.DataFrame
    start: int | None
    end: int | None
    objects: int = 0
    problems: list[RowProblem] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    unknown_enum_codes: int = 0
    first_frame: int | None = None
    last_frame: int | None = None


def _frame_order_problems(frame: pd.DataFrame, offsets: np.ndarray,
                          row_numbers: np.ndarray) -> list[RowProblem]:
    frames = frame["frame"].to_numpy()
    drops = np.flatnonzero(frames[1:] < frames[:-1]) + 1
    return [
        RowProblem(offset=int(offsets[i]), row=int(row_numbers[i]), reason="frame decreases",
                   field="frame", expected=f"a frame of at least {int(frames[i - 1])}",
                   found=str(int(frames[i])))
        for i in drops
    ]


def decode_window(window: memoryview, window_start: int, start: int | None, stop: int,
                  at_eof: bool, aspect: Aspect, skip_on_error: bool) -> DecodedRange:
    """Decode the rows starting in ``[start, stop)`` of an in-memory window.

    When ``start`` is None the first row start at or after ``window_start`` is
    proposed by scanning. Raises NeedMoreData when the window is too short.
    """
    if start is None:
        start = find_row_start(window, window_start, stop, at_eof, aspect)
        if start is None:
            return DecodedRange(frame=aspect.meta(), start=None, end=None)

    scan = scan_rows(window, window_start, start, stop, at_eof, aspect, skip_on_error)
    offsets = np.asarray(scan.offsets, dtype=np.int64)
    row_numbers = np.asarray(scan.row_numbers, dtype=np.int64)
    columns = build_clean_frame(scan.rows, offsets, aspect, row_base=0)
    for index, problem in enumerate(columns.problems):
        # Column checks number rows by position among the valid-shaped rows.
        columns.problems[index] = _renumber(problem, row_numbers)

    frame = columns.frame
    problems = scan.problems + columns.problems
    dropped = scan.dropped
    if columns.bad_rows is not None and skip_on_error:
        keep = ~columns.bad_rows
        dropped.update(_reason_per_row(columns.problems))
        frame = frame[keep].reset_index(drop=True)
        offsets = offsets[keep]
        row_numbers = row_numbers[keep]

    if aspect.time_series and len(frame):
        problems += _frame_order_problems(frame, offsets, row_numbers)

    problems.sort(key=lambda p: p.offset)
    result = DecodedRange(frame=frame, start=start, end=scan.end, objects=scan.objects,
                          problems=problems, dropped=dropped,
                          unknown_enum_codes=columns.unknown_enum_codes)
    if aspect.time_series and len(frame):
        result.first_frame = int(frame["frame"].iat[0])
        result.last_frame = int(frame["frame"].iat[-1])
    return result


def _renumber(problem: RowProblem, row_numbers: np.ndarray) -> RowProblem:
    return replace(problem, row=int(row_numbers[problem.row]))


def _reason_per_row(problems: list[RowProblem]) -> list[str]:
    """Return one drop reason per bad row: the first problem found in that row."""
    seen: dict[int, str] = {}
    for problem in problems:
        seen.setdefault(problem.offset, problem.reason)
    return list(seen.values())


def decode_range(urlpath: str, *, aspect_name: str, offset: int, stop: int, file_size: int,
                 start: int | None = None, skip_on_error: bool = False,
                 storage_options: dict | None = None) -> DecodedRange:
    """Read a byte range of an aspect file and decode the rows that start in it.

    Parameters
    ----------
    urlpath : str
        Path or fsspec URL of the aspect file.
    aspect_name : str
        Name of the aspect the file holds.
    offset, stop : int
        The range ``[offset, stop)``; a row belongs to the range its first byte lies in.
    file_size : int
        Size of the file, as seen when the ranges were planned.
    start : int, optional
        Known offset of the first row start in the range. When not given it is
        proposed by scanning from ``offset`` (offset 0 is always a row start).
    skip_on_error : bool
        Drop bad rows instead of reporting them as problems only.
    storage_options : dict, optional
        Passed to fsspec to open ``urlpath``.

    Returns
    -------
    DecodedRange
        The clean rows, the start used, the natural end of the range and any problems.
    """
    aspect = get_aspect(aspect_name)
    fs, path = fsspec.core.url_to_fs(urlpath, **(storage_options or {}))
    if offset == 0 and start is None:
        start = 0

    overrun = INITIAL_OVERRUN
    while True:
        read_end = min(file_size, stop + overrun)
        window = memoryview(fs.cat_file(path, start=offset, end=read_end))
        at_eof = read_end >= file_size
        try:
            return decode_window(window, offset, start, stop, at_eof, aspect, skip_on_error)
        except NeedMoreData:
            overrun *= 4
