"""Decode clean windows straight from MessagePack bytes into typed columns.

The reference decoder (``rows.scan_rows`` then ``columns.build_clean_frame``) turns
every value into a Python object before it builds columns. This module walks the
bytes of a window with compiled loops instead, and writes each value in its clean
form: int64 for plain integers, float64 for dequantized fields, int8 categorical
codes for enum fields and bool for bool fields, plus a null mask per nullable
field. The clean frame is then built from those arrays without copies.

The loops handle only windows that are entirely valid. They stop at the first
problem, string field or row that runs past the window, and report a status and
the offset of that row. :func:`fast_decode_window` then returns None, and the caller
decodes the window with the reference path, which reports the exact problems.

Two loops share the work. The generic loop, in this module, is one numba function
for every aspect: what it checks per field comes from a plan of small arrays
derived from :mod:`mpp_dask.schema`. The aspect loops of
:mod:`mpp_dask.reading.fast_aspect` are generated per aspect with the plan inlined,
and take the common rows at about twice the speed. The generic loop decodes the
rows they leave, such as the last rows of a window, and sets the status. Both are
cached on disk. Without numba the module still imports and
:func:`fast_decode_window` returns None.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache, wraps
from pathlib import Path

import numpy as np
import pandas as pd

from mpp_dask.schema import ENUMS, Aspect, RawType, enum_dtype


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


# Field kinds of the plan, one int8 per field. Each kind writes to its own output
# matrix: INT to the int64 one, DIVIDED to float64, ENUM to int8 codes, BOOL to bool.
KIND_INT = 0
KIND_BOOL = 1
KIND_STR = 2
KIND_ENUM = 3
KIND_DIVIDED = 4


def _field_kind(fld) -> int:
    if fld.raw_type is RawType.STR:
        return KIND_STR
    if fld.raw_type is RawType.BOOL:
        return KIND_BOOL
    if fld.enum is not None:
        return KIND_ENUM
    if fld.divisor is not None:
        return KIND_DIVIDED
    return KIND_INT


@dataclass(frozen=True)
class ColumnPlan:
    """Per-field checks and output places of the compiled loop for one aspect.

    ``kinds`` contains a KIND_* code per field, and ``slots`` the field's row in the
    output matrix of its kind. In the int64 and bool matrices the non-nullable
    fields come first, so that they form one pandas block without a copy (see
    :func:`build_frame`). ``null_slots`` contains, per field, its row in the
    null-mask matrix, or -1 for a non-nullable field. ``divisors`` and
    ``enum_sizes`` are 0 except for DIVIDED and ENUM fields. ``matrix_rows`` counts
    the rows of the int64, float64, int8 code and bool matrices, in that order.
    """

    kinds: np.ndarray
    slots: np.ndarray
    null_slots: np.ndarray
    divisors: np.ndarray
    enum_sizes: np.ndarray
    matrix_rows: tuple[int, int, int, int]
    nullable_count: int
    min_row_length: int
    time_series: bool
    has_strings: bool


def cache_per_aspect(function):
    """Decorate a function of one Aspect to cache its result per aspect name.

    ``lru_cache`` would hash the Aspect, which walks all its fields and costs
    about as much as decoding a small window. The cached result is reused for the
    same object, or an equal one, under the name.
    """
    results = {}

    @wraps(function)
    def cached(aspect: Aspect):
        entry = results.get(aspect.name)
        if entry is not None and (entry[0] is aspect or entry[0] == aspect):
            return entry[1]
        result = function(aspect)
        results[aspect.name] = (aspect, result)
        return result

    cached.cache_clear = results.clear
    return cached


@cache_per_aspect
def column_plan(aspect: Aspect) -> ColumnPlan:
    """Derive the compiled loop's per-field plan from the aspect's schema."""
    field_count = len(aspect.fields)
    kinds = np.array([_field_kind(f) for f in aspect.fields], dtype=np.int8)
    slots = np.full(field_count, -1, dtype=np.int64)
    null_slots = np.full(field_count, -1, dtype=np.int64)
    divisors = np.zeros(field_count, dtype=np.int64)
    enum_sizes = np.zeros(field_count, dtype=np.int64)

    # Strings have no matrix: the loop stops before it writes one.
    matrix_of_kind = {KIND_INT: 0, KIND_DIVIDED: 1, KIND_ENUM: 2, KIND_BOOL: 3}
    matrix_rows = [0, 0, 0, 0]
    by_nullable = sorted(range(field_count), key=lambda index: aspect.fields[index].nullable)
    for index in by_nullable:
        matrix = matrix_of_kind.get(int(kinds[index]))
        if matrix is not None:
            slots[index] = matrix_rows[matrix]
            matrix_rows[matrix] += 1

    nullable_count = 0
    for index, fld in enumerate(aspect.fields):
        if fld.nullable:
            null_slots[index] = nullable_count
            nullable_count += 1
        if fld.divisor is not None:
            divisors[index] = fld.divisor
        if fld.enum is not None:
            # Codes are int8, as pandas stores them for fewer than 128 categories.
            enum_sizes[index] = len(ENUMS[fld.enum])
            assert enum_sizes[index] < 128, f"enum {fld.enum} has too many members for int8 codes"

    # The loop checks frame order on row 0 of the int64 matrix.
    assert not aspect.time_series or (kinds[0] == KIND_INT and slots[0] == 0)
    for array in (kinds, slots, null_slots, divisors, enum_sizes):
        array.flags.writeable = False
    return ColumnPlan(kinds, slots, null_slots, divisors, enum_sizes, tuple(matrix_rows),
                      nullable_count, aspect.min_row_length, aspect.time_series,
                      has_strings=bool((kinds == KIND_STR).any()))


# Payload size in bytes of the numeric formats 0xCA..0xD3: float32, float64,
# uint8..uint64 and int8..int64.
_NUMBER_SIZES = np.array([4, 8, 1, 2, 4, 8, 1, 2, 4, 8], dtype=np.int64)

_INT64_LIMIT = 9223372036854775808.0  # 2**63 as a float

# Integers of larger magnitude do not all convert to float64 exactly, so dividing
# them in float64 would round twice (the same bound as columns.FLOAT64_EXACT_INT).
FLOAT64_EXACT_INT = 2**53


def _divide_exactly(value, divisor):
    """Return ``value / divisor`` rounded once to the nearest float64, ties to even.

    This is what Python's ``int / int`` returns, for any int64 ``value`` and a
    positive ``divisor`` below 2**62. The loops call it only above 2**53 in
    magnitude, where ``float(value)`` itself would round.
    """
    if -FLOAT64_EXACT_INT <= value <= FLOAT64_EXACT_INT:
        return np.float64(value) / np.float64(divisor)

    negative = value < 0
    # Negating the int64 minimum wraps to itself, which reads as 2**63 unsigned.
    magnitude = np.uint64(-value) if negative else np.uint64(value)
    d = np.uint64(divisor)
    quotient = magnitude // d
    remainder = magnitude % d

    # Long division by one more bit at a time, until the quotient has at least 54
    # bits: 53 for the float64 significand and one to round with.
    exponent = 0
    while quotient < np.uint64(1 << 53):
        remainder = remainder << np.uint64(1)
        quotient = quotient << np.uint64(1)
        if remainder >= d:
            remainder -= d
            quotient += np.uint64(1)
        exponent -= 1

    shift = np.uint64(1)
    while (quotient >> shift) >= np.uint64(1 << 53):
        shift += np.uint64(1)
    significand = quotient >> shift
    dropped = quotient & ((np.uint64(1) << shift) - np.uint64(1))
    half = np.uint64(1) << (shift - np.uint64(1))
    # A nonzero remainder is a part below the last dropped bit, so it breaks a tie
    # upwards. An exact tie rounds to the even significand.
    round_up = dropped > half
    if dropped == half:
        round_up = remainder != 0 or (significand & np.uint64(1)) != 0
    if round_up:
        significand += np.uint64(1)

    result = math.ldexp(np.float64(significand), np.int64(shift) + exponent)
    return -result if negative else result


def _read_rare_int(buf, pos):
    """Read the int at ``buf[pos]``, in any format, for the loops that inline only some.

    Returns (value, position after the value), or (0, -1) when the value is not a
    valid int64: another type, a float that is not whole or outside int64, or a
    uint64 above the int64 maximum. The caller must ensure that 9 bytes are left
    from ``pos``, because nothing is bounds-checked.
    """
    lead = np.int64(buf[pos])
    if lead <= 0x7F:
        return lead, pos + 1
    if lead >= 0xE0:
        return lead - 0x100, pos + 1
    if lead < 0xCA or lead > 0xD3:
        return np.int64(0), np.int64(-1)

    size = _NUMBER_SIZES[lead - 0xCA]
    # Shifting into the sign bit wraps, which is the int64 reading of 8 bytes.
    value = np.int64(0)
    for i in range(1, 1 + size):
        value = (value << 8) | np.int64(buf[pos + i])

    if lead >= 0xD0:
        if size < 8 and value >= (np.int64(1) << (8 * size - 1)):
            value -= np.int64(1) << (8 * size)
    elif lead == 0xCF:
        if value < 0:
            return np.int64(0), np.int64(-1)
    elif lead <= 0xCB:
        if lead == 0xCA:
            number = np.float64(np.uint32(value).view(np.float32))
        else:
            number = np.int64(value).view(np.float64)
        if not (-_INT64_LIMIT <= number < _INT64_LIMIT and number == np.floor(number)):
            return np.int64(0), np.int64(-1)
        value = np.int64(number)
    return value, pos + 1 + size


def _scan_window(buf, begin, stop, at_eof, kinds, slots, null_slots, divisors, enum_sizes,
                 min_row_length, time_series, first_row, previous_frame, unknown_codes,
                 offset_base, ints, floats, codes, bools, nulls, offsets):
    """Decode the rows that start in ``buf[begin:stop]`` into the output matrices.

    Positions are indices into ``buf``. ``ints``, ``floats``, ``codes`` and ``bools``
    are flat column-major matrices, so the value of a field with slot ``s`` in row
    ``r`` is at ``s * capacity + r`` with ``capacity = len(offsets)``. ``nulls`` has
    the same layout with one column per nullable field. It must be all False on
    entry, because the loop writes only the nulls. The first row decoded is row
    ``first_row``, ``previous_frame`` is the frame of the row before it, and
    ``unknown_codes`` counts the unknown enum codes before it, which a call that
    resumes after CAPACITY passes on.

    Returns (status, rows decoded in total, position, unknown enum codes in total).
    On OK the position is the first row start at or after ``stop`` (or the window
    end at the end of the file). Otherwise it is the start of the row that stopped
    the loop.
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
            return ScanStatus.WINDOW_END, row, pos, unknown_codes
        if row == capacity:
            return ScanStatus.CAPACITY, row, pos, unknown_codes

        row_start = pos
        header = np.int64(buf[pos])
        if 0x90 <= header <= 0x9F:
            length = header & 0x0F
            pos += 1
        elif header == 0xDC:
            if pos + 3 > end:
                return ScanStatus.WINDOW_END, row, row_start, unknown_codes
            length = (np.int64(buf[pos + 1]) << 8) | np.int64(buf[pos + 2])
            pos += 3
        elif header == 0xDD:
            if pos + 5 > end:
                return ScanStatus.WINDOW_END, row, row_start, unknown_codes
            length = ((np.int64(buf[pos + 1]) << 24) | (np.int64(buf[pos + 2]) << 16)
                      | (np.int64(buf[pos + 3]) << 8) | np.int64(buf[pos + 4]))
            pos += 5
        else:
            return ScanStatus.INVALID, row, row_start, unknown_codes
        if length < min_row_length or length > field_count:
            return ScanStatus.INVALID, row, row_start, unknown_codes

        for f in range(length):
            if pos >= end:
                return ScanStatus.WINDOW_END, row, row_start, unknown_codes
            kind = kinds[f]
            # The lead byte is the format of the value, or the value itself for a fixint.
            lead = np.int64(buf[pos])

            # The int formats that real files use most are tested first, each in its
            # own branch: a shared branch on the payload size measured slower, and so
            # did a branch-free read through per-format tables, because it makes the
            # position of each value wait for two loads.
            if lead <= 0x7F:
                value = lead
                pos += 1
            elif lead == 0xCD:
                if pos + 3 > end:
                    return ScanStatus.WINDOW_END, row, row_start, unknown_codes
                value = (np.int64(buf[pos + 1]) << 8) | np.int64(buf[pos + 2])
                pos += 3
            elif lead == 0xCC:
                if pos + 2 > end:
                    return ScanStatus.WINDOW_END, row, row_start, unknown_codes
                value = np.int64(buf[pos + 1])
                pos += 2
            elif lead == 0xCE:
                if pos + 5 > end:
                    return ScanStatus.WINDOW_END, row, row_start, unknown_codes
                value = ((np.int64(buf[pos + 1]) << 24) | (np.int64(buf[pos + 2]) << 16)
                         | (np.int64(buf[pos + 3]) << 8) | np.int64(buf[pos + 4]))
                pos += 5
            elif lead >= 0xE0:
                value = lead - 0x100
                pos += 1
            elif lead == 0xD1:
                # int16, which negative positions and velocities use.
                if pos + 3 > end:
                    return ScanStatus.WINDOW_END, row, row_start, unknown_codes
                value = (np.int64(buf[pos + 1]) << 8) | np.int64(buf[pos + 2])
                if value >= 0x8000:
                    value -= 0x10000
                pos += 3
            elif lead == 0xC0:
                if kind == KIND_STR:
                    return ScanStatus.STRING_FIELD, row, row_start, unknown_codes
                null_slot = null_slots[f]
                if null_slot < 0:
                    return ScanStatus.INVALID, row, row_start, unknown_codes
                # The placeholder under a null is the one the reference decoder leaves.
                cell = slots[f] * capacity + row
                if kind == KIND_INT:
                    ints[cell] = 0
                elif kind == KIND_DIVIDED:
                    floats[cell] = np.nan
                elif kind == KIND_ENUM:
                    codes[cell] = -1
                else:
                    bools[cell] = False
                nulls[null_slot * capacity + row] = True
                pos += 1
                continue
            elif lead == 0xC2 or lead == 0xC3:
                if kind != KIND_BOOL:
                    if kind == KIND_STR:
                        return ScanStatus.STRING_FIELD, row, row_start, unknown_codes
                    return ScanStatus.INVALID, row, row_start, unknown_codes
                bools[slots[f] * capacity + row] = lead == 0xC3
                pos += 1
                continue
            elif 0xCA <= lead <= 0xD3:
                # The remaining numbers: float32, float64, uint64, int8, int32 and int64.
                size = _NUMBER_SIZES[lead - 0xCA]
                if pos + 1 + size > end:
                    return ScanStatus.WINDOW_END, row, row_start, unknown_codes
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
                        return ScanStatus.INVALID, row, row_start, unknown_codes
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
                            return ScanStatus.STRING_FIELD, row, row_start, unknown_codes
                        return ScanStatus.INVALID, row, row_start, unknown_codes
                    value = np.int64(number)
            else:
                # Strings, binary, arrays, maps, extensions and the reserved byte 0xC1.
                if kind == KIND_STR:
                    return ScanStatus.STRING_FIELD, row, row_start, unknown_codes
                return ScanStatus.INVALID, row, row_start, unknown_codes

            cell = slots[f] * capacity + row
            if kind == KIND_INT:
                ints[cell] = value
            elif kind == KIND_DIVIDED:
                if -FLOAT64_EXACT_INT <= value <= FLOAT64_EXACT_INT:
                    floats[cell] = np.float64(value) / np.float64(divisors[f])
                else:
                    floats[cell] = _divide_exactly(value, divisors[f])
            elif kind == KIND_ENUM:
                # A code outside the enum is null. The count matters only when every
                # row is valid, so a row that stops the loop later may add to it.
                if 1 <= value <= enum_sizes[f]:
                    codes[cell] = value - 1
                else:
                    codes[cell] = -1
                    unknown_codes += 1
            elif kind == KIND_STR:
                return ScanStatus.STRING_FIELD, row, row_start, unknown_codes
            else:
                return ScanStatus.INVALID, row, row_start, unknown_codes

        # Fields missing from a short row are null. Fields past min_row_length are
        # nullable, so only a plan that disagrees with its aspect fails here.
        for f in range(length, field_count):
            if null_slots[f] < 0:
                return ScanStatus.INVALID, row, row_start, unknown_codes
            if kinds[f] == KIND_STR:
                return ScanStatus.STRING_FIELD, row, row_start, unknown_codes
            cell = slots[f] * capacity + row
            kind = kinds[f]
            if kind == KIND_INT:
                ints[cell] = 0
            elif kind == KIND_DIVIDED:
                floats[cell] = np.nan
            elif kind == KIND_ENUM:
                codes[cell] = -1
            else:
                bools[cell] = False
            nulls[null_slots[f] * capacity + row] = True

        if time_series:
            # Field 0 of a time series is the frame, in row 0 of the int64 matrix.
            frame = ints[row]
            if row > 0 and frame < previous_frame:
                return ScanStatus.FRAME_ORDER, row, row_start, unknown_codes
            previous_frame = frame
        offsets[row] = offset_base + row_start
        row += 1
    return ScanStatus.OK, row, pos, unknown_codes


