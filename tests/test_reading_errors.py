"""Bad aspect files fail with DecodeError or FrameOrderError and a message that locates the row.

Every message names the file, the byte offset where the bad row starts, the row
number within the file (counted from 0) and what was expected versus found. The
offset and row must not depend on the blocksize, so each case runs at several.
"""

from __future__ import annotations

import pickle
import re
import time
import tracemalloc

import msgpack
import pytest

from helpers import decode_file, pack_rows
from mpp_dask.errors import DecodeError, FrameOrderError, MppDaskError
from mpp_dask.reading.columns import MAX_PROBLEMS_PER_RANGE
from mpp_dask.reading.decode import decode_range
from mpp_dask.schema import ASPECTS, RawType

BLOCKSIZES = [1, 2, 5, 16, 1 << 20]


def unit_positions_row(frame: int, unit_id: int = 1) -> list:
    return [frame, unit_id, 100, 2, 10, 20, 30, 500, -500, 0, 1024]


def good_rows(count: int, first_frame: int = 0) -> list:
    return [unit_positions_row(first_frame + index, index) for index in range(count)]


def write(tmp_path, aspect_name: str, data: bytes):
    path = tmp_path / f"{aspect_name}.mpk"
    path.write_bytes(data)
    return path


def assert_fails_everywhere(path, aspect_name: str, error_type: type[DecodeError], offset: int,
                            row: int, pattern: str, blocksizes=BLOCKSIZES,
                            skip_on_error: bool = False) -> DecodeError:
    """Assert every blocksize raises ``error_type`` first at ``offset`` and ``row``."""
    caught = None
    for blocksize in blocksizes:
        with pytest.raises(error_type, match=pattern) as info:
            decode_file(path, aspect_name, blocksize=blocksize, skip_on_error=skip_on_error)
        caught = info.value
        message = str(caught)
        location = f"invalid data in {path}: byte offset {offset}, row {row}"
        assert message.startswith(location), f"blocksize {blocksize}: {message}"
        assert type(caught) is error_type
        assert caught.path == str(path)
        assert caught.first.offset == offset
        assert caught.first.row == row
    return caught


def test_truncated_last_row(tmp_path):
    head = pack_rows(good_rows(5))
    last = pack_rows([unit_positions_row(9)])
    path = write(tmp_path, "unit_positions", head + last[:6])

    assert_fails_everywhere(
        path, "unit_positions", DecodeError, len(head), 5,
        r"truncated row: expected a complete MessagePack array, found end of file after 6 bytes")


def test_truncated_inside_string(tmp_path):
    head = pack_rows([[1, "player_01", "armcom", 1, 2, 3, 4]])
    last = pack_rows([[2, "player_02_with_a_long_name", "corcom", 1, 2, 3, 4]])
    path = write(tmp_path, "start_pos", head + last[:10])

    assert_fails_everywhere(path, "start_pos", DecodeError, len(head), 1,
                            r"truncated row: .* found end of file after 10 bytes")


def test_never_used_byte_between_rows(tmp_path):
    head = pack_rows(good_rows(4))
    path = write(tmp_path, "unit_positions", head + b"\xc1\xc1" + pack_rows(good_rows(3, 10)))

    assert_fails_everywhere(
        path, "unit_positions", DecodeError, len(head), 4,
        r"invalid MessagePack: expected an array row, found byte 0xc1, "
        r"which MessagePack never uses")


def test_integer_garbage_between_rows(tmp_path):
    # 0xff is the integer -1 in MessagePack, a value but no row.
    head = pack_rows(good_rows(3))
    path = write(tmp_path, "unit_positions", head + b"\xff\xff\xff" + pack_rows(good_rows(3, 10)))

    assert_fails_everywhere(path, "unit_positions", DecodeError, len(head), 3,
                            r"row is not an array: expected an array, found int")


def test_row_longer_than_schema(tmp_path):
    head = pack_rows(good_rows(2))
    path = write(tmp_path, "unit_positions",
                 head + pack_rows([unit_positions_row(5) + [0]] + good_rows(2, 6)))

    assert_fails_everywhere(
        path, "unit_positions", DecodeError, len(head), 2,
        r"row too long: expected an array of at most 11 elements, "
        r"found an array header claiming 12 elements")


