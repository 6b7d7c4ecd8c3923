"""Decode clean windows straight from MessagePack bytes into typed columns.

The reference decoder (``rows.scan_rows`` then ``columns.build_clean_frame``) turns
every value into a Python object before it builds columns. This module walks the
bytes of a window with one compiled loop instead, writing each field into a
preallocated int64 column and each nullable field into a null mask.

The loop handles only windows that are entirely valid. It stops at the first
problem, string field or row that runs past the window, and reports a status and
the offset of that row. :func:`fast_decode_window` then returns None, and the caller
decodes the window with the reference path, which reports the exact problems.

The loop is one numba function for every aspect. What it checks per field comes
from a plan of small arrays derived from :mod:`mpp_dask.schema`, so all aspects
share one compiled (and on-disk cached) specialisation. Without numba the module
still imports and :func:`fast_decode_window` returns None.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

# NOTE: _clean_series is private to columns.py. Sharing it keeps the enum and
# dequantization transforms of both decoders identical.
from mpp_dask.reading.columns import _clean_series
from mpp_dask.schema import Aspect, RawType


class ScanStatus(IntEnum):
    """Reason the compiled loop stopped."""

    # Every row starting before ``stop`` was decoded and is valid.
    OK = 0
    # The window ended before ``stop``: inside a row, or between rows while the
    # file goes on. At the end of the file a row cut short is a truncated row.
    WINDOW_END = 1
    # A row is not an array of a valid length, or a value does not fit its field.
    INVALID = 2
    # A row reaches a string field, and strings are left to the reference path.
    STRING_FIELD = 3
    # A row's frame is smaller than the frame of the row before it.
    FRAME_ORDER = 4
    # The output columns are full, and a call with larger ones can resume.
    CAPACITY = 5


# Field kinds of the plan, one int8 per field.
KIND_INT = 0
KIND_BOOL = 1
KIND_STR = 2

_KIND_OF_RAW_TYPE = {RawType.INT: KIND_INT, RawType.BOOL: KIND_BOOL, RawType.STR: KIND_STR}


@dataclass(frozen=True)
class ColumnPlan:
    """Per-field checks of the compiled loop for one aspect.

    ``kinds`` contains a KIND_* code per field. ``null_slots`` contains, per field,
    its row in the null-mask matrix, or -1 for a non-nullable field.
    """

    kinds: np.ndarray
    null_slots: np.ndarray
    nullable_count: int
    min_row_length: int
    time_series: bool
    has_strings: bool


@lru_cache(maxsize=None)
def column_plan(aspect: Aspect) -> ColumnPlan:
    """Derive the compiled loop's per-field plan from the aspect's schema."""
    kinds = np.array([_KIND_OF_RAW_TYPE[f.raw_type] for f in aspect.fields], dtype=np.int8)
    null_slots = np.full(len(aspect.fields), -1, dtype=np.int64)
    nullable_count = 0
    for index, fld in enumerate(aspect.fields):
        if fld.nullable:
            null_slots[index] = nullable_count
            nullable_count += 1
    for array in (kinds, null_slots):
        array.flags.writeable = False
    return ColumnPlan(kinds, null_slots, nullable_count, aspect.min_row_length,
                      aspect.time_series, has_strings=bool((kinds == KIND_STR).any()))


# Payload size in bytes of the numeric formats 0xCA..0xD3: float32, float64,
# uint8..uint64 and int8..int64.
_NUMBER_SIZES = np.array([4, 8, 1, 2, 4, 8, 1, 2, 4, 8], dtype=np.int64)

_INT64_LIMIT = 9223372036854775808.0  # 2**63 as a float


def _scan_window(buf, begin, stop, at_eof, kinds, null_slots, min_row_length, time_series,
                 first_row, previous_frame, values, nulls, offsets):
    """Decode the rows that start in ``buf[begin:stop]`` into ``values`` and ``nulls``.

    Positions are indices into ``buf``. ``values`` is a flat column-major matrix, so
    field ``f`` of row ``r`` is at ``f * capacity + r`` with ``capacity =
    len(offsets)``. ``nulls`` has the same layout with one column per nullable
    field. It must be all False on entry, because the loop writes only the nulls.
    The first row decoded is row ``first_row``, and ``previous_frame`` is the frame
    of the row before it, which a call that resumes after CAPACITY passes on.

    Returns (status, rows decoded in total, position). On OK the position is the
    first row start at or after ``stop`` (or the window end at the end of the
    file). Otherwise it is the start of the row that stopped the loop.
    """
    end = buf.shape[0]
    field_count = kinds.shape[0]
    capacity = offsets.shape[0]

    pos = begin
    row = first_row
    while pos < stop:
        if pos >= end:
            if at_eof:
                break
            return ScanStatus.WINDOW_END, row, pos
        if row == capacity:
            return ScanStatus.CAPACITY, row, pos

        row_start = pos
        header = np.int64(buf[pos])
        if 0x90 <= header <= 0x9F:
            length = header & 0x0F
            pos += 1
        elif header == 0xDC:
            if pos + 3 > end:
                return ScanStatus.WINDOW_END, row, row_start
            length = (np.int64(buf[pos + 1]) << 8) | np.int64(buf[pos + 2])
            pos += 3
        elif header == 0xDD:
            if pos + 5 > end:
                return ScanStatus.WINDOW_END, row, row_start
            length = ((np.int64(buf[pos + 1]) << 24) | (np.int64(buf[pos + 2]) << 16)
                      | (np.int64(buf[pos + 3]) << 8) | np.int64(buf[pos + 4]))
            pos += 5
        else:
            return ScanStatus.INVALID, row, row_start
        if length < min_row_length or length > field_count:
            return ScanStatus.INVALID, row, row_start

        # Index of the current field's value of this row in the flat matrix.
        cell = row
        for f in range(length):
            if pos >= end:
                return ScanStatus.WINDOW_END, row, row_start
            kind = kinds[f]
            # The lead byte is the format of the value, or the value itself for a fixint.
            lead = np.int64(buf[pos])

            # The int formats that real files use most are tested first, each in its
            # own branch: a shared branch on the payload size measured slower.
            if lead <= 0x7F:
                value = lead
                pos += 1
            elif lead == 0xCD:
                if pos + 3 > end:
                    return ScanStatus.WINDOW_END, row, row_start
                value = (np.int64(buf[pos + 1]) << 8) | np.int64(buf[pos + 2])
                pos += 3
            elif lead == 0xCC:
                if pos + 2 > end:
                    return ScanStatus.WINDOW_END, row, row_start
                value = np.int64(buf[pos + 1])
                pos += 2
            elif lead == 0xCE:
                if pos + 5 > end:
                    return ScanStatus.WINDOW_END, row, row_start
                value = ((np.int64(buf[pos + 1]) << 24) | (np.int64(buf[pos + 2]) << 16)
                         | (np.int64(buf[pos + 3]) << 8) | np.int64(buf[pos + 4]))
                pos += 5
            elif lead >= 0xE0:
                value = lead - 0x100
                pos += 1
            elif lead == 0xD1:
                # int16, which negative positions and velocities use.
                if pos + 3 > end:
                    return ScanStatus.WINDOW_END, row, row_start
                value = (np.int64(buf[pos + 1]) << 8) | np.int64(buf[pos + 2])
                if value >= 0x8000:
                    value -= 0x10000
                pos += 3
            elif lead == 0xC0:
                if kind == KIND_STR:
                    return ScanStatus.STRING_FIELD, row, row_start
                slot = null_slots[f]
                if slot < 0:
                    return ScanStatus.INVALID, row, row_start
                values[cell] = 0
                nulls[slot * capacity + row] = True
                pos += 1
                cell += capacity
                continue
            elif lead == 0xC2 or lead == 0xC3:
                if kind != KIND_BOOL:
                    if kind == KIND_STR:
                        return ScanStatus.STRING_FIELD, row, row_start
                    return ScanStatus.INVALID, row, row_start
                values[cell] = lead - 0xC2
                pos += 1
                cell += capacity
                continue
            elif 0xCA <= lead <= 0xD3:
                # The remaining numbers: float32, float64, uint64, int8, int32 and int64.
                size = _NUMBER_SIZES[lead - 0xCA]
                if pos + 1 + size > end:
                    return ScanStatus.WINDOW_END, row, row_start
                if size == 1:
                    value = np.int64(buf[pos + 1])
                elif size == 2:
                    value = (np.int64(buf[pos + 1]) << 8) | np.int64(buf[pos + 2])
                elif size == 4:
                    value = ((np.int64(buf[pos + 1]) << 24) | (np.int64(buf[pos + 2]) << 16)
                             | (np.int64(buf[pos + 3]) << 8) | np.int64(buf[pos + 4]))
                else:
                    # Shifting into the sign bit wraps, which is the int64 reading.
                    value = np.int64(0)
                    for i in range(1, 9):
                        value = (value << 8) | np.int64(buf[pos + i])
                pos += 1 + size

                if lead >= 0xD0:
                    # int8..int32 need sign extension, and int64 is complete already.
                    if size < 8 and value >= (np.int64(1) << (8 * size - 1)):
                        value -= np.int64(1) << (8 * size)
                elif lead == 0xCF:
                    # A uint64 with the top bit set is above the int64 maximum.
                    if value < 0:
                        return ScanStatus.INVALID, row, row_start
                else:
                    if lead == 0xCA:
                        number = np.float64(np.uint32(value).view(np.float32))
                    else:
                        number = np.int64(value).view(np.float64)
                    # A float is a valid int only when it is whole and inside int64.
                    # NaN fails every comparison and the range rejects infinities.
                    if not (-_INT64_LIMIT <= number < _INT64_LIMIT
                            and number == np.floor(number)):
                        if kind == KIND_STR:
                            return ScanStatus.STRING_FIELD, row, row_start
                        return ScanStatus.INVALID, row, row_start
                    value = np.int64(number)
            else:
                # Strings, binary, arrays, maps, extensions and the reserved byte 0xC1.
                if kind == KIND_STR:
                    return ScanStatus.STRING_FIELD, row, row_start
                return ScanStatus.INVALID, row, row_start

            if kind != KIND_INT:
                if kind == KIND_STR:
                    return ScanStatus.STRING_FIELD, row, row_start
                return ScanStatus.INVALID, row, row_start
            values[cell] = value
            cell += capacity

        # Fields missing from a short row are null. Fields past min_row_length are
        # nullable, so only a plan that disagrees with its aspect fails here.
        for f in range(length, field_count):
            slot = null_slots[f]
            if slot < 0:
                return ScanStatus.INVALID, row, row_start
            if kinds[f] == KIND_STR:
                return ScanStatus.STRING_FIELD, row, row_start
            values[f * capacity + row] = 0
            nulls[slot * capacity + row] = True

        if time_series:
            # Field 0 of a time series is the frame, and its value is at index row.
            frame = values[row]
            if row > 0 and frame < previous_frame:
                return ScanStatus.FRAME_ORDER, row, row_start
            previous_frame = frame
        offsets[row] = row_start
        row += 1
    return ScanStatus.OK, row, pos


def numba_cache_dir() -> Path:
    """Return the per-user folder of mpp-dask's compiled decoder cache."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mpp-dask" / "numba"