def numba_cache_dir() -> Path:
    """Return the per-user folder of mpp-dask's compiled decoder cache."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mpp-dask" / "numba"


# Held while a loop is compiled. Threads of one worker decode at the same time,
# and two first calls would otherwise both wrap the helpers below, the second
# wrapping an already compiled function (numba raises TypeError), or compile
# the same aspect loop twice.
COMPILE_LOCK = threading.RLock()


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
    with COMPILE_LOCK:
        return _compiled_scan_window()


@lru_cache(maxsize=None)
def _compiled_scan_window():
    os.environ.setdefault("NUMBA_CACHE_DIR", str(numba_cache_dir()))
    try:
        from numba import njit
    except ImportError:
        return None

    # The loops call these helpers by their module-level names, so they are
    # replaced by their compiled versions before any loop compiles.
    global _divide_exactly, _read_rare_int
    _divide_exactly = njit(cache=True, nogil=True)(_divide_exactly)
    _read_rare_int = njit(cache=True, nogil=True)(_read_rare_int)
    return njit(cache=True, nogil=True)(_scan_window)


class _Columns:
    """Flat column-major output matrices of the compiled loop, grown on demand."""

    def __init__(self, plan: ColumnPlan, capacity: int):
        int_rows, float_rows, code_rows, bool_rows = plan.matrix_rows
        self.capacity = capacity
        self.ints = np.empty(int_rows * capacity, dtype=np.int64)
        self.floats = np.empty(float_rows * capacity, dtype=np.float64)
        self.codes = np.empty(code_rows * capacity, dtype=np.int8)
        self.bools = np.empty(bool_rows * capacity, dtype=np.bool_)
        self.nulls = np.zeros(plan.nullable_count * capacity, dtype=np.bool_)
        self.offsets = np.empty(capacity, dtype=np.int64)

    def flat_arrays(self) -> tuple[np.ndarray, ...]:
        """Return the arrays in the order of the loop's arguments."""
        return self.ints, self.floats, self.codes, self.bools, self.nulls

    def grown(self, plan: ColumnPlan, capacity: int, rows: int) -> _Columns:
        """Return columns of a larger capacity that contain a copy of the first ``rows`` rows."""
        larger = _Columns(plan, capacity)
        for source, target in zip(self.flat_arrays(), larger.flat_arrays()):
            target.reshape(-1, capacity)[:, :rows] = source.reshape(-1, self.capacity)[:, :rows]
        larger.offsets[:rows] = self.offsets[:rows]
        return larger

    def matrices(self, rows: int) -> tuple[np.ndarray, ...]:
        """Return the matrices with one row per slot, cut to the first ``rows`` rows."""
        return tuple(array.reshape(-1, self.capacity)[:, :rows] for array in self.flat_arrays())


