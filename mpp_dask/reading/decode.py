"""Decode one byte range of an aspect file into a clean pandas partition."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache

import fsspec
import numpy as np
import pandas as pd

from mpp_dask.errors import RowProblem
from mpp_dask.reading.columns import MAX_PROBLEMS_PER_RANGE, build_clean_frame
from mpp_dask.reading.fast import fast_decode_window
from mpp_dask.reading.rows import NeedMoreData, find_row_start, scan_rows
from mpp_dask.schema import Aspect, get_aspect

# The reason of a problem where a row's frame is smaller than the frame before it.
FRAME_DECREASES = "frame decreases"

# Bytes read past the end of a range to finish its last row; doubled (and the range
# decoded again) in the rare case that is not enough.
INITIAL_OVERRUN = 64 * 1024


@dataclass
class DecodedRange:
    """A range decoded from a proposed start, before it is confirmed.

    Row numbers in ``problems`` count from 0 at ``start``; the partition layer turns
    them into file row numbers once the rows before the range are known. ``end`` is
    None when bad bytes were skipped up to the range's stop. The next row start is
    then the first candidate at or after ``next_search`` (see ``rows.RowScan``).
    ``problems`` is capped at MAX_PROBLEMS_PER_RANGE, while ``problem_count`` counts
    all of them and ``frame_order_count`` the frame decreases among them.
    ``first_frame_offset`` and ``first_frame_row`` locate the first good row, whose
    frame is ``first_frame``.
    """

    frame: pd.DataFrame
    start: int | None
    end: int | None
    next_search: int | None = None
    objects: int = 0
    problems: list[RowProblem] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    unknown_enum_codes: int = 0
    first_frame: int | None = None
    last_frame: int | None = None
    problem_count: int = 0
    frame_order_count: int = 0
    first_frame_offset: int | None = None
    first_frame_row: int | None = None


@lru_cache(maxsize=None)
def _meta(aspect_name: str) -> pd.DataFrame:
    return get_aspect(aspect_name).meta()


def empty_frame(aspect: Aspect) -> pd.DataFrame:
    """Return a new frame with zero rows and the aspect's clean columns and dtypes."""
    # Building the meta takes milliseconds for wide aspects, and small blocksizes
    # give many empty ranges.
    return _meta(aspect.name).copy()


def _frame_order_problems(frames: np.ndarray, offsets: np.ndarray,
                          row_numbers: np.ndarray) -> tuple[list[RowProblem], int]:
    """Return the first MAX_PROBLEMS_PER_RANGE frame decreases, and how many there are."""
    drops = np.flatnonzero(frames[1:] < frames[:-1]) + 1
    problems = [
        RowProblem(offset=int(offsets[i]), row=int(row_numbers[i]), reason=FRAME_DECREASES,
                   field="frame", expected=f"a frame of at least {int(frames[i - 1])}",
                   found=str(int(frames[i])))
        for i in drops[:MAX_PROBLEMS_PER_RANGE]
    ]
    return problems, len(drops)