@lru_cache(maxsize=None)
def compiled_scan_window():
    """Return the compiled scan loop, or None when numba is not installed.

    numba is imported here rather than at module import, so that commands which
    decode nothing do not pay for it. The machine code is cached on disk
    (``cache=True``), so only the first process after a change of this file
    compiles it. The cache goes to a per-user folder unless NUMBA_CACHE_DIR is set:
    numba's default, a ``__pycache__`` beside this module, would leave files in
    site-packages that ``pip uninstall`` does not remove, and the leftover
    ``mpp_dask`` folder would then shadow a later editable install.
    """
    os.environ.setdefault("NUMBA_CACHE_DIR", str(numba_cache_dir()))
    try:
        from numba import njit
    except ImportError:
        return None
    return njit(cache=True, nogil=True)(_scan_window)


@dataclass
class WindowScan:
    """Raw columns of the rows the compiled loop decoded from one window.

    ``values`` has one row per field, with 0 or 1 in bool fields, and ``nulls`` one
    row per nullable field. Both are cut to the decoded rows. ``stopped_at`` is the
    file offset where the loop stopped. When ``status`` is OK it is the natural end
    of the range, and otherwise the start of the row the loop could not take.
    """

    status: ScanStatus
    stopped_at: int
    values: np.ndarray
    nulls: np.ndarray
    offsets: np.ndarray


