"""Stream MessagePack rows out of a byte window, and propose where rows start.

A byte range of an aspect file rarely starts on a row boundary. The row format has
no delimiter, so a position is only a *candidate* row start when a valid array
header for the aspect sits there and the rows decoded from it match the schema.
A candidate can still be wrong (a string payload may hold bytes that look like a
run of rows); the partition layer confirms each proposal against the previous
range's natural end, which is exact by induction from offset 0.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import msgpack

from mpp_dask.errors import RowProblem
from mpp_dask.reading.columns import INT64_MAX, INT64_MIN, type_name
from mpp_dask.schema import ASPECTS, Aspect, RawType

# Rows decoded past a candidate start before it is proposed. More rows mean fewer
# wrong proposals (each costs one re-decode) but a longer scan at every boundary.
CANDIDATE_ROWS = 8

# No field of any aspect holds long strings; the limit makes a corrupt length
# header fail at once instead of waiting for gigabytes of payload.
MAX_STR_BYTES = 1 << 20


class NeedMoreData(Exception):
    """The window ends inside a row that must be decoded, and the file goes on."""


def make_unpacker(aspect: Aspect, buffer_size: int) -> msgpack.Unpacker:
    """Return a streaming unpacker whose limits reject any header too large for a row."""
    return msgpack.Unpacker(
        raw=False,
        strict_map_key=False,
        max_buffer_size=max(buffer_size, 1),
        max_array_len=aspect.max_row_length,
        max_map_len=aspect.max_row_length,
        max_str_len=MAX_STR_BYTES,
        max_bin_len=MAX_STR_BYTES,
        max_ext_len=MAX_STR_BYTES,
    )


class RowStream:
    """Unpack rows from a window, feeding the unpacker only as many bytes as it needs.

    Feeding a whole window up front would copy it into the unpacker's buffer for
    every candidate row start that is tried.
    """

    def __init__(self, window: memoryview, window_start: int, position: int, aspect: Aspect,
                 chunk_size: int = 1 << 20):
        self._window = window
        self._window_start = window_start
        self._base = position
        self._fed_to = position - window_start
        self._chunk_size = chunk_size
        self._unpacker = make_unpacker(aspect, len(window))

    def tell(self) -> int:
        """Return the file offset after the last unpacked value."""
        return self._base + self._unpacker.tell()

    def unpack(self) -> object:
        """Return the next value; raise ``msgpack.OutOfData`` at the end of the window."""
        while True:
            try:
                return self._unpacker.unpack()
            except msgpack.OutOfData:
                if self._fed_to >= len(self._window):
                    raise
                end = min(len(self._window), self._fed_to + self._chunk_size)
                self._unpacker.feed(self._window[self._fed_to:end])
                self._fed_to = end
                self._chunk_size *= 2


def _value_conforms(value: object, raw_type: RawType, nullable: bool) -> bool:
    if value is None:
        return nullable
    kind = type(value)
    if raw_type is RawType.INT:
        if kind is int:
            return INT64_MIN <= value <= INT64_MAX
        return kind is float and value.is_integer()
    if raw_type is RawType.BOOL:
        return kind is bool
    return kind is str


def row_conforms(row: object, aspect: Aspect) -> bool:
    """Return whether a decoded value is a valid row of ``aspect``."""
    if type(row) is not list or not aspect.min_row_length <= len(row) <= aspect.max_row_length:
        return False
    return all(_value_conforms(value, fld.raw_type, fld.nullable)
               for value, fld in zip(row, aspect.fields))


def shape_problem(row: object, aspect: Aspect) -> str | None:
    """Return why a decoded value cannot be a row of ``aspect``, or None if its shape fits."""
    if type(row) is not list:
        return f"expected an array row, found {type_name(row)}"
    if len(row) < aspect.min_row_length:
        return (f"row has {len(row)} elements, expected at least {aspect.min_row_length} "
                f"(every field up to {aspect.fields[aspect.min_row_length - 1].raw_name} "
                "is required)")
    if len(row) > aspect.max_row_length:
        return f"row has {len(row)} elements, expected at most {aspect.max_row_length}"
    return None


@lru_cache(maxsize=None)
def header_pattern(aspect_name: str) -> re.Pattern[bytes]:
    """Return a regex matching any MessagePack array header of a valid row length."""
    aspect = ASPECTS[aspect_name]
    alternatives = []
    for length in range(max(aspect.min_row_length, 1), aspect.max_row_length + 1):
        if length < 16:
            alternatives.append(re.escape(bytes([0x90 | length])))
        alternatives.append(re.escape(b"\xdc" + length.to_bytes(2, "big")))
        alternatives.append(re.escape(b"\xdd" + length.to_bytes(4, "big")))
    return re.compile(b"|".join(alternatives))


def _rows_look_valid(window: memoryview, position: int, at_eof: bool, aspect: Aspect) -> bool:
    """Return whether up to CANDIDATE_ROWS valid rows start at ``position`` of the window.

    Raises
    ------
    NeedMoreData
        If the window ends before enough rows were seen and the file goes on.
    """
    stream = RowStream(window, 0, position, aspect, chunk_size=1024)
    time_series = aspect.time_series
    previous_frame = None

    for _ in range(CANDIDATE_ROWS):
        if stream.tell() == len(window):
            if at_eof:
                return True
            raise NeedMoreData
        try:
            row = stream.unpack()
        except msgpack.OutOfData:
            if at_eof:
                return False
            raise NeedMoreData from None
        except (ValueError, msgpack.FormatError, msgpack.StackError):
            return False

        if not row_conforms(row, aspect):
            return False
        if time_series:
            if previous_frame is not None and row[0] < previous_frame:
                return False
            previous_frame = row[0]
    return True


def find_row_start(window: memoryview, window_start: int, stop: int, at_eof: bool,
                   aspect: Aspect) -> int | None:
    """Propose the first row start in ``[window_start, stop)``.

    Returns
    -------
    int or None
        The absolute offset of the first candidate whose rows match the schema, or
        None when no candidate starts before ``stop``.

    Raises
    ------
    NeedMoreData
        If a candidate cannot be judged without more bytes.
    """
    pattern = header_pattern(aspect.name)
    search_end = min(len(window), stop - window_start + 8)
    for match in pattern.finditer(window, 0, search_end):
        position = match.start()
        if window_start + position >= stop:
            return None
        if _rows_look_valid(window, position, at_eof, aspect):
            return window_start + position
    return None


@dataclass
class RowScan:
    """Structurally valid rows of one range, with where each starts."""

    rows: list = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    row_numbers: list[int] = field(default_factory=list)
    end: int = 0
    objects: int = 0
    problems: list[RowProblem] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)


def scan_rows(window: memoryview, window_start: int, start: int, stop: int, at_eof: bool,
              aspect: Aspect, skip_on_error: bool) -> RowScan:
    """Decode every row that starts in ``[start, stop)``.

    Parameters
    ----------
    window : memoryview
        Bytes of the file from ``window_start`` on; they must cover ``start``.
    window_start : int
        File offset of ``window[0]``.
    start : int
        File offset of the first row.
    stop : int
        Rows starting at or after this offset belong to the next range.
    at_eof : bool
        Whether the window ends at the end of the file.
    aspect : Aspect
        The schema of the rows.
    skip_on_error : bool
        Drop rows that are not arrays of a valid length and re-synchronise after bytes
        that are not MessagePack, instead of stopping at the first such problem.

    Returns
    -------
    RowScan
        Rows of valid shape, their offsets and row numbers (counted from 0 at
        ``start``), the natural end (the first row start at or after ``stop``) and the
        problems found. Without ``skip_on_error`` the scan stops at the first bytes
        that are not MessagePack.

    Raises
    ------
    NeedMoreData
        If a row starting before ``stop`` runs past the window and the file goes on.
    """
    scan = RowScan()
    window_end = window_start + len(window)
    position = start
    stream = RowStream(window, window_start, position, aspect)

    while position < stop:
        if position == window_end:
            if not at_eof:
                raise NeedMoreData
            break

        try:
            row = stream.unpack()
        except msgpack.OutOfData:
            if not at_eof:
                raise NeedMoreData from None
            scan.problems.append(RowProblem(
                offset=position, row=scan.objects, reason="truncated row",
                expected="a complete MessagePack array",
                found=f"end of file after {window_end - position} bytes"))
            scan.dropped["truncated row"] += 1
            position = window_end
            break
        except (ValueError, msgpack.FormatError, msgpack.StackError) as exc:
            scan.problems.append(RowProblem(
                offset=position, row=scan.objects, reason="invalid MessagePack",
                expected="an array row", found=str(exc) or type(exc).__name__))
            scan.dropped["invalid MessagePack"] += 1
            if not skip_on_error:
                position = window_end
                break
            position = _resynchronise(window, window_start, position + 1, at_eof, aspect)
            stream = RowStream(window, window_start, position, aspect)
            continue

        next_position = stream.tell()
        problem = shape_problem(row, aspect)
        if problem is None:
            scan.rows.append(row)
            scan.offsets.append(position)
            scan.row_numbers.append(scan.objects)
        else:
            scan.problems.append(RowProblem(offset=position, row=scan.objects, reason=problem))
            scan.dropped["invalid row shape"] += 1
        scan.objects += 1
        position = next_position

    scan.end = position
    return scan


def _resynchronise(window: memoryview, window_start: int, position: int, at_eof: bool,
                   aspect: Aspect) -> int:
    """Return the next candidate row start at or after ``position``, or the window end."""
    window_end = window_start + len(window)
    start = find_row_start(window[position - window_start:], position, window_end, at_eof,
                           aspect)
    return window_end if start is None else start