@dataclass
class WindowScan:
    """Clean columns of the rows the compiled loop decoded from one window.

    ``ints``, ``floats``, ``codes`` and ``bools`` have one row per field of their
    kind (see ColumnPlan), and ``nulls`` one row per nullable field. All are cut to
    the decoded rows. ``stopped_at`` is the file offset where the loop stopped.
    When ``status`` is OK it is the natural end of the range, and otherwise the
    start of the row the loop could not take. ``unknown_enum_codes`` counts the
    enum codes outside their enum in the decoded rows.
    """

    status: ScanStatus
    stopped_at: int
    ints: np.ndarray
    floats: np.ndarray
    codes: np.ndarray
    bools: np.ndarray
    nulls: np.ndarray
    offsets: np.ndarray
    unknown_enum_codes: int


# Rows decoded before the columns are sized from the measured bytes per row. A
# window that stops early, at a problem or the window end, allocates only this.
INITIAL_ROWS = 4096


def _max_rows(range_bytes: int, min_row_length: int) -> int:
    """Return the maximum number of rows that can start in ``range_bytes`` bytes.

    Each row takes at least a one-byte header and one byte per required field.
    """
    return max(range_bytes, 0) // (1 + min_row_length) + 1


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
    unknown_codes = 0
    aspect_loop = _aspect_loop(aspect) if range_bytes >= ASPECT_LOOP_MIN_BYTES else None
    stop_index = stop - window_start
    while True:
        if aspect_loop is not None:
            rows, position, aspect_unknown_codes = aspect_loop(
                buf, position, stop_index, rows, previous_frame, window_start,
                *columns.flat_arrays(), columns.offsets)
            unknown_codes += aspect_unknown_codes
            if plan.time_series and rows:
                previous_frame = int(columns.ints[rows - 1])
        # The generic loop takes the rows the aspect loop left, if any, and sets
        # the status.
        status, rows, position, unknown_codes = kernel(
            buf, position, stop_index, at_eof, plan.kinds, plan.slots,
            plan.null_slots, plan.divisors, plan.enum_sizes, plan.min_row_length,
            plan.time_series, rows, previous_frame, unknown_codes, window_start,
            *columns.flat_arrays(), columns.offsets)
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
            previous_frame = int(columns.ints[rows - 1])

    ints, floats, codes, bools, nulls = columns.matrices(rows)
    return WindowScan(status=ScanStatus(status), stopped_at=window_start + int(position),
                      ints=ints, floats=floats, codes=codes, bools=bools, nulls=nulls,
                      offsets=columns.offsets[:rows],
                      unknown_enum_codes=int(unknown_codes))