# Rows decoded before the columns are sized from the measured bytes per row. A
# window that stops early, at a problem or the window end, allocates only this.
INITIAL_ROWS = 4096


def _max_rows(range_bytes: int, min_row_length: int) -> int:
    """Return the maximum number of rows that can start in ``range_bytes`` bytes.

    Each row takes at least a one-byte header and one byte per required field.
    """
    return max(range_bytes, 0) // (1 + min_row_length) + 1


class _Columns:
    """Flat column-major output arrays of the compiled loop, grown on demand."""

    def __init__(self, plan: ColumnPlan, capacity: int):
        self.capacity = capacity
        self.values = np.empty(len(plan.kinds) * capacity, dtype=np.int64)
        self.nulls = np.zeros(plan.nullable_count * capacity, dtype=np.bool_)
        self.offsets = np.empty(capacity, dtype=np.int64)

    def grown(self, plan: ColumnPlan, capacity: int, rows: int) -> _Columns:
        """Return columns of a larger capacity that contain a copy of the first ``rows`` rows."""
        larger = _Columns(plan, capacity)
        larger.value_matrix()[:, :rows] = self.value_matrix()[:, :rows]
        larger.null_matrix()[:, :rows] = self.null_matrix()[:, :rows]
        larger.offsets[:rows] = self.offsets[:rows]
        return larger

    def value_matrix(self) -> np.ndarray:
        return self.values.reshape(-1, self.capacity)

    def null_matrix(self) -> np.ndarray:
        return self.nulls.reshape(-1, self.capacity)


