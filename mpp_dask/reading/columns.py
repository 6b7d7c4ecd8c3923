"""Turn decoded rows into typed, dequantized, clean pandas columns.

The checks and transforms work one column at a time over the whole partition: the
common case (every value of the expected Python type) costs one pass over the
column to collect its value types and one conversion to a NumPy array. Only columns
that hold something unusual (nulls, whole-number floats, bad values) take a slower
path, which also locates every bad value for the error message.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mpp_dask.errors import RowProblem
from mpp_dask.schema import ENUMS, Aspect, Field, RawType, enum_dtype

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Maximum number of problems stored per range. Further problems are only counted,
# so a range full of bad rows cannot fill memory with reports.
MAX_PROBLEMS_PER_RANGE = 1000

# Integers of larger magnitude do not all convert to float64 exactly, so dividing
# them in float64 would round twice.
FLOAT64_EXACT_INT = 2**53

_TYPE_NAMES = {
    type(None): "null", bool: "bool", int: "int", float: "float", str: "string",
    bytes: "binary", list: "array", tuple: "array", dict: "map",
}


def type_name(value: object) -> str:
    """Return the MessagePack-level name of a decoded value's type."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def is_valid_utf8(text: str) -> bool:
    """Return whether a decoded string came from valid UTF-8 (has no escaped bytes)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class ColumnResult:
    """Clean columns of one partition, the rows to drop, and what was wrong.

    ``problems`` contains the first ``max_problems`` problems in row order.
    ``problem_count`` counts all of them, and ``drop_reasons`` counts each bad row
    once, under the reason of its first bad field.
    """

    frame: pd.DataFrame
    problems: list[RowProblem] = field(default_factory=list)
    bad_rows: np.ndarray | None = None
    unknown_enum_codes: int = 0
    problem_count: int = 0
    drop_reasons: Counter = field(default_factory=Counter)


class _Collector:
    """Collects the bad values of one partition, marking their rows.

    Each column stores at most ``max_problems`` problems, which is enough to find
    the first ``max_problems`` of the partition. The rest are only counted.
    """

    def __init__(self, offsets: np.ndarray, row_base: int, n_rows: int, max_problems: int):
        self.offsets = offsets
        self.row_base = row_base
        self.bad = np.zeros(n_rows, dtype=bool)
        self.max_problems = max_problems
        self.problems: list[RowProblem] = []
        self.count = 0
        self.column_count = 0
        self.drop_reasons: Counter = Counter()

    def start_column(self) -> None:
        self.column_count = 0

    def add(self, index: int, reason: str, fld: Field, expected: str, found: str) -> None:
        if not self.bad[index]:
            self.drop_reasons[reason] += 1
        self.bad[index] = True
        self.count += 1
        self.column_count += 1
        if self.column_count <= self.max_problems:
            self.problems.append(RowProblem(
                offset=int(self.offsets[index]), row=self.row_base + index, reason=reason,
                field=fld.raw_name, expected=expected, found=found,
            ))


def _expected_type(fld: Field) -> str:
    if fld.raw_type is RawType.INT:
        expected = "an int64 integer"
    elif fld.raw_type is RawType.BOOL:
        expected = "a bool"
    else:
        expected = "a UTF-8 string"
    return expected + (" or null" if fld.nullable else "")


def _int_column(values: tuple, types: set, fld: Field,
                errors: _Collector) -> tuple[np.ndarray, np.ndarray | None]:
    """Return (int64 values, null mask or None) for one raw integer column."""
    n = len(values)
    if types == {int}:
        try:
            return np.fromiter(values, dtype=np.int64, count=n), None
        except OverflowError:
            pass

    out = np.zeros(n, dtype=np.int64)
    nulls = np.zeros(n, dtype=bool)
    for i, value in enumerate(values):
        kind = type(value)
        if kind is int:
            if INT64_MIN <= value <= INT64_MAX:
                out[i] = value
                continue
            errors.add(i, "integer out of range", fld, "an int64 integer", str(value))
        elif kind is float:
            if value.is_integer() and INT64_MIN <= value < 2.0**63:
                out[i] = int(value)
                continue
            if value.is_integer():
                errors.add(i, "integer out of range", fld, "an int64 integer",
                           f"float {value!r}")
            else:
                errors.add(i, "wrong type", fld, "an int64 integer", f"float {value!r}")
        elif value is None:
            nulls[i] = True
            if not fld.nullable:
                errors.add(i, "missing value", fld, "a value", "null")
        else:
            errors.add(i, "wrong type", fld, _expected_type(fld), type_name(value))
    return out, (nulls if nulls.any() else None)


def _bool_column(values: tuple, types: set, fld: Field,
                 errors: _Collector) -> tuple[np.ndarray, np.ndarray | None]:
    n = len(values)
    if types == {bool}:
        return np.fromiter(values, dtype=bool, count=n), None

    out = np.zeros(n, dtype=bool)
    nulls = np.zeros(n, dtype=bool)
    for i, value in enumerate(values):
        if type(value) is bool:
            out[i] = value
        elif value is None:
            nulls[i] = True
            if not fld.nullable:
                errors.add(i, "missing value", fld, "a value", "null")
        else:
            errors.add(i, "wrong type", fld, _expected_type(fld), type_name(value))
    return out, (nulls if nulls.any() else None)


def _str_column(values: tuple, types: set, fld: Field,
                errors: _Collector) -> tuple[np.ndarray, np.ndarray | None]:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    if types <= {str} and all(map(is_valid_utf8, values)):
        return out, None

    nulls = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values):
        if type(value) is str:
            if not is_valid_utf8(value):
                out[i] = None
                raw = value.encode("utf-8", "surrogateescape")
                errors.add(i, "invalid UTF-8", fld, "a UTF-8 string", _describe_bytes(raw))
            continue
        out[i] = None
        if value is None:
            nulls[i] = True
            if not fld.nullable:
                errors.add(i, "missing value", fld, "a value", "null")
        else:
            errors.add(i, "wrong type", fld, _expected_type(fld), type_name(value))
    return out, (nulls if nulls.any() else None)


def _describe_bytes(raw: bytes, limit: int = 32) -> str:
    description = f"bytes {raw[:limit]!r}"
    if len(raw) > limit:
        description += f" and {len(raw) - limit} more"
    return description


def unknown_enum_mask(fld: Field, raw: np.ndarray, nulls: np.ndarray | None) -> np.ndarray:
    """Return which non-null raw codes of an enum field are not members of its enum."""
    unknown = (raw < 1) | (raw > len(ENUMS[fld.enum]))
    if nulls is not None:
        unknown &= ~nulls
    return unknown


def _divide(raw: np.ndarray, divisor: int) -> np.ndarray:
    """Return ``raw / divisor`` as float64, each value rounded once from the exact quotient."""
    clean = raw / divisor
    inexact = (raw > FLOAT64_EXACT_INT) | (raw < -FLOAT64_EXACT_INT)
    if inexact.any():
        # Python divides two ints exactly before it rounds; such values are rare.
        clean[inexact] = [int(value) / divisor for value in raw[inexact]]
    return clean


def _clean_series(fld: Field, raw: np.ndarray, nulls: np.ndarray | None) -> tuple[pd.Series, int]:
    """Apply the field's transform. Return the clean series and its unknown enum codes.

    ``nulls`` marks missing values. In a field that is not nullable they are errors
    already reported, so the series keeps the field's non-nullable dtype and those
    rows contain placeholders.
    """
    if fld.enum is not None:
        unknown = unknown_enum_mask(fld, raw, nulls)
        codes = raw - 1
        if nulls is not None:
            codes[nulls] = -1
        codes[unknown] = -1
        categorical = pd.Categorical.from_codes(codes, dtype=enum_dtype(fld.enum))
        return pd.Series(categorical, name=fld.name), int(unknown.sum())

    if fld.divisor is not None:
        clean = _divide(raw, fld.divisor)
        if nulls is not None:
            clean[nulls] = np.nan
        return pd.Series(clean, name=fld.name), 0

    if fld.raw_type is RawType.STR:
        return pd.Series(raw, name=fld.name, dtype=fld.dtype), 0

    if not fld.nullable:
        return pd.Series(raw, name=fld.name), 0
    mask = np.zeros(len(raw), dtype=bool) if nulls is None else nulls
    array_type = pd.arrays.BooleanArray if fld.raw_type is RawType.BOOL else pd.arrays.IntegerArray
    return pd.Series(array_type(raw, mask), name=fld.name), 0


def build_clean_frame(rows: list, offsets: np.ndarray, aspect: Aspect, row_base: int,
                      max_problems: int = MAX_PROBLEMS_PER_RANGE) -> ColumnResult:
    """Check the values of structurally valid rows and build the clean frame.

    Parameters
    ----------
    rows : list of list
        Rows of the partition; each has between ``aspect.min_row_length`` and
        ``aspect.max_row_length`` elements.
    offsets : numpy.ndarray
        Byte offset of each row in its file.
    aspect : Aspect
        The schema of the rows.
    row_base : int
        File row number of ``rows[0]``, used in problem reports.
    max_problems : int
        Maximum number of problems to store. The rest are only counted.

    Returns
    -------
    ColumnResult
        The clean frame with one row per input row (bad rows included, with
        placeholder values) and the problems found; ``bad_rows`` marks the rows
        that have a problem. Unknown enum codes are counted in good rows only.
    """
    n_rows = len(rows)
    width = aspect.max_row_length
    errors = _Collector(offsets, row_base, n_rows, max_problems)

    if n_rows:
        padding = [[None] * k for k in range(width + 1)]
        padded = [row if len(row) == width else row + padding[width - len(row)] for row in rows]
        raw_columns = list(zip(*padded))
    else:
        raw_columns = [()] * width

    series = []
    unknown_masks = []
    for index, fld in enumerate(aspect.fields):
        values = raw_columns[index]
        types = set(map(type, values))
        errors.start_column()
        if fld.raw_type is RawType.INT:
            raw, nulls = _int_column(values, types, fld, errors)
        elif fld.raw_type is RawType.BOOL:
            raw, nulls = _bool_column(values, types, fld, errors)
        else:
            raw, nulls = _str_column(values, types, fld, errors)
        clean, unknown = _clean_series(fld, raw, nulls)
        series.append(clean)
        if unknown:
            unknown_masks.append(unknown_enum_mask(fld, raw, nulls))

    # Passing the arrays with their index skips aligning the series, which costs
    # milliseconds per partition for wide aspects.
    frame = pd.DataFrame({s.name: s.array for s in series}, index=pd.RangeIndex(n_rows),
                         copy=False)
    # A bad value leaves a placeholder code, which must not count as an unknown code.
    unknown_codes = sum(int((mask & ~errors.bad).sum()) for mask in unknown_masks)

    field_order = {fld.raw_name: index for index, fld in enumerate(aspect.fields)}
    errors.problems.sort(key=lambda p: (p.offset, field_order[p.field]))
    problems = errors.problems[:max_problems]
    bad_rows = errors.bad if errors.count else None
    return ColumnResult(frame, problems, bad_rows, unknown_codes, errors.count,
                        errors.drop_reasons)
