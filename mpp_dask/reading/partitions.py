"""Confirm decoded ranges in file order and give rows their file row numbers.

Every range is decoded in parallel from a *proposed* start. The confirmation is a
chain of cheap tasks, one per range, in file order: each carries the natural end of
the previous range (the first row start at or after its end), which is the true
first row start of the next range. When the proposal differs, that one range is
decoded again from the true start. Because offset 0 is a row start, the chain is
exact by induction. The same chain carries the number of rows before each range
(for row numbers in messages) and the last frame (to check that frames never
decrease across ranges, which the stats rely on).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import pandas as pd

from mpp_dask.errors import DecodeError, FrameOrderError, RowProblem
from mpp_dask.reading.decode import FRAME_DECREASES, DecodedRange, decode_range

# Problems kept per file for the errors table when bad rows are skipped.
MAX_KEPT_PROBLEMS = 1000


@dataclass
class FileTally:
    """State of the chain after a range: where the next row starts, and running totals.

    ``next_start`` is None after bad bytes were skipped up to the end of a range
    without finding a row start. The next row start is then the first candidate row
    start at or after ``next_search``, as a serial scan would find it. A range's
    proposed start is that candidate when it lies at or after ``next_search``.
    ``problems`` keeps at most MAX_KEPT_PROBLEMS problems, and ``problem_count``
    counts every problem of the ranges confirmed so far.
    """

    urlpath: str
    next_start: int | None = 0
    next_search: int | None = None
    rows_before: int = 0
    rows_kept: int = 0
    last_frame: int | None = None
    dropped: Counter = field(default_factory=Counter)
    unknown_enum_codes: int = 0
    problems: list[RowProblem] = field(default_factory=list)
    redecoded_ranges: int = 0
    problem_count: int = 0


def confirm_range(decoded: DecodedRange, previous: FileTally, *, urlpath: str,
                  aspect_name: str, offset: int, stop: int, file_size: int,
                  skip_on_error: bool = False, storage_options: dict | None = None,
                  compression: str | None = None) -> tuple[pd.DataFrame, FileTally]:
    """Check a decoded range against the previous range's natural end.

    Parameters
    ----------
    decoded : DecodedRange
        The range decoded from its proposed start.
    previous : FileTally
        The tally after the previous range of the same file (a fresh one for the
        first range).
    urlpath, aspect_name, offset, stop, file_size, skip_on_error, storage_options, compression
        As for :func:`~mpp_dask.reading.decode.decode_range`, to decode the range
        again when the proposal was wrong.

    Returns
    -------
    (pandas.DataFrame, FileTally)
        The confirmed partition and the tally after it.

    Raises
    ------
    DecodeError
        If the range contains invalid rows and ``skip_on_error`` is false.
    FrameOrderError
        If frames decrease inside the range or from the previous range to this one.
    """
    tally = replace(previous, dropped=Counter(previous.dropped),
                    problems=list(previous.problems))

    if previous.next_start is None:
        # Bad bytes were skipped past the previous range's end, so the next row starts
        # at the first candidate at or after next_search.
        if previous.next_search >= stop or decoded.start is None:
            return decoded.frame.iloc[0:0], tally
        if decoded.start < previous.next_search:
            decoded = decode_range(urlpath, aspect_name=aspect_name,
                                   offset=previous.next_search, stop=stop,
                                   file_size=file_size, skip_on_error=skip_on_error,
                                   storage_options=storage_options, compression=compression)
            tally.redecoded_ranges += 1
            if decoded.start is None:
                return decoded.frame, tally
    elif previous.next_start >= stop:
        # A row from an earlier range covers this whole range.
        return decoded.frame.iloc[0:0], tally
    elif decoded.start != previous.next_start:
        decoded = decode_range(urlpath, aspect_name=aspect_name, offset=offset, stop=stop,
                               file_size=file_size, start=previous.next_start,
                               skip_on_error=skip_on_error, storage_options=storage_options,
                               compression=compression)
        tally.redecoded_ranges += 1

    problems = [replace(p, row=None if p.row is None else p.row + previous.rows_before)
                for p in decoded.problems]
    problem_count = max(decoded.problem_count, len(problems))
    order_count = decoded.frame_order_count
    if (previous.last_frame is not None and decoded.first_frame is not None
            and decoded.first_frame < previous.last_frame):
        first_offset = decoded.first_frame_offset
        first_row = decoded.first_frame_row
        problems.append(RowProblem(
            offset=decoded.start if first_offset is None else first_offset,
            row=previous.rows_before + (first_row or 0), reason=FRAME_DECREASES,
            field="frame", expected=f"a frame of at least {previous.last_frame}",
            found=str(decoded.first_frame)))
        problems.sort(key=lambda p: p.offset)
        problem_count += 1
        order_count += 1

    if problems and not skip_on_error:
        # The first problem in file order decides the error type, so that the error
        # does not depend on the blocksize.
        error_type = FrameOrderError if problems[0].reason == FRAME_DECREASES else DecodeError
        raise error_type(urlpath, problems, total=problem_count)
    order_problems = [p for p in problems if p.reason == FRAME_DECREASES]
    if order_problems:
        # The stats rely on frame order, so this is never skipped.
        raise FrameOrderError(urlpath, order_problems, total=max(order_count,
                                                                 len(order_problems)))

    tally.next_start = decoded.end
    tally.next_search = decoded.next_search
    tally.rows_before += decoded.objects
    tally.rows_kept += len(decoded.frame)
    if decoded.last_frame is not None:
        tally.last_frame = decoded.last_frame
    tally.dropped.update(decoded.dropped)
    tally.unknown_enum_codes += decoded.unknown_enum_codes
    tally.problems.extend(problems[:max(MAX_KEPT_PROBLEMS - len(tally.problems), 0)])
    tally.problem_count += problem_count
    return decoded.frame, tally