# Smaller ranges are decoded by the generic loop alone. The first use of an
# aspect's own loop on a machine compiles it, which takes seconds of CPU time per
# aspect (once per user and version, then numba's disk cache has it): more than
# the loop saves on a small range, and small replays and tests would pay it.
ASPECT_LOOP_MIN_BYTES = 256 * 1024


def _aspect_loop(aspect: Aspect):
    # Imported here because fast_aspect imports this module.
    from mpp_dask.reading.fast_aspect import compiled_aspect_loop

    with COMPILE_LOCK:
        return compiled_aspect_loop(aspect)


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


@dataclass(frozen=True)
class FrameLayout:
    """Sources of the clean columns of an aspect in a scan's matrices.

    The non-nullable int64 fields, all float64 fields and the non-nullable bool
    fields are each one 2D block, the first rows of their matrix, placed at the
    column positions in ``*_placement`` (in slot order). Every other column is an
    extension array: ``extension_columns`` contains (placement, kind, slot, null
    slot, dtype) per such field.
    """

    columns: pd.Index
    int_placement: np.ndarray
    float_placement: np.ndarray
    bool_placement: np.ndarray
    extension_columns: tuple


@cache_per_aspect
def frame_layout(aspect: Aspect) -> FrameLayout:
    """Derive the block layout of the aspect's clean frame from its plan."""
    plan = column_plan(aspect)
    blocks = {KIND_INT: [], KIND_DIVIDED: [], KIND_BOOL: []}
    extension_columns = []
    for index, fld in enumerate(aspect.fields):
        kind = int(plan.kinds[index])
        slot = int(plan.slots[index])
        null_slot = int(plan.null_slots[index])
        if kind in blocks and (kind == KIND_DIVIDED or null_slot < 0):
            blocks[kind].append((slot, index))
        else:
            dtype = enum_dtype(fld.enum) if kind == KIND_ENUM else None
            extension_columns.append((np.array([index]), kind, slot, null_slot, dtype))

    def placement(kind: int) -> np.ndarray:
        return np.array([index for _, index in sorted(blocks[kind])], dtype=np.intp)

    return FrameLayout(pd.Index(aspect.columns), placement(KIND_INT), placement(KIND_DIVIDED),
                       placement(KIND_BOOL), tuple(extension_columns))


