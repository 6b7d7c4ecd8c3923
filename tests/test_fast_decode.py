"""The compiled decoder returns what the reference decoder returns, or declines.

``fast.fast_decode_window`` must either decode a window to the same frame, natural
end, row count, unknown enum count and frame bounds as ``decode.decode_window``, or
return None. It may return None only when the reference path finds a problem, needs
more bytes, or the aspect has string fields, so a None never hides a wrong result
and a clean window never falls back needlessly.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
import tracemalloc

import msgpack
import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpp_dask.reading import fast, fast_aspect
from mpp_dask.reading.decode import decode_window
from mpp_dask.reading.fast import ScanStatus, fast_decode_window, scan_window
from mpp_dask.reading.rows import NeedMoreData, scan_rows
from mpp_dask.schema import ASPECTS, ENUMS, Aspect, RawType, get_aspect

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# numba is an optional dependency. Without it the reference path decodes every
# window, and there is no compiled loop to test.
pytestmark = pytest.mark.skipif(fast.compiled_scan_window() is None,
                                reason="numba is not installed")

NUMERIC_ASPECTS = sorted(name for name, aspect in ASPECTS.items()
                         if all(f.raw_type is not RawType.STR for f in aspect.fields))


def reference(window, window_start: int, start: int, stop: int, at_eof: bool,
              aspect: Aspect):
    """Return the reference decode of a window, or None when it needs more bytes."""
    try:
        return decode_window(window, window_start, start, stop, at_eof, aspect,
                             skip_on_error=False)
    except NeedMoreData:
        return None


def assert_matches_reference(window, window_start: int, start: int, stop: int,
                             at_eof: bool, aspect: Aspect):
    """Check the fast decode of a window against the reference, and return the fast result."""
    decoded = fast_decode_window(window, window_start, start, stop, at_eof, aspect)
    expected = reference(window, window_start, start, stop, at_eof, aspect)
    has_strings = any(f.raw_type is RawType.STR for f in aspect.fields)
    clean = expected is not None and not expected.problems
    if has_strings or not clean:
        assert decoded is None
        return None

    assert decoded is not None, "the fast path declined a window the reference decodes cleanly"
    pdt.assert_frame_equal(decoded.frame, expected.frame, check_dtype=True)
    assert decoded.end == expected.end
    assert decoded.objects == expected.objects
    assert decoded.unknown_enum_codes == expected.unknown_enum_codes
    assert decoded.first_frame == expected.first_frame
    assert decoded.last_frame == expected.last_frame
    return decoded


# --- Encoding rows in every MessagePack form the decoder accepts -----------------

def int_encodings(value: int) -> list[bytes]:
    """Return every MessagePack encoding that decodes to the integer ``value``."""
    forms = []
    if 0 <= value <= 0x7F:
        forms.append(bytes([value]))
    if -32 <= value < 0:
        forms.append(bytes([value & 0xFF]))
    for lead, size in ((0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8)):
        if 0 <= value < 1 << (8 * size):
            forms.append(bytes([lead]) + value.to_bytes(size, "big"))
    for lead, size in ((0xD0, 1), (0xD1, 2), (0xD2, 4), (0xD3, 8)):
        if -(1 << (8 * size - 1)) <= value < 1 << (8 * size - 1):
            forms.append(bytes([lead]) + value.to_bytes(size, "big", signed=True))
    # Whole-number floats are valid ints, as real files write large counters.
    for lead, fmt in ((0xCA, ">f"), (0xCB, ">d")):
        try:
            packed = struct.pack(fmt, float(value))
        except OverflowError:
            continue
        if int(struct.unpack(fmt, packed)[0]) == value:
            forms.append(bytes([lead]) + packed)
    return forms


def array_header_encodings(length: int) -> list[bytes]:
    """Return every MessagePack array header for ``length`` elements."""
    forms = [b"\xdc" + length.to_bytes(2, "big"), b"\xdd" + length.to_bytes(4, "big")]
    if length < 16:
        forms.append(bytes([0x90 | length]))
    return forms


def value_encodings(value) -> list[bytes]:
    if value is None:
        return [b"\xc0"]
    if value is True:
        return [b"\xc3"]
    if value is False:
        return [b"\xc2"]
    return int_encodings(value)


def encode_rows(rows: list[list], choose) -> tuple[bytes, list[int]]:
    """Encode rows, picking each value's encoding with ``choose``.

    Returns the bytes and the offset of each row.
    """
    parts = []
    starts = []
    position = 0
    for row in rows:
        starts.append(position)
        encoded = choose(array_header_encodings(len(row)))
        encoded += b"".join(choose(value_encodings(value)) for value in row)
        parts.append(encoded)
        position += len(encoded)
    return b"".join(parts), starts


def smallest_encoding(forms: list[bytes]) -> bytes:
    return min(forms, key=len)


# --- Random valid rows -----------------------------------------------------------

int64 = st.one_of(
    st.integers(-40, 300),
    st.integers(-(2**31), 2**32),
    st.integers(INT64_MIN, INT64_MAX),
    st.sampled_from([INT64_MIN, INT64_MAX, -33, -32, 127, 128, 255, 256, 65535, 65536,
                     2**53 + 1, -(2**53) - 1, 16777217]),
)


def field_value(fld) -> st.SearchStrategy:
    if fld.raw_type is RawType.BOOL:
        values = st.booleans()
    elif fld.enum is not None:
        size = len(ENUMS[fld.enum])
        values = st.one_of(st.integers(1, size), st.sampled_from([0, -1, size + 1, 1000]))
    else:
        values = int64
    return st.one_of(st.none(), values) if fld.nullable else values


@st.composite
def valid_rows(draw, aspect: Aspect) -> list[list]:
    """Draw rows that are valid for ``aspect``, short rows included, frames in order."""
    lengths = st.integers(aspect.min_row_length, aspect.max_row_length)
    row_values = [field_value(fld) for fld in aspect.fields]
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        length = draw(lengths)
        rows.append([draw(row_values[i]) for i in range(length)])
    if aspect.time_series:
        frames = sorted(draw(st.integers(0, 10**6)) for _ in rows)
        for row, frame in zip(rows, frames):
            row[0] = frame
    return rows


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_valid_windows_match_reference(data):
    aspect = get_aspect(data.draw(st.sampled_from(NUMERIC_ASPECTS), label="aspect"))
    rows = data.draw(valid_rows(aspect), label="rows")
    chooser = data.draw(st.randoms(use_true_random=False), label="encodings")
    encoded, starts = encode_rows(rows, chooser.choice)

    start = data.draw(st.sampled_from(starts + [len(encoded)]), label="start")
    window_start = data.draw(st.integers(0, start), label="window_start")
    stop = data.draw(st.integers(start, len(encoded) + 2), label="stop")
    window_end = data.draw(st.one_of(st.just(len(encoded)), st.integers(start, len(encoded))),
                           label="window_end")
    at_eof = window_end == len(encoded)
    window = memoryview(encoded[window_start:window_end])

    assert_matches_reference(window, window_start, start, stop, at_eof, aspect)


# Bytes after ``stop`` in a padded window. They let the aspect loop take every row,
# because it takes a row only when the longest possible row fits in the window.
@pytest.fixture(autouse=True)
def aspect_loop_on_every_range(monkeypatch):
    """Use the aspect loops on the small windows of these tests too."""
    monkeypatch.setattr(fast, "ASPECT_LOOP_MIN_BYTES", 0)


PADDING = bytes(1024)


def padded(encoded: bytes) -> tuple[memoryview, int]:
    """Return a window of ``encoded`` followed by PADDING, and the stop before the padding."""
    return memoryview(encoded + PADDING), len(encoded)


def aspect_loop_rows(window, stop: int, aspect: Aspect) -> int:
    """Run only the aspect loop over a window from offset 0, and return its row count."""
    plan = fast.column_plan(aspect)
    columns = fast._Columns(plan, fast._max_rows(stop, plan.min_row_length))
    buf = np.frombuffer(window, dtype=np.uint8)
    buf.flags.writeable = False
    loop = fast_aspect.compiled_aspect_loop(aspect)
    rows, _, _ = loop(buf, 0, stop, 0, 0, 0, *columns.flat_arrays(), columns.offsets)
    return rows


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_padded_windows_match_reference(data):
    """Every row of these windows goes through the aspect loop, short rows included."""
    aspect = get_aspect(data.draw(st.sampled_from(NUMERIC_ASPECTS), label="aspect"))
    rows = data.draw(valid_rows(aspect), label="rows")
    chooser = data.draw(st.randoms(use_true_random=False), label="encodings")
    encoded, _ = encode_rows(rows, chooser.choice)
    window, stop = padded(encoded)

    decoded = assert_matches_reference(window, 0, 0, stop, False, aspect)

    # Values above 2**53 in a dequantized field are left to the generic loop.
    big_divided = any(value is not None and abs(value) > fast.FLOAT64_EXACT_INT
                      for row in rows for fld, value in zip(aspect.fields, row)
                      if fld.divisor is not None)
    if decoded is not None and not big_divided:
        assert aspect_loop_rows(window, stop, aspect) == len(rows)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_corrupted_windows_match_reference(data):
    """Overwrite a few bytes of valid rows: both paths must agree on the result."""
    aspect = get_aspect(data.draw(st.sampled_from(NUMERIC_ASPECTS), label="aspect"))
    rows = data.draw(valid_rows(aspect).filter(bool), label="rows")
    chooser = data.draw(st.randoms(use_true_random=False), label="encodings")
    encoded, _ = encode_rows(rows, chooser.choice)

    corrupted = bytearray(encoded)
    for _ in range(data.draw(st.integers(1, 3), label="corruptions")):
        position = data.draw(st.integers(0, len(corrupted) - 1), label="position")
        corrupted[position] = data.draw(st.integers(0, 255), label="byte")
    cut = data.draw(st.integers(1, len(corrupted)), label="length")
    window = memoryview(bytes(corrupted[:cut]))

    assert_matches_reference(window, 0, 0, len(window), True, aspect)


# --- Edge encodings, each checked on its own -------------------------------------

EDGE_VALUES = [
    ("int64 minimum", b"\xd3" + INT64_MIN.to_bytes(8, "big", signed=True)),
    ("int64 maximum as uint64", b"\xcf" + INT64_MAX.to_bytes(8, "big")),
    ("int64 maximum as int64", b"\xd3" + INT64_MAX.to_bytes(8, "big", signed=True)),
    ("negative fixint -32", b"\xe0"),
    ("int8 -33", b"\xd0\xdf"),
    ("int16 -1", b"\xd1\xff\xff"),
    ("int32 minimum", b"\xd2\x80\x00\x00\x00"),
    ("uint32 maximum", b"\xce\xff\xff\xff\xff"),
    ("float32 2**24", b"\xca" + struct.pack(">f", 2.0**24)),
    ("float32 -2**63", b"\xca" + struct.pack(">f", -(2.0**63))),
    ("float64 -2**63", b"\xcb" + struct.pack(">d", -(2.0**63))),
    ("float64 negative zero", b"\xcb" + struct.pack(">d", -0.0)),
    ("float64 2**62", b"\xcb" + struct.pack(">d", 2.0**62)),
]


@pytest.mark.parametrize("encoded_value", [v for _, v in EDGE_VALUES],
                         ids=[name for name, _ in EDGE_VALUES])
def test_edge_int_encoding_matches_reference(encoded_value):
    aspect = get_aspect("map_envir_econ")
    data = b"\x93\x05\x01\x02" + b"\x93\x06" + encoded_value + b"\x03"
    decoded = assert_matches_reference(memoryview(data), 0, 0, len(data), True, aspect)
    assert decoded is not None


@pytest.mark.parametrize("encoded_value", [v for _, v in EDGE_VALUES],
                         ids=[name for name, _ in EDGE_VALUES])
def test_edge_int_encoding_in_aspect_loop(encoded_value):
    aspect = get_aspect("map_envir_econ")
    window, stop = padded(b"\x93\x05\x01\x02" + b"\x93\x06" + encoded_value + b"\x03")
    decoded = assert_matches_reference(window, 0, 0, stop, False, aspect)
    assert decoded is not None
    assert aspect_loop_rows(window, stop, aspect) == 2


@pytest.mark.parametrize("header", [b"\x93", b"\xdc\x00\x03", b"\xdd\x00\x00\x00\x03"],
                         ids=["fixarray", "array16", "array32"])
def test_row_header_forms_match_reference(header):
    aspect = get_aspect("map_envir_econ")
    data = header + b"\x01\x02\x03" + header + b"\x02\xcd\x01\x00\x05"
    decoded = assert_matches_reference(memoryview(data), 0, 0, len(data), True, aspect)
    assert decoded is not None
    assert decoded.objects == 2


def test_short_rows_are_null_filled():
    aspect = get_aspect("unit_events")
    rows = [[1, 2, 3, 4, 5, 6, 7, None, None, None, 1],
            [2, 3, None, 4, 5, 6, 7, 8, 9, 10, 3, 11, 12, 13, 14]]
    data, _ = encode_rows(rows, smallest_encoding)
    decoded = assert_matches_reference(memoryview(data), 0, 0, len(data), True, aspect)
    assert decoded is not None
    assert decoded.frame["factory_queue_len"].isna().tolist() == [True, False]


def test_unknown_enum_codes_counted_as_null():
    aspect = get_aspect("construction_log")
    rows = [[1, code, 1, 2, 3, 4, 5, None, 1500] for code in (1, 0, 6, 7, 99)]
    data, _ = encode_rows(rows, smallest_encoding)
    decoded = assert_matches_reference(memoryview(data), 0, 0, len(data), True, aspect)
    assert decoded is not None
    assert decoded.unknown_enum_codes == 3
    assert decoded.frame["event"].isna().sum() == 3


def test_empty_range_matches_reference():
    aspect = get_aspect("damage_log")
    data, _ = encode_rows([[1] + [2] * 9 + [True, 3, 4, 5]], smallest_encoding)
    decoded = assert_matches_reference(memoryview(data), 0, 0, 0, True, aspect)
    assert decoded is not None
    assert len(decoded.frame) == 0


# --- Growing the output columns -------------------------------------------------

@pytest.mark.parametrize("initial_rows", [1, 2, 3, 7])
def test_growing_columns_matches_reference(monkeypatch, initial_rows):
    monkeypatch.setattr(fast, "INITIAL_ROWS", initial_rows)
    aspect = get_aspect("unit_events")
    rows = [[frame, 2, None if frame % 3 else 3, 4, 5, 6, 7, None, None, None, 1 + frame % 9]
            + [frame] * (frame % 5) for frame in range(40)]
    data, _ = encode_rows(rows, smallest_encoding)

    decoded = assert_matches_reference(memoryview(data), 0, 0, len(data), True, aspect)
    assert decoded is not None
    assert decoded.objects == 40


@pytest.mark.parametrize("initial_rows", [2, 3, 4])
def test_frame_decrease_found_across_growth(monkeypatch, initial_rows):
    monkeypatch.setattr(fast, "INITIAL_ROWS", initial_rows)
    aspect = get_aspect("map_envir_econ")
    data, starts = encode_rows([[1, 0, 0], [2, 0, 0], [3, 0, 0], [2, 0, 0], [4, 0, 0]],
                               smallest_encoding)

    scan = scan_window(memoryview(data), 0, 0, len(data), True, aspect)
    assert scan.status is ScanStatus.FRAME_ORDER
    assert scan.stopped_at == starts[3]


def test_early_stop_allocates_little():
    aspect = get_aspect("unit_positions")
    good, _ = encode_rows([[i, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10] for i in range(40_000)],
                          smallest_encoding)
    data = good[:100] + b"\xc1" + good
    tracemalloc.start()
    try:
        scan = scan_window(memoryview(data), 0, 0, len(data), True, aspect)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert scan.status is not ScanStatus.OK
    # The initial columns: INITIAL_ROWS rows of 11 int64 values and an offset.
    assert peak < 2 * fast.INITIAL_ROWS * 12 * 8


# --- Problems make the fast path stop, never decode ------------------------------

# A valid damage_log row; the cases below change one element of the second row.
DAMAGE_ROW = [100, 1, None, 2, 3, 4, 5, 6, 7, 125, False, 8, 9, 10]
BOOL_FIELD = 10


def damage_rows_with(index: int, raw_value: bytes) -> tuple[bytes, int]:
    """Return three damage_log rows whose second has ``raw_value`` at ``index``.

    Returns the bytes and the offset of the second row.
    """
    first, _ = encode_rows([DAMAGE_ROW], smallest_encoding)
    values = [smallest_encoding(value_encodings(v)) for v in DAMAGE_ROW]
    values[index] = raw_value
    second = b"\x9e" + b"".join(values)
    return first + second + first, len(first)


BAD_VALUES = [
    ("fixstr in int field", 1, b"\xa1a"),
    ("str8 in int field", 1, b"\xd9\x01a"),
    ("bin in int field", 1, b"\xc4\x01\x00"),
    ("array in int field", 1, b"\x91\x01"),
    ("map in int field", 1, b"\x81\x01\x02"),
    ("fixext in int field", 1, b"\xd4\x01\x00"),
    ("ext8 in int field", 1, b"\xc7\x01\x01\x00"),
    ("reserved byte", 1, b"\xc1"),
    ("bool in int field", 1, b"\xc3"),
    ("int in bool field", BOOL_FIELD, b"\x01"),
    ("nil in bool field", BOOL_FIELD, b"\xc0"),
    ("nil in non-nullable int field", 1, b"\xc0"),
    ("uint64 above int64 maximum", 1, b"\xcf" + (2**63).to_bytes(8, "big")),
    ("float32 with fraction", 1, b"\xca" + struct.pack(">f", 1.5)),
    ("float64 with fraction", 1, b"\xcb" + struct.pack(">d", -2.25)),
    ("float64 NaN", 1, b"\xcb" + struct.pack(">d", math.nan)),
    ("float64 infinity", 1, b"\xcb" + struct.pack(">d", math.inf)),
    ("float64 2**63", 1, b"\xcb" + struct.pack(">d", 2.0**63)),
    ("float32 above int64", 1, b"\xca" + struct.pack(">f", 2.0**64)),
]


@pytest.mark.parametrize(("index", "raw_value"), [(i, v) for _, i, v in BAD_VALUES],
                         ids=[name for name, _, _ in BAD_VALUES])
def test_bad_value_stops_at_its_row(index, raw_value):
    aspect = get_aspect("damage_log")
    data, bad_row = damage_rows_with(index, raw_value)
    window = memoryview(data)

    scan = scan_window(window, 0, 0, len(data), True, aspect)
    assert scan.status is ScanStatus.INVALID
    assert scan.stopped_at == bad_row
    assert fast_decode_window(window, 0, 0, len(data), True, aspect) is None

    expected = reference(window, 0, 0, len(data), True, aspect)
    assert expected.problems
    assert expected.problems[0].offset == bad_row


@pytest.mark.parametrize(("index", "raw_value"), [(i, v) for _, i, v in BAD_VALUES],
                         ids=[name for name, _, _ in BAD_VALUES])
def test_bad_value_stops_aspect_loop_at_its_row(index, raw_value):
    aspect = get_aspect("damage_log")
    data, bad_row = damage_rows_with(index, raw_value)
    window, stop = padded(data)

    assert aspect_loop_rows(window, stop, aspect) == 1
    scan = scan_window(window, 0, 0, stop, False, aspect)
    assert scan.status is ScanStatus.INVALID
    assert scan.stopped_at == bad_row
    assert fast_decode_window(window, 0, 0, stop, False, aspect) is None


def rows_with_second(aspect_name: str, second: bytes) -> tuple[bytes, int]:
    """Return a valid row, then ``second``, then the valid row again.

    Returns the bytes and the offset of ``second``.
    """
    good = {
        "unit_events": [[1, 2, 3, 4, 5, 6, 7, None, None, None, 1]],
        "damage_log": [DAMAGE_ROW],
        "map_envir_econ": [[10, 1, 2]],
    }[aspect_name]
    first, _ = encode_rows(good, smallest_encoding)
    return first + second + first, len(first)


BAD_ROWS = [
    ("row too short", "unit_events", b"\x9a" + bytes(range(1, 11)), ScanStatus.INVALID),
    ("row too long", "map_envir_econ", b"\x94\x0a\x01\x02\x03", ScanStatus.INVALID),
    ("empty row", "map_envir_econ", b"\x90", ScanStatus.INVALID),
    ("array16 row too long", "map_envir_econ", b"\xdc\x00\x04\x0a\x01\x02\x03",
     ScanStatus.INVALID),
    ("array32 row too long", "map_envir_econ", b"\xdd\x00\x01\x00\x00", ScanStatus.INVALID),
    ("row is a map", "map_envir_econ", b"\x81\x01\x02", ScanStatus.INVALID),
    ("row is an int", "map_envir_econ", b"\x05", ScanStatus.INVALID),
    ("row is nil", "map_envir_econ", b"\xc0", ScanStatus.INVALID),
    ("frame decreases", "map_envir_econ", b"\x93\x09\x01\x02", ScanStatus.FRAME_ORDER),
]


@pytest.mark.parametrize(("aspect_name", "second", "status"),
                         [(a, s, st_) for _, a, s, st_ in BAD_ROWS],
                         ids=[name for name, _, _, _ in BAD_ROWS])
def test_bad_row_stops_at_its_start(aspect_name, second, status):
    aspect = get_aspect(aspect_name)
    data, bad_row = rows_with_second(aspect_name, second)
    window = memoryview(data)

    scan = scan_window(window, 0, 0, len(data), True, aspect)
    assert scan.status is status
    assert scan.stopped_at == bad_row
    assert fast_decode_window(window, 0, 0, len(data), True, aspect) is None

    expected = reference(window, 0, 0, len(data), True, aspect)
    assert expected.problems
    assert expected.problems[0].offset == bad_row


def test_truncated_last_row_at_end_of_file_stops():
    aspect = get_aspect("map_envir_econ")
    data = b"\x93\x01\x02\x03" + b"\x93\x02\xcd\x01"
    window = memoryview(data)

    scan = scan_window(window, 0, 0, len(data), True, aspect)
    assert scan.status is ScanStatus.WINDOW_END
    assert scan.stopped_at == 4
    assert fast_decode_window(window, 0, 0, len(data), True, aspect) is None
    assert reference(window, 0, 0, len(data), True, aspect).problems[0].reason == "truncated row"


# Each case gives where the window ends and the row start where the loop must stop.
# The rows start at offsets 0, 4 and 10.
WINDOW_CUTS = [("after header", 5, 4), ("after a field", 6, 4), ("inside a uint16", 7, 4),
               ("between rows", 10, 10)]


@pytest.mark.parametrize(("window_end", "stopped_at"), [(e, s) for _, e, s in WINDOW_CUTS],
                         ids=[name for name, _, _ in WINDOW_CUTS])
def test_window_ending_before_stop_stops(window_end, stopped_at):
    aspect = get_aspect("map_envir_econ")
    data = b"\x93\x01\x02\x03" + b"\x93\x02\xcd\x01\x00\x04" + b"\x93\x03\x03\x03"
    window = memoryview(data[:window_end])
    stop = len(data)

    scan = scan_window(window, 0, 0, stop, False, aspect)
    assert scan.status is ScanStatus.WINDOW_END
    assert scan.stopped_at == stopped_at
    assert fast_decode_window(window, 0, 0, stop, False, aspect) is None
    assert reference(window, 0, 0, stop, False, aspect) is None


def test_string_aspect_is_left_to_reference():
    aspect = get_aspect("start_pos")
    data = msgpack.packb([0, "player", "armcom", 12, 100, 50, 200])
    window = memoryview(data)

    scan = scan_window(window, 0, 0, len(data), True, aspect)
    assert scan.status is ScanStatus.STRING_FIELD
    assert scan.stopped_at == 0
    assert fast_decode_window(window, 0, 0, len(data), True, aspect) is None
    assert fast_decode_window(window, 0, 0, 0, True, aspect) is None


# --- The real example replay -----------------------------------------------------

@pytest.mark.example
@pytest.mark.parametrize("aspect_name", sorted(ASPECTS))
def test_example_file_matches_reference(example_replay, aspect_name):
    path = example_replay / f"{aspect_name}.mpk"
    if not path.exists():
        pytest.skip(f"the example replay has no {path.name}")
    data = path.read_bytes()
    aspect = get_aspect(aspect_name)
    window = memoryview(data)

    decoded = assert_matches_reference(window, 0, 0, len(data), True, aspect)
    if aspect_name == "start_pos":
        assert decoded is None
        return
    assert decoded is not None
    rows = scan_rows(window, 0, 0, len(data), True, aspect, skip_on_error=False)
    np.testing.assert_array_equal(decoded.offsets, np.asarray(rows.offsets, dtype=np.int64))


@pytest.mark.example
@pytest.mark.parametrize("aspect_name", ["unit_events", "unit_state_snapshots", "team_stats"])
def test_example_file_ranges_match_reference(example_replay, aspect_name):
    """Decode a file range by range, each window ending before the file does."""
    data = (example_replay / f"{aspect_name}.mpk").read_bytes()
    aspect = get_aspect(aspect_name)
    blocksize = 100_000
    overrun = 4096

    start = 0
    for offset in range(0, len(data), blocksize):
        stop = min(offset + blocksize, len(data))
        window_end = min(stop + overrun, len(data))
        window = memoryview(data[offset:window_end])
        decoded = assert_matches_reference(window, offset, start, stop, window_end == len(data),
                                           aspect)
        assert decoded is not None
        start = decoded.end
    assert start == len(data)


# --- Dequantization, and the frame built without pandas 3 ------------------------

@settings(max_examples=300, deadline=None)
@given(value=st.one_of(int64, st.integers(2**53 - 8, 2**53 + 4096)),
       divisor=st.one_of(st.sampled_from([1, 2, 3, 10, 1000]), st.integers(1, 2**40)))
def test_divide_exactly_matches_python(value, divisor):
    fast.compiled_scan_window()
    assert fast._divide_exactly(value, divisor) == value / divisor


def test_big_dequantized_value_matches_reference():
    """A dequantized value above 2**53 leaves the aspect loop and is divided exactly."""
    aspect = get_aspect("damage_log")
    damage_index = [f.raw_name for f in aspect.fields].index("damage")
    rows = [list(DAMAGE_ROW), list(DAMAGE_ROW)]
    rows[1][damage_index] = 2**60 + 7
    data, _ = encode_rows(rows, smallest_encoding)
    window, stop = padded(data)

    assert aspect_loop_rows(window, stop, aspect) == 1
    decoded = assert_matches_reference(window, 0, 0, stop, False, aspect)
    assert decoded is not None
    assert decoded.frame["damage"].iloc[1] == (2**60 + 7) / 10


@pytest.mark.parametrize("aspect_name", ["unit_events", "damage_log", "unit_state_snapshots",
                                         "team_stats"])
def test_frame_from_columns_matches_blocks(aspect_name):
    aspect = get_aspect(aspect_name)
    is_bool = [fld.raw_type is RawType.BOOL for fld in aspect.fields]
    # Rows 0 and 2 have nulls where the aspect allows them, and row 1 has none.
    sparse = [False if boolean else 1 for boolean in is_bool]
    for index, fld in enumerate(aspect.fields):
        if fld.nullable:
            sparse[index] = None
    full = [True if boolean else 2 for boolean in is_bool]
    rows = [[0] + sparse[1:], [1] + full[1:], [2] + sparse[1:]]
    data, _ = encode_rows(rows, smallest_encoding)
    window, stop = padded(data)
    scan = scan_window(window, 0, 0, stop, False, aspect)
    assert scan.status is ScanStatus.OK

    layout = fast.frame_layout(aspect)
    blocks = [(scan.ints[:len(layout.int_placement)], layout.int_placement),
              (scan.floats, layout.float_placement),
              (scan.bools[:len(layout.bool_placement)], layout.bool_placement)]
    blocks += [(fast._extension_array(scan, kind, slot, null_slot, dtype), placement)
               for placement, kind, slot, null_slot, dtype in layout.extension_columns]
    by_columns = fast.frame_from_columns(blocks, layout.columns, pd.RangeIndex(3))

    pdt.assert_frame_equal(by_columns, fast.build_frame(scan, aspect))
    pdt.assert_frame_equal(by_columns, reference(window, 0, 0, stop, False, aspect).frame)


# --- Compilation, caching and numba being absent ---------------------------------

def test_one_compiled_specialisation_for_all_aspects():
    for name in ("map_envir_econ", "unit_events", "damage_log"):
        aspect = get_aspect(name)
        row = [[1, 2, 3, 4, 5, 6, 7, None, None, None, 1]] if name == "unit_events" else (
            [DAMAGE_ROW] if name == "damage_log" else [[1, 2, 3]])
        data, _ = encode_rows(row, smallest_encoding)
        for window in (memoryview(data), memoryview(bytearray(data))):
            assert fast_decode_window(window, 0, 0, len(data), True, aspect) is not None
    assert len(fast.compiled_scan_window().signatures) == 1


DECODE_IN_SUBPROCESS = """
import sys
if sys.argv[1] == "hide-numba":
    sys.modules["numba"] = None