def scan_window(window: memoryview, window_start: int, start: int, stop: int, at_eof: bool,
                aspect: Aspect) -> WindowScan:
    """Run the compiled loop over the rows that start in ``[start, stop)``.

    The arguments are those of ``decode.decode_window`` with a known ``start``.
    Raises RuntimeError when numba is not installed.
    """
    kernel = compiled_scan_window()
    if kernel is None:
        raise RuntimeError("the compiled decoder needs numba, which is not installed; "
                           "install numba or decode with rows.scan_rows")
    plan = column_plan(aspect)
    buf = np.frombuffer(window, dtype=np.uint8)
    # A writable buffer would be typed differently and compile a second specialisation.
    buf.flags.writeable = False

    begin = start - window_start
    range_bytes = min(stop - window_start, len(buf)) - begin
    max_rows = _max_rows(range_bytes, plan.min_row_length)
    columns = _Columns(plan, min(max_rows, INITIAL_ROWS))
    position = begin
    rows = 0
    previous_frame = 0
    while True:
        status, rows, position = kernel(
            buf, np.int64(position), np.int64(stop - window_start), bool(at_eof),
            plan.kinds, plan.null_slots, np.int64(plan.min_row_length),
            bool(plan.time_series), np.int64(rows), np.int64(previous_frame),
            columns.values, columns.nulls, columns.offsets)
        if status != ScanStatus.CAPACITY:
            break
        # Size the columns for the whole range from the bytes per row so far, with
        # some margin. Each further shortfall doubles them.
        estimate = rows * range_bytes // max(position - begin, 1)
        capacity = min(max_rows, max(2 * columns.capacity, estimate + estimate // 8 + 16))
        # max_rows is a true bound, so this only guards against a loop without end.
        capacity = max(capacity, columns.capacity + 1)
        columns = columns.grown(plan, capacity, rows)
        if plan.time_series:
            previous_frame = int(columns.values[rows - 1])

    return WindowScan(status=ScanStatus(status), stopped_at=window_start + int(position),
                      values=columns.value_matrix()[:, :rows],
                      nulls=columns.null_matrix()[:, :rows],
                      offsets=columns.offsets[:rows] + window_start)


@dataclass
class FastDecoded:
    """Result of the compiled decoder for one window, with what ``decode_window`` returns.

    ``end`` is the natural end of the range, and ``offsets`` the file offset of each
    row. Every decoded row is valid, so there are no problems and nothing is dropped.
    """

    frame: pd.DataFrame
    offsets: np.ndarray
    end: int
    objects: int
    unknown_enum_codes: int
    first_frame: int | None
    last_frame: int | None


def build_frame(scan: WindowScan, aspect: Aspect) -> tuple[pd.DataFrame, int]:
    """Build the clean frame of a successful scan, and count its unknown enum codes.

    Enum and dequantized fields go through the reference path's transform, so their
    values and dtypes match ``columns.build_clean_frame``. The other fields need no
    transform, and their arrays go to pandas without a Series per column.

    The frame is built without copies, so its int columns are views of the scan's
    value matrix and keep it alive, including the raw enum and dequantized rows.
    """
    plan = column_plan(aspect)
    columns = {}
    unknown_codes = 0
    for index, fld in enumerate(aspect.fields):
        raw = scan.values[index]
        slot = plan.null_slots[index]
        nulls = scan.nulls[slot] if slot >= 0 else None

        if fld.enum is not None or fld.divisor is not None:
            if nulls is not None and not nulls.any():
                nulls = None
            clean, unknown = _clean_series(fld, raw, nulls)
            columns[fld.name] = clean.array
            unknown_codes += unknown
        elif fld.raw_type is RawType.BOOL:
            values = raw.astype(np.bool_)
            columns[fld.name] = values if nulls is None else pd.arrays.BooleanArray(values, nulls)
        elif nulls is not None:
            columns[fld.name] = pd.arrays.IntegerArray(raw, nulls)
        else:
            columns[fld.name] = raw
    return pd.DataFrame(columns, copy=False), unknown_codes


def fast_decode_window(window: memoryview, window_start: int, start: int, stop: int,
                       at_eof: bool, aspect: Aspect) -> FastDecoded | None:
    """Decode a window with the compiled loop, or return None to use the reference path.

    Returns None when numba is not installed, when the aspect has string fields, or
    when the window contains anything the loop does not take: a problem of any
    kind, or a row that runs past the window end.
    """
    if column_plan(aspect).has_strings or compiled_scan_window() is None:
        return None
    scan = scan_window(window, window_start, start, stop, at_eof, aspect)
    if scan.status is not ScanStatus.OK:
        return None

    frame, unknown_codes = build_frame(scan, aspect)
    first_frame = last_frame = None
    if aspect.time_series and len(frame):
        first_frame = int(scan.values[0, 0])
        last_frame = int(scan.values[0, -1])
    return FastDecoded(frame=frame, offsets=scan.offsets, end=scan.stopped_at,
                       objects=len(frame), unknown_enum_codes=unknown_codes,
                       first_frame=first_frame, last_frame=last_frame)