def decode_window(window: memoryview, window_start: int, start: int | None, stop: int,
                  at_eof: bool, aspect: Aspect, skip_on_error: bool) -> DecodedRange:
    """Decode the rows starting in ``[start, stop)`` of an in-memory window.

    When ``start`` is None the first row start at or after ``window_start`` is
    proposed by scanning. Raises NeedMoreData when the window is too short.
    """
    if start is None:
        start = find_row_start(window, window_start, stop, at_eof, aspect)
        if start is None:
            return DecodedRange(frame=empty_frame(aspect), start=None, end=None)

    # A window without any problem decodes through the compiled loop. Any other
    # window, and every window where numba is missing, takes the reference path,
    # which also writes the error messages.
    fast = fast_decode_window(window, window_start, start, stop, at_eof, aspect)
    if fast is not None:
        result = DecodedRange(frame=fast.frame, start=start, end=fast.end,
                              objects=fast.objects, unknown_enum_codes=fast.unknown_enum_codes,
                              first_frame=fast.first_frame, last_frame=fast.last_frame)
        if fast.first_frame is not None:
            result.first_frame_offset = int(fast.offsets[0])
            result.first_frame_row = 0
        return result

    scan = scan_rows(window, window_start, start, stop, at_eof, aspect, skip_on_error)
    offsets = np.asarray(scan.offsets, dtype=np.int64)
    row_numbers = np.asarray(scan.row_numbers, dtype=np.int64)
    columns = build_clean_frame(scan.rows, offsets, aspect, row_base=0)
    for index, problem in enumerate(columns.problems):
        # Column checks number rows by position among the valid-shaped rows.
        columns.problems[index] = _renumber(problem, row_numbers)

    frame = columns.frame
    problems = scan.problems + columns.problems
    problem_count = scan.problem_count + columns.problem_count
    dropped = scan.dropped
    good = None if columns.bad_rows is None else ~columns.bad_rows
    if good is not None and skip_on_error:
        dropped.update(columns.drop_reasons)
        frame = frame[good].reset_index(drop=True)
        offsets = offsets[good]
        row_numbers = row_numbers[good]
        good = None

    result = DecodedRange(frame=frame, start=start, end=scan.end,
                          next_search=scan.next_search, objects=scan.objects,
                          dropped=dropped, unknown_enum_codes=columns.unknown_enum_codes)
    order_problems = []
    if aspect.time_series and len(frame):
        # Only good rows count for frame order, because bad ones contain placeholders.
        frames = frame["frame"].to_numpy()
        if good is not None:
            frames, offsets, row_numbers = frames[good], offsets[good], row_numbers[good]
        order_problems = _note_frame_order(result, frames, offsets, row_numbers)

    problems += order_problems
    problems.sort(key=lambda p: p.offset)
    result.problems = problems[:MAX_PROBLEMS_PER_RANGE]
    if order_problems and all(p.reason != FRAME_DECREASES for p in result.problems):
        # Frame decreases past the cap are kept, because they fail even a decode that
        # skips bad rows.
        result.problems += order_problems
    result.problem_count = problem_count + result.frame_order_count
    return result


def _note_frame_order(result: DecodedRange, frames: np.ndarray, offsets: np.ndarray,
                      row_numbers: np.ndarray) -> list[RowProblem]:
    """Store the first and last frame of the good rows in ``result``; return frame decreases."""
    order_problems, result.frame_order_count = _frame_order_problems(frames, offsets,
                                                                     row_numbers)
    if len(frames):
        result.first_frame = int(frames[0])
        result.last_frame = int(frames[-1])
        result.first_frame_offset = int(offsets[0])
        result.first_frame_row = int(row_numbers[0])
    return order_problems


def _renumber(problem: RowProblem, row_numbers: np.ndarray) -> RowProblem:
    return replace(problem, row=int(row_numbers[problem.row]))


def decode_range(urlpath: str, *, aspect_name: str, offset: int, stop: int, file_size: int,
                 start: int | None = None, skip_on_error: bool = False,
                 storage_options: dict | None = None,
                 compression: str | None = None) -> DecodedRange:
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
    compression : str, optional
        fsspec compression of the file. A compressed file is decompressed whole and
        decoded as one range; offsets then count in the decompressed bytes.

    Returns
    -------
    DecodedRange
        The clean rows, the start used, the natural end of the range and any problems.
    """
    aspect = get_aspect(aspect_name)
    fs, path = fsspec.core.url_to_fs(urlpath, **(storage_options or {}))
    if offset == 0 and start is None:
        start = 0

    if compression is not None:
        with fs.open(path, "rb", compression=compression) as stream:
            data = stream.read()
        return decode_window(memoryview(data), 0, 0, len(data), True, aspect, skip_on_error)

    overrun = INITIAL_OVERRUN
    while True:
        read_end = min(file_size, stop + overrun)
        window = memoryview(fs.cat_file(path, start=offset, end=read_end))
        at_eof = read_end >= file_size
        try:
            return decode_window(window, offset, start, stop, at_eof, aspect, skip_on_error)
        except NeedMoreData:
            overrun *= 4
