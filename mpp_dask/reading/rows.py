"""Stream MessagePack rows out of a byte window, and propose where rows start.

A byte range of an aspect file rarely starts on a row boundary. The row format has
no delimiter, so a position is only a *candidate* row start when a valid array
header for the aspect sits there and the rows decoded from it look valid (see
``_rows_look_valid``). A candidate can still be wrong (a string payload may hold
bytes that look like a run of rows); the partition layer confirms each proposal
against the previous range's natural end, which is exact by induction from offset 0.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import msgpack

from mpp_dask.errors import RowProblem
from mpp_dask.reading.columns import (
    INT64_MAX, INT64_MIN, MAX_PROBLEMS_PER_RANGE, is_valid_utf8, type_name,
)
from mpp_dask.schema import ASPECTS, Aspect, RawType

# Rows decoded past a candidate start before it is proposed. More rows mean fewer
# wrong proposals (each costs one re-decode) but a longer scan at every boundary.
CANDIDATE_ROWS = 8

# No field of any aspect contains long strings; the limit makes a corrupt length
# header fail at once instead of waiting for gigabytes of payload.
MAX_STR_BYTES = 1 << 20

# What ``Unpacker.unpack`` raises on bytes that are not valid MessagePack within
# the limits: ValueError and its subclasses (FormatError, StackError, limits), and
# TypeError for a map key that cannot be hashed, such as an array.
UNPACK_ERRORS = (ValueError, TypeError)


class NeedMoreData(Exception):
    """The window ends inside a row that must be decoded, and the file goes on."""


class RowTooLarge(ValueError):
    """A value runs past the maximum number of bytes that a valid row can take."""

    def __init__(self, max_bytes: int):
        super().__init__(f"no row ends within {max_bytes} bytes")
        self.max_bytes = max_bytes


@lru_cache(maxsize=None)
def max_row_bytes(aspect_name: str) -> int:
    """Return the maximum number of bytes a valid row of the aspect can take.

    An int field takes at most 9 bytes (int64, uint64 or float64), a bool 1 and a
    string 5 plus MAX_STR_BYTES, and the array header at most 5.
    """
    sizes = {RawType.INT: 9, RawType.BOOL: 1, RawType.STR: 5 + MAX_STR_BYTES}
    return 5 + sum(sizes[fld.raw_type] for fld in ASPECTS[aspect_name].fields)


def make_unpacker(aspect: Aspect, buffer_size: int) -> msgpack.Unpacker:
    """Return a streaming unpacker whose limits reject any header too large for a row.

    msgpack 1.2.4 checks string and binary lengths only once the payload is
    buffered, so RowStream also bounds the bytes of each row. Invalid UTF-8 in a
    string does not stop the unpacker. The bad bytes become lone surrogates
    (``surrogateescape``), and the column checks report them with the field.
    """
    return msgpack.Unpacker(
        raw=False,
        unicode_errors="surrogateescape",
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
        self._max_row_bytes = max_row_bytes(aspect.name)

    def tell(self) -> int:
        """Return the file offset after the last unpacked value."""
        return self._base + self._unpacker.tell()

    def unpack(self) -> object:
        """Return the next value.

        Raises
        ------
        msgpack.OutOfData
            At the end of the window.
        RowTooLarge
            When the value does not end within ``max_row_bytes`` bytes. The unpacker
            checks string and binary lengths only once the whole payload is
            buffered, so without this limit a corrupt length header would make the
            caller read ever larger windows, up to the rest of the file.
        """
        value_start = self.tell() - self._window_start
        while True:
            try:
                return self._unpacker.unpack()
            except msgpack.OutOfData:
                if self._fed_to - value_start >= self._max_row_bytes:
                    raise RowTooLarge(self._max_row_bytes) from None
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
        return kind is float and value.is_integer() and INT64_MIN <= value < 2.0**63
    if raw_type is RawType.BOOL:
        return kind is bool
    return kind is str and is_valid_utf8(value)


def row_conforms(row: object, aspect: Aspect) -> bool:
    """Return whether a decoded value is a valid row of ``aspect``."""
    if type(row) is not list or not aspect.min_row_length <= len(row) <= aspect.max_row_length:
        return False
    return all(_value_conforms(value, fld.raw_type, fld.nullable)
               for value, fld in zip(row, aspect.fields))


def shape_problem(row: object, aspect: Aspect, offset: int, row_number: int) -> RowProblem | None:
    """Return why a decoded value cannot be a row of ``aspect``, or None if its shape fits."""
    if type(row) is not list:
        return RowProblem(offset=offset, row=row_number, reason="row is not an array",
                          expected="an array", found=type_name(row))
    if len(row) < aspect.min_row_length:
        last_required = aspect.fields[aspect.min_row_length - 1].raw_name
        return RowProblem(offset=offset, row=row_number, reason="row too short",
                          field=aspect.fields[len(row)].raw_name,
                          expected=f"at least {aspect.min_row_length} elements "
                                   f"(every field up to {last_required} is required)",
                          found=f"{len(row)} elements")
    if len(row) > aspect.max_row_length:
        return RowProblem(offset=offset, row=row_number, reason="row too long",
                          expected=f"at most {aspect.max_row_length} elements",
                          found=f"{len(row)} elements")
    return None


def describe_undecodable(data: memoryview, aspect: Aspect,
                         error: Exception) -> tuple[str, str, str]:
    """Return (reason, expected, found) for a row the unpacker rejected.

    ``data`` starts at the rejected row. The unpacker's limits reject a header that
    claims more elements than any row has before reading its payload, so such a
    header is named by its claimed size.
    """
    if isinstance(error, RowTooLarge):
        return ("row too large", f"a row of at most {error.max_bytes} bytes",
                f"no row end within {error.max_bytes} bytes")
    header = bytes(data[:5])
    first = header[0] if header else None
    claimed = None
    kind = "array"
    if first is not None and 0x90 <= first <= 0x9F:
        claimed = first & 0x0F
    elif first is not None and 0x80 <= first <= 0x8F:
        claimed, kind = first & 0x0F, "map"
    elif first in (0xDC, 0xDE) and len(header) >= 3:
        claimed = int.from_bytes(header[1:3], "big")
        kind = "array" if first == 0xDC else "map"
    elif first in (0xDD, 0xDF) and len(header) >= 5:
        claimed = int.from_bytes(header[1:5], "big")
        kind = "array" if first == 0xDD else "map"

    if kind == "array" and claimed is not None and claimed > aspect.max_row_length:
        return ("row too long", f"an array of at most {aspect.max_row_length} elements",
                f"an array header claiming {claimed} elements")
    if kind == "map" and claimed is not None:
        entries = "entry" if claimed == 1 else "entries"
        return ("row is not an array", "an array",
                f"a map header claiming {claimed} {entries}")
    if first == 0xC1:
        return ("invalid MessagePack", "an array row", "byte 0xc1, which MessagePack never uses")
    detail = str(error) or type(error).__name__
    return "invalid MessagePack", "an array row", f"undecodable bytes ({detail})"


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
    """Return whether a run of rows that looks valid starts at ``position`` of the window.

    The first row must match the schema. Each of the next rows, up to CANDIDATE_ROWS
    rows in all, must at least be an array, so that a bad row near the candidate
    does not hide the valid rows before it. A start inside a row is still rejected,
    because the value after its first "row" is then the rest of a real row, rarely
    an array. Frames of the rows that match the schema must not decrease. The run
    also looks valid when it ends early, after the first row, at the end of the
    file or at bytes that are not MessagePack, which are the scan's next problem.

    NOTE: when the scan resumes after bad bytes, such a short run can also start
    inside random bytes, so a skipping decode can keep a row that was never written.
    The first row must match the schema, which makes this rare but not impossible.

    Raises
    ------
    NeedMoreData
        If the window ends before enough rows were seen and the file goes on.
    """
    stream = RowStream(window, 0, position, aspect, chunk_size=1024)
    time_series = aspect.time_series
    previous_frame = None

    for index in range(CANDIDATE_ROWS):
        if stream.tell() == len(window):
            if at_eof:
                return True
            raise NeedMoreData
        try:
            row = stream.unpack()
        except msgpack.OutOfData:
            if not at_eof:
                raise NeedMoreData from None
            return index > 0
        except UNPACK_ERRORS:
            return index > 0

        if row_conforms(row, aspect):
            if time_series:
                if previous_frame is not None and row[0] < previous_frame:
                    return False
                previous_frame = row[0]
        elif index == 0 or type(row) is not list:
            return False
    return True


def find_row_start(window: memoryview, window_start: int, stop: int, at_eof: bool,
                   aspect: Aspect) -> int | None:
    """Propose the first row start in ``[window_start, stop)``.

    Returns
    -------
    int or None
        The absolute offset of the first candidate whose rows look valid, or
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
    """Structurally valid rows of one range, with where each starts.

    ``end`` is the natural end of the range: the first row start at or after its
    stop. It is None when the scan skipped bad bytes and found no row start before
    the stop. The next row start is then the first candidate at or after
    ``next_search``, which a later range proposes. ``problems`` contains at most
    MAX_PROBLEMS_PER_RANGE reports, and ``problem_count`` counts all of them.
    """

    rows: list = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    row_numbers: list[int] = field(default_factory=list)
    end: int | None = 0
    next_search: int | None = None
    objects: int = 0
    problems: list[RowProblem] = field(default_factory=list)
    problem_count: int = 0
    dropped: Counter = field(default_factory=Counter)

    def add_problem(self, problem: RowProblem) -> None:
        """Record a problem that makes its row be dropped."""
        self.problem_count += 1
        self.dropped[problem.reason] += 1
        if len(self.problems) < MAX_PROBLEMS_PER_RANGE:
            self.problems.append(problem)


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
        Re-synchronise after bytes that are not rows, at the next candidate row
        start, instead of stopping there.

    Returns
    -------
    RowScan
        Rows of valid shape, their offsets and row numbers (counted from 0 at
        ``start``), the natural end and the problems found. Every decoded value
        counts as a row. An array of the wrong length is a problem, and the scan goes
        on after it. Bytes that are not MessagePack and values that are not arrays
        are problems too, after which the scan stops, or with ``skip_on_error``
        goes on at the next candidate row start.

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
            scan.add_problem(RowProblem(
                offset=position, row=scan.objects, reason="truncated row",
                expected="a complete MessagePack array",
                found=f"end of file after {window_end - position} bytes"))
            position = window_end
            break
        except UNPACK_ERRORS as exc:
            reason, expected, found = describe_undecodable(
                window[position - window_start:], aspect, exc)
            scan.add_problem(RowProblem(offset=position, row=scan.objects, reason=reason,
                                        expected=expected, found=found))
            resume_from = position + 1
        else:
            next_position = stream.tell()
            problem = shape_problem(row, aspect, position, scan.objects)
            scan.objects += 1
            if problem is None:
                scan.rows.append(row)
                scan.offsets.append(position)
                scan.row_numbers.append(scan.objects - 1)
                position = next_position
                continue
            scan.add_problem(problem)
            if type(row) is list:
                # An array of the wrong length still ends where the next row starts.
                position = next_position
                continue
            # Any other value means that these bytes are not rows, as when zeros
            # decode as integers. So the scan looks for the next row start.
            resume_from = next_position

        if not skip_on_error:
            position = window_end
            break
        resumed = _resynchronise(window, window_start, resume_from, stop, at_eof, aspect)
        if resumed is None:
            scan.end = None
            scan.next_search = resume_from
            return scan
        position = resumed
        stream = RowStream(window, window_start, position, aspect)

    scan.end = position
    return scan


def _resynchronise(window: memoryview, window_start: int, position: int, stop: int,
                   at_eof: bool, aspect: Aspect) -> int | None:
    """Return the first candidate row start in ``[position, stop)``, or None.

    The search ends at ``stop`` so that the result does not depend on how far the
    window reaches. Past ``stop``, the next range proposes the same candidate that a
    longer search would find.
    """
    if position >= stop:
        return None
    return find_row_start(window[position - window_start:], position, stop, at_eof, aspect)
