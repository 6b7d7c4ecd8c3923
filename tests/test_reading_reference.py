"""A serial reference decoder for aspect files, and checks of it against hand-built frames.

The reader under test cuts files into byte ranges and guesses where rows start.
The reference here does neither: it unpacks the whole file from offset 0 with one
``msgpack.Unpacker`` and applies the transform rules of the schema value by value,
so the tests of the reader can compare against it row for row.
"""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from helpers import clean_frame, decode_file, pack_rows, write_aspect
from mpp_dask.reading.decode import decode_range
from mpp_dask.reading.partitions import FileTally, confirm_range
from mpp_dask.reading.ranges import plan_ranges
from mpp_dask.schema import ASPECTS, ENUMS, RawType


def _clean_value(value, fld):
    """Return the clean value of one raw value; the value must be valid for its field."""
    if value is None:
        return None
    if fld.raw_type is RawType.INT:
        integer = int(value)
        if fld.enum is not None:
            names = ENUMS[fld.enum]
            return names[integer - 1] if 1 <= integer <= len(names) else None
        if fld.divisor is not None:
            # Python divides two ints with one rounding, so this is the float64
            # nearest to the exact quotient.
            return integer / fld.divisor
        return integer
    return value


def reference_decode(data: bytes, aspect_name: str) -> pd.DataFrame:
    """Decode the bytes of a valid aspect file serially into its clean table."""
    aspect = ASPECTS[aspect_name]
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)

    columns: dict[str, list] = {fld.name: [] for fld in aspect.fields}
    for row in unpacker:
        assert isinstance(row, list), f"reference input has a non-array row: {row!r}"
        assert len(row) <= len(aspect.fields), f"reference input has a long row: {row!r}"
        padded = row + [None] * (len(aspect.fields) - len(row))
        for value, fld in zip(padded, aspect.fields):
            columns[fld.name].append(_clean_value(value, fld))

    series = {}
    for fld in aspect.fields:
        values = columns[fld.name]
        if fld.divisor is not None:
            values = [math.nan if v is None else v for v in values]
        series[fld.name] = pd.Series(values, dtype=fld.dtype)
    return pd.DataFrame(series)


def decode_in_order(path, aspect_name: str, blocksize: int, skip_on_error: bool = False):
    """Run the decode and confirm task of every range in file order, without Dask.

    These are the functions and arguments of the graph that ``read_aspect`` builds.
    Building the graph costs milliseconds per range, which adds up in tests that try
    every blocksize. Returns (pandas frame, tally) like ``helpers.decode_file``.
    """
    file_size = path.stat().st_size
    common = dict(urlpath=str(path), aspect_name=aspect_name, file_size=file_size,
                  skip_on_error=skip_on_error, storage_options=None)
    tally = FileTally(str(path))
    partitions = []
    for offset, stop in plan_ranges(file_size, blocksize):
        decoded = decode_range(offset=offset, stop=stop, **common)
        partition, tally = confirm_range(decoded, tally, offset=offset, stop=stop, **common)
        partitions.append(partition)
    return pd.concat(partitions, ignore_index=True), tally


def test_reference_matches_hand_built_frame():
    rows = [
        [10, 1, None, 4, 5.0, 6, -7, None, None, None, 3],
        [11, 2, 100, 5, 1, 2, 3, 9, 8, 7, 99, 1, 2, 3, 4],
    ]
    expected = clean_frame("unit_events", [
        dict(frame=10, unit_id=1, unit_def_id=None, unit_team_id=4, x=5, y=6, z=-7,
             attacker_unit_id=None, attacker_unit_def_id=None, attacker_team_id=None,
             event_type="DESTROYED", old_team_id=None, new_team_id=None, builder_id=None,
             factory_queue_len=None),
        dict(frame=11, unit_id=2, unit_def_id=100, unit_team_id=5, x=1, y=2, z=3,
             attacker_unit_id=9, attacker_unit_def_id=8, attacker_team_id=7,
             event_type=None, old_team_id=1, new_team_id=2, builder_id=3,
             factory_queue_len=4),
    ])

    result = reference_decode(pack_rows(rows), "unit_events")

    pdt.assert_frame_equal(result, expected, check_exact=True)


def test_reference_divides_exactly():
    big = 2**53 + 1
    rows = [[1, 2, 3, 4, 5, 6, 7, 8, 9, big, True, 0, 0, 0]]

    result = reference_decode(pack_rows(rows), "damage_log")

    assert result["damage"].iat[0] == big / 10
    assert result["damage"].dtype == np.float64


def test_reference_agrees_with_reader(tmp_path):
    rows = [[1, 2, 3], [2, -5, 2**40], [2, 0, 0]]
    path = write_aspect(tmp_path, "map_envir_econ", rows)

    frame, _ = decode_file(path, "map_envir_econ")

    pdt.assert_frame_equal(frame, reference_decode(path.read_bytes(), "map_envir_econ"),
                           check_exact=True)


@pytest.mark.parametrize("aspect_name", sorted(ASPECTS))
def test_reference_empty_file_dtypes(aspect_name):
    result = reference_decode(b"", aspect_name)

    assert dict(result.dtypes) == ASPECTS[aspect_name].dtypes


@pytest.mark.parametrize("blocksize", [1, 5, 17, 1000])
def test_ordered_decode_matches_graph(tmp_path, blocksize):
    rows = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, True, 0, 0, 0],
            [2, 2, None, 4, 5, None, None, 8, 9, 2**40, False, -1, -2, -3]]
    path = write_aspect(tmp_path, "damage_log", rows)

    frame, tally = decode_in_order(path, "damage_log", blocksize)
    graph_frame, graph_tally = decode_file(path, "damage_log", blocksize=blocksize)

    pdt.assert_frame_equal(frame, graph_frame, check_exact=True)
    assert tally == graph_tally
