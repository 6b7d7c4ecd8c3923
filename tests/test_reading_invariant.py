"""The byte-range reader returns exactly what a serial decode of the whole file returns.

Whatever the blocksize, the partitions of a valid file, concatenated, must equal the
reference decode row for row and dtype for dtype. The hard inputs are string
payloads that contain bytes of array headers, or even a whole run of valid rows.
A range starting inside such a string gets a wrong proposed first row, which the
confirm chain has to correct.
"""

from __future__ import annotations

from functools import lru_cache

import pandas as pd
import pandas.testing as pdt
import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from helpers import decode_file, pack_rows
from mpp_dask.reading.rows import CANDIDATE_ROWS, find_row_start
from mpp_dask.schema import ASPECTS, ENUMS, RawType
from test_reading_reference import decode_in_order, reference_decode

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Text whose UTF-8 encoding contains bytes of fixarray, array16 and array32 headers.
HEADER_LOOKALIKES = ["\x9b\x9c\xdc\x00\x0f", "\x97\x93\x9f", "\xdd\x00\x00\x00\x0b", "\x90"]


def utf8_safe_start_pos_run(inner_rows: list[tuple[int, int, int, int, int, int]]) -> str:
    """Return text whose UTF-8 bytes contain ``inner_rows`` packed as start_pos rows.

    A start_pos row starts with the fixarray byte 0x97, a UTF-8 continuation byte,
    so the byte before every row must be a UTF-8 lead byte. Each inner row is built
    so that its bytes form valid UTF-8 together with its neighbours.
    ``player_id`` is an int16 whose bytes are a continuation byte and a 3-byte lead,
    and the two empty fixstr headers (0xa0 0xa0) complete that sequence. ``z`` is
    an int16 whose bytes are a continuation byte and a 2-byte lead, which the next
    row's 0x97 or the trailing 0x80 completes. Each tuple gives the varying parts:
    the low and lead byte of ``player_id``, ``unit_def_id``, ``x``, ``y``, and the
    low and lead byte of ``z``, each as an offset from the smallest allowed byte.
    """
    rows = []
    for player_low, player_lead, unit_def_id, x, y, z_low, z_lead in inner_rows:
        player_id = int.from_bytes(bytes([0x80 + player_low, 0xE1 + player_lead]), "big",
                                   signed=True)
        z = int.from_bytes(bytes([0x80 + z_low, 0xC2 + z_lead]), "big", signed=True)
        rows.append([player_id, "", "", unit_def_id, x, y, z])
    payload = b"name:\xc2" + pack_rows(rows) + b"\x80:end"
    return payload.decode("utf-8")


inner_row = st.tuples(
    st.integers(0, 0x3F), st.integers(0, 0xEC - 0xE1), st.integers(0, 127),
    st.integers(0, 127), st.integers(0, 127), st.integers(0, 0x3F), st.integers(0, 0xDF - 0xC2),
)
embedded_run = st.lists(inner_row, min_size=CANDIDATE_ROWS, max_size=3 * CANDIDATE_ROWS).map(
    utf8_safe_start_pos_run)

int64 = st.one_of(
    st.integers(-200, 200),
    st.integers(INT64_MIN, INT64_MAX),
    st.sampled_from([INT64_MIN, INT64_MAX, INT64_MAX - 1, 2**32, 2**53 + 1, -(2**53) - 1,
                     2**62 + 513]),
)
# Whole-number floats are valid raw integers, as exporters write big counters.
whole_float = st.integers(-(2**53), 2**53).map(float)
raw_int = st.one_of(int64, int64, whole_float)


def enum_code(enum: str) -> st.SearchStrategy[int]:
    size = len(ENUMS[enum])
    return st.one_of(st.integers(1, size), st.sampled_from([0, -1, size + 1, 1000]))


text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(HEADER_LOOKALIKES),
    st.lists(st.sampled_from(HEADER_LOOKALIKES + ["ab", "\x00"]), max_size=6).map("".join),
    embedded_run,
)


def field_value(fld) -> st.SearchStrategy:
    if fld.raw_type is RawType.BOOL:
        values = st.booleans()
    elif fld.raw_type is RawType.STR:
        values = text
    elif fld.enum is not None:
        values = enum_code(fld.enum)
    else:
        values = raw_int
    return st.one_of(st.none(), values) if fld.nullable else values


@st.composite
def aspect_row(draw, aspect_name: str, frame: int | float | None):
    aspect = ASPECTS[aspect_name]
    length = draw(st.integers(aspect.min_row_length, aspect.max_row_length))
    row = [draw(field_value(fld)) for fld in aspect.fields[:length]]
    if aspect.time_series:
        row[0] = frame
    return row


@st.composite
def aspect_file(draw, aspect_name: str, max_rows: int = 10):
    """Return (aspect name, file bytes) of a valid file with up to ``max_rows`` rows."""
    aspect = ASPECTS[aspect_name]
    n_rows = draw(st.integers(0, max_rows))
    frames = sorted(draw(st.lists(st.integers(0, 2**40), min_size=n_rows, max_size=n_rows)))
    if aspect.time_series:
        # Some frames travel as whole-number floats, as exported counters do.
        frames = [draw(st.sampled_from([f, float(f)])) for f in frames]
    rows = [draw(aspect_row(aspect_name, frame)) for frame in frames]
    return aspect_name, pack_rows(rows)


