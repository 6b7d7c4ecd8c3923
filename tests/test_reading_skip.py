"""``skip_on_error=True`` drops exactly the bad rows, counts them per reason and goes on.

Each test builds a file piece by piece and notes which rows are valid. It checks
that the kept rows are exactly the valid ones at many blocksizes. The drops must
be counted per reason, and the problems located by offset and row.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import msgpack
import pandas.testing as pdt
import pytest

from helpers import decode_file, pack_rows
from mpp_dask.errors import FrameOrderError
from mpp_dask.reading.partitions import MAX_KEPT_PROBLEMS
from mpp_dask.schema import ASPECTS
from test_reading_reference import decode_in_order, reference_decode


def unit_positions_row(frame: int, unit_id: int = 1) -> list:
    return [frame, unit_id, 100, 2, 10, 20, 30, 500, -500, 0, 1024]


@dataclass
class FileBuilder:
    """Bytes of an aspect file and what a skipping decode must make of them."""

    aspect_name: str
    data: bytes = b""
    valid_rows: list = field(default_factory=list)
    objects: int = 0
    problems: list[tuple[int, int, str]] = field(default_factory=list)

    def rows(self, rows: list) -> FileBuilder:
        self.data += pack_rows(rows)
        self.valid_rows += rows
        self.objects += len(rows)
        return self

    def bad_row(self, raw: bytes, reason: str, counts_as_row: bool = True) -> FileBuilder:
        """Append bytes that make one problem with ``reason`` at their offset."""
        self.problems.append((len(self.data), self.objects, reason))
        self.data += raw
        self.objects += counts_as_row
        return self

    def expected_frame(self):
        return reference_decode(pack_rows(self.valid_rows), self.aspect_name)

    def write(self, tmp_path):
        path = tmp_path / f"{self.aspect_name}.mpk"
        path.write_bytes(self.data)
        return path


def assert_skips_exactly(tmp_path, builder: FileBuilder, blocksizes, decode=decode_in_order):
    path = builder.write(tmp_path)
    expected = builder.expected_frame()
    reasons = Counter(reason for _, _, reason in builder.problems)

    for blocksize in blocksizes:
        frame, tally = decode(path, builder.aspect_name, blocksize=blocksize,
                              skip_on_error=True)

        pdt.assert_frame_equal(frame, expected, check_exact=True, obj=f"blocksize {blocksize}")
        assert tally.rows_kept == len(expected)
        assert tally.dropped == reasons, f"blocksize {blocksize}"
        found = [(problem.offset, problem.row, problem.reason) for problem in tally.problems]
        assert found == builder.problems, f"blocksize {blocksize}"
        assert tally.problem_count == len(builder.problems)
        assert tally.rows_before == builder.objects


def many_blocksizes(builder: FileBuilder) -> list[int]:
    """Return every blocksize up to 48 bytes, then every 11th up to the file size."""
    size = len(builder.data)
    return [*range(1, 49), *range(49, size, 11), size, size + 1]


def test_garbage_between_rows(tmp_path):
    builder = (FileBuilder("unit_positions")
               .rows([unit_positions_row(frame) for frame in range(12)])
               .bad_row(b"\xc1\xc1\xc1", "invalid MessagePack", counts_as_row=False)
               .rows([unit_positions_row(frame) for frame in range(20, 32)]))

    assert_skips_exactly(tmp_path, builder, many_blocksizes(builder))
    assert_skips_exactly(tmp_path, builder, [1, 13, 1 << 20], decode=decode_file)


def test_garbage_then_few_rows(tmp_path):
    # Fewer rows than a candidate needs lie between two stretches of garbage.
    builder = (FileBuilder("unit_positions")
               .rows([unit_positions_row(frame) for frame in range(3)])
               .bad_row(b"\xc1", "invalid MessagePack", counts_as_row=False)
               .rows([unit_positions_row(frame) for frame in range(5, 8)])
               .bad_row(b"\xc1\xc1", "invalid MessagePack", counts_as_row=False)
               .rows([unit_positions_row(frame) for frame in range(9, 11)]))

    assert_skips_exactly(tmp_path, builder, many_blocksizes(builder))


def test_zeros_resynchronise(tmp_path):
    # Zero bytes decode as integers. The first is a problem, and the rest are skipped.
    builder = (FileBuilder("unit_positions")
               .rows([unit_positions_row(frame) for frame in range(5)])
               .bad_row(b"\x00" * 100, "row is not an array")
               .rows([unit_positions_row(frame) for frame in range(5, 15)]))

    assert_skips_exactly(tmp_path, builder, many_blocksizes(builder))


def test_binary_value_with_rows_inside(tmp_path):
    # A binary value where a row should start is skipped as a whole. Ranges that
    # start inside it are proposed the rows packed in its payload, which must not
    # be kept.
    inner = pack_rows([unit_positions_row(frame) for frame in range(50, 70)])
    binary = msgpack.packb(b"xx" + inner + b"yy", use_bin_type=True)
    builder = (FileBuilder("unit_positions")
               .rows([unit_positions_row(frame) for frame in range(10)])
               .bad_row(binary, "row is not an array")
               .rows([unit_positions_row(frame) for frame in range(80, 90)]))

    assert_skips_exactly(tmp_path, builder, many_blocksizes(builder))


def test_every_kind_of_bad_row(tmp_path):
    def with_value(frame, position, value):
        row = unit_positions_row(frame)
        row[position] = value
        return pack_rows([row])

    builder = (FileBuilder("unit_positions")
               .rows([unit_positions_row(frame) for frame in range(4)])
               .bad_row(with_value(4, 3, "two"), "wrong type")
               .rows([unit_positions_row(5)])
               .bad_row(with_value(5, 6, None), "missing value")
               .rows([unit_positions_row(6), unit_positions_row(6)])
               .bad_row(with_value(6, 4, 2.5), "wrong type")
               .bad_row(with_value(6, 10, 2**63), "integer out of range")
               .bad_row(with_value(7, 2, True), "wrong type")
               .bad_row(pack_rows([{"frame": 7}]), "row is not an array")
               .rows([unit_positions_row(8)])
               .bad_row(pack_rows([unit_positions_row(8)[:9]]), "row too short")
               .rows([unit_positions_row(9)])
               .bad_row(pack_rows([unit_positions_row(9) + [1]]), "row too long",
                        counts_as_row=False)
               .rows([unit_positions_row(frame) for frame in range(10, 20)])
               .bad_row(pack_rows([unit_positions_row(21)])[:7], "truncated row",
                        counts_as_row=False))

    assert_skips_exactly(tmp_path, builder, many_blocksizes(builder))
    assert_skips_exactly(tmp_path, builder, [3, 1 << 20], decode=decode_file)


def test_invalid_utf8_dropped(tmp_path):
    good = [[1, "player_01", "armcom", 1, 2, 3, 4], [2, "ünï", "corcom", 5, 6, 7, 8]]
    builder = (FileBuilder("start_pos")
               .rows(good)
               .bad_row(b"\x97\x03\xa2\xc3\x28\xa1x\x01\x02\x03\x04", "invalid UTF-8")
               .rows(good)
               .bad_row(pack_rows([[4, b"bytes", "x", 1, 2, 3, 4]]), "wrong type")
               .rows(good))

    assert_skips_exactly(tmp_path, builder, many_blocksizes(builder))


def test_dtypes_kept_after_drop(tmp_path):
    # A null in a non-null int or bool column must not turn the column nullable.
    rows = [[frame, 1, 2, 3, 4, 5000, True, False, True, 0, 300, False] for frame in range(6)]
    bad_int = list(rows[0])
    bad_int[3] = None
    bad_bool = list(rows[0])
    bad_bool[7] = None
    builder = (FileBuilder("unit_state_snapshots")
               .rows(rows[:3])
               .bad_row(pack_rows([bad_int]), "missing value")
               .bad_row(pack_rows([bad_bool]), "missing value")
               .rows(rows[3:]))
    path = builder.write(tmp_path)

    frame, _ = decode_file(path, "unit_state_snapshots", skip_on_error=True)

    assert dict(frame.dtypes) == ASPECTS["unit_state_snapshots"].dtypes
    assert len(frame) == 6


def test_unknown_enum_in_dropped_row(tmp_path):
    # Row 1 has an unknown code but is dropped for its null x, so nothing counts.
    rows = [[frame, 1, 2, 3, 0, 0, 0, None, None, None, 1] for frame in range(3)]
    rows[1][10] = 99
    rows[1][4] = None
    path = tmp_path / "unit_events.mpk"
    path.write_bytes(pack_rows(rows))

    frame, tally = decode_file(path, "unit_events", skip_on_error=True)

    assert len(frame) == 2
    assert tally.unknown_enum_codes == 0
    assert tally.dropped == Counter({"missing value": 1})


def test_problems_capped(tmp_path):
    rows = []
    for frame in range(MAX_KEPT_PROBLEMS + 300):
        row = unit_positions_row(frame)
        row[4] = 0.5 if frame % 2 else 1
        rows.append(row)
    path = tmp_path / "unit_positions.mpk"
    path.write_bytes(pack_rows(rows))
    bad_count = (MAX_KEPT_PROBLEMS + 300) // 2

    for blocksize in [1000, 1 << 20]:
        frame, tally = decode_file(path, "unit_positions", blocksize=blocksize,
                                   skip_on_error=True)

        assert len(frame) == len(rows) - bad_count
        assert tally.dropped == Counter({"wrong type": bad_count})
        assert tally.problem_count == bad_count
        assert len(tally.problems) == min(bad_count, MAX_KEPT_PROBLEMS)
        assert [problem.row for problem in tally.problems[:3]] == [1, 3, 5]


def test_frame_decrease_not_skipped(tmp_path):
    rows = [unit_positions_row(frame) for frame in (5, 6, 7, 1, 8)]
    path = tmp_path / "unit_positions.mpk"
    path.write_bytes(pack_rows(rows))
    offset = len(pack_rows(rows[:3]))

    for blocksize in [1, 12, 1 << 20]:
        with pytest.raises(FrameOrderError,
                           match=rf"byte offset {offset}, row 3, field frame: frame decreases"):
            decode_file(path, "unit_positions", blocksize=blocksize, skip_on_error=True)


def test_clean_file_unchanged(tmp_path):
    rows = [unit_positions_row(frame) for frame in range(10)]
    path = tmp_path / "unit_positions.mpk"
    path.write_bytes(msgpack.Packer().pack(rows[0]) + pack_rows(rows[1:]))

    frame, tally = decode_file(path, "unit_positions", blocksize=7, skip_on_error=True)

    pdt.assert_frame_equal(frame, reference_decode(path.read_bytes(), "unit_positions"))
    assert tally.dropped == Counter()
    assert tally.problems == []