def _extension_array(scan: WindowScan, kind: int, slot: int, null_slot: int,
                     dtype: pd.CategoricalDtype | None):
    if kind == KIND_ENUM:
        # Nulls and unknown codes are code -1 already.
        return pd.Categorical.from_codes(scan.codes[slot], dtype=dtype, validate=False)
    if kind == KIND_BOOL:
        return pd.arrays.BooleanArray(scan.bools[slot], scan.nulls[null_slot])
    return pd.arrays.IntegerArray(scan.ints[slot], scan.nulls[null_slot])


try:
    # Public since pandas 3.0, and documented there as the low-level way for
    # libraries to build a frame from arrays that are already laid out as blocks.
    from pandas.api.internals import create_dataframe_from_blocks
except ImportError:
    create_dataframe_from_blocks = None


def build_frame(scan: WindowScan, aspect: Aspect) -> pd.DataFrame:
    """Build the clean frame of a successful scan from its matrices, without copies.

    The values, dtypes and nulls match ``columns.build_clean_frame``, and every
    column is a view of the scan's matrices. The frame has one block per dtype of
    the non-nullable columns, so pandas neither copies nor consolidates.
    """
    layout = frame_layout(aspect)
    blocks = []
    if len(layout.int_placement):
        blocks.append((scan.ints[:len(layout.int_placement)], layout.int_placement))
    if len(layout.float_placement):
        blocks.append((scan.floats, layout.float_placement))
    if len(layout.bool_placement):
        blocks.append((scan.bools[:len(layout.bool_placement)], layout.bool_placement))
    for placement, kind, slot, null_slot, dtype in layout.extension_columns:
        blocks.append((_extension_array(scan, kind, slot, null_slot, dtype), placement))

    index = pd.RangeIndex(len(scan.offsets))
    if create_dataframe_from_blocks is None:
        return frame_from_columns(blocks, layout.columns, index)
    return create_dataframe_from_blocks(blocks, index=index, columns=layout.columns)


def frame_from_columns(blocks: list, columns: pd.Index, index: pd.RangeIndex) -> pd.DataFrame:
    """Build the frame of :func:`build_frame` one column at a time, for pandas before 3.0."""
    arrays = [None] * len(columns)
    for array, placement in blocks:
        if isinstance(array, np.ndarray):
            for row, position in enumerate(placement):
                arrays[position] = array[row]
        else:
            arrays[placement[0]] = array
    return pd.DataFrame(dict(zip(columns, arrays)), index=index, copy=False)


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

    frame = build_frame(scan, aspect)
    first_frame = last_frame = None
    if aspect.time_series and len(frame):
        first_frame = int(scan.ints[0, 0])
        last_frame = int(scan.ints[0, -1])
    return FastDecoded(frame=frame, offsets=scan.offsets, end=scan.stopped_at,
                       objects=len(frame), unknown_enum_codes=scan.unknown_enum_codes,
                       first_frame=first_frame, last_frame=last_frame)