ASPECT_NAMES = sorted(ASPECTS)


@lru_cache(maxsize=8)
def cached_reference(data: bytes, aspect_name: str) -> pd.DataFrame:
    return reference_decode(data, aspect_name)


def assert_matches_reference(tmp_path, aspect_name: str, data: bytes, blocksize: int,
                             decode=decode_file):
    path = tmp_path / f"{aspect_name}.mpk"
    path.write_bytes(data)

    frame, tally = decode(path, aspect_name, blocksize=blocksize)

    expected = cached_reference(data, aspect_name)
    pdt.assert_frame_equal(frame, expected, check_exact=True)
    assert tally.rows_kept == len(expected)
    assert not tally.problems
    return tally


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_partitions_equal_serial_decode(tmp_path, data):
    aspect_name = data.draw(st.sampled_from(ASPECT_NAMES), label="aspect")
    _, raw = data.draw(aspect_file(aspect_name), label="file")
    blocksize = data.draw(st.integers(1, len(raw) + 1), label="blocksize")

    tally = assert_matches_reference(tmp_path, aspect_name, raw, blocksize)
    # Steer the search towards files and blocksizes with wrong proposals.
    target(float(tally.redecoded_ranges), label="redecoded ranges")


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_start_pos_embedded_rows(tmp_path, data):
    _, raw = data.draw(aspect_file("start_pos", max_rows=4), label="file")
    run = data.draw(embedded_run, label="embedded run")
    row = [7, run, data.draw(text, label="commander"), 1, 2, 3, 4]
    raw = data.draw(st.sampled_from([pack_rows([row]) + raw, raw + pack_rows([row])]))
    blocksize = data.draw(st.integers(1, len(raw) + 1), label="blocksize")

    tally = assert_matches_reference(tmp_path, "start_pos", raw, blocksize)
    target(float(tally.redecoded_ranges), label="redecoded ranges")


@pytest.mark.parametrize("aspect_name", ASPECT_NAMES)
def test_every_blocksize_small_file(tmp_path, aspect_name):
    aspect = ASPECTS[aspect_name]
    rows = []
    for index in range(4):
        row = [index * 3 if fld.enum is None else 1 for fld in aspect.fields]
        for position, fld in enumerate(aspect.fields):
            if fld.raw_type is RawType.BOOL:
                row[position] = index % 2 == 0
            elif fld.raw_type is RawType.STR:
                row[position] = HEADER_LOOKALIKES[index]
        rows.append(row)
    raw = pack_rows(rows)

    for blocksize in range(1, len(raw) + 2):
        assert_matches_reference(tmp_path, aspect_name, raw, blocksize, decode_in_order)


EMBEDDED_ROWS = 24


def embedded_run_file() -> tuple[bytes, int, int]:
    """Return a start_pos file whose first row's name contains a run of valid rows.

    Also returns the offset of the embedded run and of the file's second row.
    """
    run = utf8_safe_start_pos_run([(i, i % 3, 10 + i, 20 + i, 30 + i, i, i % 5)
                                   for i in range(EMBEDDED_ROWS)])
    first = [1, run, "armcom", 100, 200, 300, 400]
    others = [[2, "player_02", "corcom", 101, 201, 301, 401],
              [3, "player_03", "\x9b\x9c\xdc\x00\x0f", 102, 202, 302, 402]]
    raw = pack_rows([first] + others)
    run_offset = raw.index(b"\xc2\x97") + 1
    second_row = len(pack_rows([first]))
    return raw, run_offset, second_row


def test_embedded_run_is_proposed():
    raw, run_offset, _ = embedded_run_file()
    window_start = run_offset - 3

    # A range starting inside the name, before the run, is offered the run as a start.
    proposal = find_row_start(memoryview(raw)[window_start:], window_start, len(raw), True,
                              ASPECTS["start_pos"])

    assert proposal == run_offset


def test_wrong_proposal_is_redecoded(tmp_path):
    raw, run_offset, second_row = embedded_run_file()
    # The second range starts inside the run, with more than CANDIDATE_ROWS inner rows
    # after its start, and also contains the true start of the second row.
    blocksize = second_row // 2 + 1
    inner_row_size = 12
    assert run_offset < blocksize
    assert blocksize + CANDIDATE_ROWS * inner_row_size < run_offset + EMBEDDED_ROWS * inner_row_size
    assert second_row < 2 * blocksize
    proposal = find_row_start(memoryview(raw)[blocksize:], blocksize, 2 * blocksize, True,
                              ASPECTS["start_pos"])
    assert run_offset < proposal < second_row

    tally = assert_matches_reference(tmp_path, "start_pos", raw, blocksize)

    assert tally.redecoded_ranges == 1
    assert tally.next_start == len(raw)


def test_wrong_proposal_every_blocksize(tmp_path):
    raw, _, _ = embedded_run_file()
    redecoded = 0

    for blocksize in range(1, len(raw) + 2):
        tally = assert_matches_reference(tmp_path, "start_pos", raw, blocksize,
                                         decode_in_order)
        redecoded += tally.redecoded_ranges

    assert redecoded > 0