def test_row_longer_as_array16(tmp_path):
    # A 16-element row needs the array16 header, which no row of unit_events has.
    head = pack_rows([[1, 2, None, None, 0, 0, 0, None, None, None, 1]])
    path = write(tmp_path, "unit_events", head + pack_rows([list(range(16))]))

    assert_fails_everywhere(path, "unit_events", DecodeError, len(head), 1,
                            r"row too long: .* found an array header claiming 16 elements")


def test_wrong_type_in_field(tmp_path):
    rows = good_rows(6)
    rows[4][6] = "thirty"
    path = write(tmp_path, "unit_positions", pack_rows(rows))

    assert_fails_everywhere(
        path, "unit_positions", DecodeError, len(pack_rows(rows[:4])), 4,
        r"row 4, field z: wrong type: expected an int64 integer, found string")


def test_row_is_map(tmp_path):
    head = pack_rows(good_rows(3))
    path = write(tmp_path, "unit_positions",
                 head + pack_rows([{"frame": 3, "unit_id": 1}]) + pack_rows(good_rows(2, 5)))

    assert_fails_everywhere(path, "unit_positions", DecodeError, len(head), 3,
                            r"row is not an array: expected an array, found map")


def test_row_is_large_map_header(tmp_path):
    head = pack_rows(good_rows(3))
    path = write(tmp_path, "unit_positions", head + b"\xdf\x00\x01\x00\x00" + b"\x00" * 20)

    assert_fails_everywhere(path, "unit_positions", DecodeError, len(head), 3,
                            r"row is not an array: expected an array, "
                            r"found a map header claiming 65536 entries")


TOO_LARGE = r"row too large: expected a row of at most 104 bytes, found no row end within 104"
HUGE_HEADERS = {
    "array32": (b"\xdd\xff\xff\xff\xff",
                r"row too long: .* found an array header claiming 4294967295 elements"),
    "map32": (b"\xdf\xff\xff\xff\xff",
              r"row is not an array: .* found a map header claiming 4294967295 entries"),
    "str32": (b"\xdb\xff\xff\xff\xff", TOO_LARGE),
    "bin32": (b"\xc6\xff\xff\xff\xff", TOO_LARGE),
    "ext32": (b"\xc9\xff\xff\xff\xff\x01", r"invalid MessagePack: .*exceeds max_ext_len"),
    "array32 in a row": (b"\x9b\x01\xdd\xff\xff\xff\xff",
                         r"invalid MessagePack: .*exceeds max_array_len"),
    "str32 in a row": (b"\x9b\x01\xdb\xff\xff\xff\xff", TOO_LARGE),
}


@pytest.mark.parametrize("name", sorted(HUGE_HEADERS))
def test_huge_header_fails(tmp_path, name):
    header, pattern = HUGE_HEADERS[name]
    head = pack_rows(good_rows(3))
    path = write(tmp_path, "unit_positions",
                 head + header + b"\x01" * 300 + pack_rows(good_rows(3, 10)))

    assert_fails_everywhere(path, "unit_positions", DecodeError, len(head), 3, pattern)