from mpp_dask.reading import fast
fast.ASPECT_LOOP_MIN_BYTES = 0
from mpp_dask.schema import get_aspect
data = bytes([0x93, 1, 2, 3])
decoded = fast.fast_decode_window(memoryview(data), 0, 0, len(data), True,
                                  get_aspect("map_envir_econ"))
kernel = fast.compiled_scan_window()
if kernel is None:
    print("numba missing", decoded is None)
else:
    from mpp_dask.reading import fast_aspect
    aspect_loop = fast_aspect.compiled_aspect_loop(get_aspect("map_envir_econ"))
    print("cache hits", sum(kernel.stats.cache_hits.values()),
          sum(aspect_loop.stats.cache_hits.values()), decoded is not None)
"""


def run_decode_subprocess(mode: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", DECODE_IN_SUBPROCESS, mode],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    return result


def test_without_numba_fast_path_declines():
    assert run_decode_subprocess("hide-numba").stdout.strip() == "numba missing True"


def test_compiled_loops_load_from_disk_cache():
    run_decode_subprocess("warm-up")
    assert run_decode_subprocess("check").stdout.strip() == "cache hits 1 1 True"


def test_unwritable_loop_folder_uses_generic_loop(tmp_path):
    """The aspect loop's source cannot be written, so the generic loop decodes alone."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    env = dict(os.environ, XDG_CACHE_HOME=str(not_a_folder),
               NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    script = """
import numpy as np
from mpp_dask.reading import fast, fast_aspect
from mpp_dask.schema import get_aspect
fast.ASPECT_LOOP_MIN_BYTES = 0
aspect = get_aspect("map_envir_econ")
data = bytes([0x93, 1, 2, 3, 0x93, 2, 0xCD, 1, 0, 5])
decoded = fast.fast_decode_window(memoryview(data), 0, 0, len(data), True, aspect)
print(fast_aspect.compiled_aspect_loop(aspect), decoded.frame["frame"].tolist())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None [1, 2]"
    assert "cannot write the compiled row loop of map_envir_econ" in result.stderr


def test_small_range_leaves_aspect_loop_uncompiled(monkeypatch):
    monkeypatch.setattr(fast, "ASPECT_LOOP_MIN_BYTES", 1024)
    monkeypatch.setattr(fast_aspect, "compiled_aspect_loop",
                        lambda aspect: pytest.fail("the aspect loop was asked for"))
    aspect = get_aspect("team_stats")
    rows = [[300, team] + [10] * (len(aspect.fields) - 2) for team in range(3)]
    encoded, _ = encode_rows(rows, lambda choices: choices[0])
    window, stop = padded(encoded)

    assert stop < 1024
    assert_matches_reference(window, 0, 0, stop, False, aspect)


FIRST_CALLS_IN_THREADS = """
import threading
from mpp_dask.reading import fast
from mpp_dask.schema import get_aspect
fast.ASPECT_LOOP_MIN_BYTES = 0
barrier = threading.Barrier(4)
errors = []
data = bytes([0x93, 1, 2, 3])

def first_call():
    barrier.wait()
    try:
        decoded = fast.fast_decode_window(memoryview(data), 0, 0, len(data), True,
                                          get_aspect("map_envir_econ"))
        assert decoded is not None
    except Exception as error:
        errors.append(repr(error))

threads = [threading.Thread(target=first_call) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(errors)
"""


def test_first_calls_from_several_threads():
    """Worker threads that decode their first window at once share one compiled loop."""
    result = subprocess.run([sys.executable, "-c", FIRST_CALLS_IN_THREADS],
                            capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