@pytest.mark.parametrize("name", sorted(HUGE_HEADERS))
def test_huge_header_fails_fast(tmp_path, name):
    header, pattern = HUGE_HEADERS[name]
    blocksize = 1 << 20
    head = pack_rows(good_rows(3))
    # A decode that waited for the claimed payload would read all 16 MiB of valid
    # rows after the header.
    tail = pack_rows(good_rows(10)) * (16 * 1024 * 1024 // 120)
    path = write(tmp_path, "unit_positions", head + header + tail)

    tracemalloc.start()
    started = time.perf_counter()
    try:
        decoded = decode_range(str(path), aspect_name="unit_positions", offset=0,
                               stop=blocksize, file_size=path.stat().st_size)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert re.search(pattern, decoded.problems[0].describe())
    assert decoded.problems[0].offset == len(head)
    assert elapsed < 2
    # The window is the range plus INITIAL_OVERRUN, so about 1 MiB.
    assert peak < 8 * 1024 * 1024


def test_null_in_non_null_field(tmp_path):
    rows = good_rows(5)
    rows[2][3] = None
    path = write(tmp_path, "unit_positions", pack_rows(rows))

    assert_fails_everywhere(
        path, "unit_positions", DecodeError, len(pack_rows(rows[:2])), 2,
        r"row 2, field team_id: missing value: expected a value, found null")


def test_integer_above_int64(tmp_path):
    rows = good_rows(5)
    rows[3][10] = 2**63
    path = write(tmp_path, "unit_positions", pack_rows(rows))

    assert_fails_everywhere(
        path, "unit_positions", DecodeError, len(pack_rows(rows[:3])), 3,
        r"row 3, field heading: integer out of range: expected an int64 integer, "
        r"found 9223372036854775808")


def test_invalid_utf8(tmp_path):
    head = pack_rows([[1, "player_01", "armcom", 1, 2, 3, 4]])
    # player_id 2, then a 3-byte str with a lone continuation byte.
    bad = b"\x97\x02\xa3a\x80b\xa6corcom\x01\x02\x03\x04"
    path = write(tmp_path, "start_pos", head + bad + head)

    assert_fails_everywhere(
        path, "start_pos", DecodeError, len(head), 1,
        r"row 1, field player_name: invalid UTF-8: expected a UTF-8 string, "
        r"found bytes b'a\\x80b'")


def test_frames_decrease_inside_range(tmp_path):
    rows = good_rows(6, first_frame=100)
    rows[4][0] = 50
    path = write(tmp_path, "unit_positions", pack_rows(rows))

    error = assert_fails_everywhere(
        path, "unit_positions", FrameOrderError, len(pack_rows(rows[:4])), 4,
        r"row 4, field frame: frame decreases: expected a frame of at least 103, found 50",
        blocksizes=[1 << 20])

    assert len(error.problems) == 1


def test_frames_decrease_across_ranges(tmp_path):
    rows = good_rows(6, first_frame=100)
    rows[4][0] = 50
    data = pack_rows(rows)
    path = write(tmp_path, "unit_positions", data)
    row_size = len(pack_rows(rows[:1]))
    # All rows have the same size, so a blocksize of one row puts rows 3 and 4 in
    # different ranges, and one of half a row puts row 4 at a range start.
    assert len(data) == 6 * row_size

    assert_fails_everywhere(
        path, "unit_positions", FrameOrderError, 4 * row_size, 4,
        r"row 4, field frame: frame decreases: expected a frame of at least 103, found 50",
        blocksizes=[row_size, row_size // 2, 2 * row_size, 1, 5])


def test_frames_decrease_after_bad_row(tmp_path):
    # With blocksize len(head), the second range starts with a map, so its first
    # good row is row 5, which the frame decrease across ranges must name.
    head = pack_rows(good_rows(4, first_frame=100))
    map_row = pack_rows([{"a": 1}])
    tail = pack_rows([unit_positions_row(50)] + good_rows(8, first_frame=200))
    path = write(tmp_path, "unit_positions", head + map_row + tail)

    # Skipping bad rows never skips a frame decrease.
    assert_fails_everywhere(
        path, "unit_positions", FrameOrderError, len(head) + len(map_row), 5,
        r"row 5, field frame: frame decreases: expected a frame of at least 103, found 50",
        blocksizes=[len(head), 1, 7, 1 << 20], skip_on_error=True)
    # Without skipping, the map is the first problem in file order.
    assert_fails_everywhere(path, "unit_positions", DecodeError, len(head), 4,
                            r"row 4: row is not an array",
                            blocksizes=[len(head), 1, 7, 1 << 20])


def test_first_problem_decides_error_type(tmp_path):
    rows = good_rows(8, first_frame=100)
    rows[2][1] = None
    rows[6][0] = 3
    path = write(tmp_path, "unit_positions", pack_rows(rows))
    row_size = len(pack_rows(rows[:1]))

    error = assert_fails_everywhere(path, "unit_positions", DecodeError, 2 * row_size, 2,
                                    r"row 2, field unit_id: missing value")

    # The single range of the last blocksize reports the later decrease as well.
    assert [problem.reason for problem in error.problems] == ["missing value",
                                                              "frame decreases"]
    assert error.problems[1].row == 6


def test_many_problems_reported_together(tmp_path):
    rows = good_rows(20)
    for index in range(3, 17):
        rows[index][4] = index + 0.5
    path = write(tmp_path, "unit_positions", pack_rows(rows))

    with pytest.raises(DecodeError) as info:
        decode_file(path, "unit_positions")

    error = info.value
    lines = str(error).splitlines()
    assert error.total == 14
    assert len(error.problems) == 14
    assert [problem.row for problem in error.problems] == list(range(3, 17))
    assert len(lines) == DecodeError.shown + 1
    assert re.search(r"row 3, field x: wrong type: .* found float 3\.5$", lines[0])
    assert lines[1].startswith("  also byte offset")
    assert "row 4, field x" in lines[1]
    assert lines[-1] == "  and 4 more problems of this file"


def test_problems_capped_per_range(tmp_path):
    rows = good_rows(MAX_PROBLEMS_PER_RANGE + 500)
    for row in rows:
        row[5] = 0.25
    path = write(tmp_path, "unit_positions", pack_rows(rows))

    with pytest.raises(DecodeError) as info:
        decode_file(path, "unit_positions")

    error = info.value
    assert error.total == MAX_PROBLEMS_PER_RANGE + 500
    assert len(error.problems) == MAX_PROBLEMS_PER_RANGE
    assert [problem.row for problem in error.problems] == list(range(MAX_PROBLEMS_PER_RANGE))
    assert str(error).endswith(f"and {MAX_PROBLEMS_PER_RANGE + 500 - DecodeError.shown} "
                               "more problems of this file")


def test_several_fields_of_one_row(tmp_path):
    rows = good_rows(2)
    rows[1][2] = True
    rows[1][9] = "north"
    path = write(tmp_path, "unit_positions", pack_rows(rows))

    with pytest.raises(DecodeError) as info:
        decode_file(path, "unit_positions")

    fields = [problem.field for problem in info.value.problems]
    assert fields == ["unit_def_id", "vz"]
    assert {problem.row for problem in info.value.problems} == {1}


def test_decode_error_pickles(tmp_path):
    rows = good_rows(3)
    rows[1][1] = None
    path = write(tmp_path, "unit_positions", pack_rows(rows))
    with pytest.raises(DecodeError) as info:
        decode_file(path, "unit_positions")

    copy = pickle.loads(pickle.dumps(info.value))

    assert type(copy) is DecodeError
    assert str(copy) == str(info.value)
    assert copy.problems == info.value.problems


# Every kind of MessagePack value in every kind of field gives a project error.

ODD_VALUES = {
    "nil": None, "true": True, "int": 7, "negative": -7, "big uint": 2**64 - 1,
    "float": 1.5, "nan": float("nan"), "inf": float("inf"), "string": "x",
    "binary": b"\x00\x01", "array": [1, 2], "nested array": [[[]]], "map": {"k": 1},
    "ext": msgpack.ExtType(5, b"abc"), "timestamp": msgpack.Timestamp(1, 2),
}
# Values that a field of each kind accepts.
ACCEPTED = {
    "int": {"int", "negative"}, "bool": {"true"}, "str": {"string"},
}
FIELD_KINDS = {"int": ("unit_positions", 3), "bool": ("damage_log", 10),
               "str": ("start_pos", 1), "enum": ("unit_events", 10),
               "divisor": ("unit_positions", 8), "nullable": ("unit_events", 2)}


def _valid_row(aspect_name: str) -> list:
    row = []
    for fld in ASPECTS[aspect_name].fields:
        if fld.raw_type is RawType.BOOL:
            row.append(False)
        elif fld.raw_type is RawType.STR:
            row.append("name")
        else:
            row.append(1)
    return row


@pytest.mark.parametrize("kind", sorted(FIELD_KINDS))
@pytest.mark.parametrize("value_name", sorted(ODD_VALUES))
def test_any_value_any_field(tmp_path, kind, value_name):
    aspect_name, position = FIELD_KINDS[kind]
    row = _valid_row(aspect_name)
    row[position] = ODD_VALUES[value_name]
    data = pack_rows([_valid_row(aspect_name), row])
    path = write(tmp_path, aspect_name, data)
    accepted = ACCEPTED.get(kind, ACCEPTED["int"])
    if kind == "nullable":
        accepted = accepted | {"nil"}

    try:
        frame, _ = decode_file(path, aspect_name, blocksize=3)
    except DecodeError as error:
        assert value_name not in accepted, str(error)
        assert error.first.row == 1
        assert error.first.field == ASPECTS[aspect_name].fields[position].raw_name
    else:
        assert value_name in accepted
        assert len(frame) == 2


def test_unhashable_map_key(tmp_path):
    # Python cannot hash a map key that is an array.
    head = pack_rows(good_rows(2))
    path = write(tmp_path, "unit_positions", head + b"\x81\x92\x01\x02\x03")

    error = assert_fails_everywhere(
        path, "unit_positions", DecodeError, len(head), 2,
        r"row is not an array: expected an array, found a map header claiming 1 entry$")
    assert isinstance(error, MppDaskError)
