"""map_control_timeline and force_composition_timeline on hand-written files.

Every case is read through the real byte-range reader at several blocksizes, and
the results must be identical.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from helpers import read_frames, write_aspect
from mpp_dask.schema import ENUMS
from mpp_dask.stats import force_composition_timeline, map_control_timeline

BLOCKSIZES = [1 << 26, 1024, 64, 7]


def compute_at_blocksizes(folder, build) -> pd.DataFrame:
    """Compute a stat at every blocksize, check that the results agree, return one."""
    results = []
    for blocksize in BLOCKSIZES:
        frames = read_frames(folder, blocksize=blocksize)
        results.append(build(frames, {}).compute(scheduler="sync"))
    for blocksize, result in zip(BLOCKSIZES[1:], results[1:]):
        assert_frame_equal(result, results[0], check_dtype=True,
                           obj=f"result at blocksize {blocksize}")
    return results[0]


def position_row(frame: int, unit_id: int, team_id: int, x: int, z: int) -> list:
    """Return a raw unit_positions row at height 50 with zero velocity."""
    return [frame, unit_id, 300, team_id, x, 50, z, 0, 0, 0, 0]


def event_row(frame: int, unit_id: int, unit_def_id: int | None, unit_team_id: int | None,
              event_type: str | int) -> list:
    """Return an 11-element raw unit_events row. A str ``event_type`` is a UnitEvent name."""
    code = event_type if isinstance(event_type, int) else ENUMS["UnitEvent"].index(event_type) + 1
    return [frame, unit_id, unit_def_id, unit_team_id, 10, 20, 30, None, None, None, code]


POSITION_ROWS = [
    position_row(0, 1, 0, 0, 0),
    position_row(30, 5, 1, 10, 7),
    position_row(60, 5, 1, 11, 7),
    position_row(100, 9, 2, 1_000_000_000, 0),
    position_row(200, 9, 2, 1_000_000_002, 0),
    position_row(300, 10, 2, 1_000_000_004, 0),
    position_row(900, 1, 0, 2, 10),
    # Frame 1799 is the last frame of minute 0 and frame 1800 the first of minute 1.
    position_row(1799, 2, 0, 4, 20),
    position_row(1800, 1, 0, 100, 50),
    position_row(5400, 6, 1, -3, 1000),
    position_row(5401, 7, 1, 5, 1001),
    position_row(5402, 6, 1, 1, 999),
]


def test_map_control_per_minute(tmp_path):
    write_aspect(tmp_path, "unit_positions", POSITION_ROWS)

    result = compute_at_blocksizes(tmp_path, map_control_timeline.build)

    # Team 0, minute 1 and team 1, minute 0 have one sample and one unit, so their
    # dispersion is null. Team 2's coordinates near 1e9 have squares near 1e18,
    # past float64's exact integers, and still give exactly 2.0.
    expected = pd.DataFrame({
        "player_id": [0, 0, 1, 1, 2],
        "minute": [0, 1, 0, 3, 0],
        "bounding_box_area": [80.0, 0.0, 0.0, 16.0, 0.0],
        "dispersion_x": [2.0, math.nan, math.sqrt(0.5), 4.0, 2.0],
        "dispersion_z": [10.0, math.nan, 0.0, 1.0, 0.0],
        "samples": [3, 1, 2, 3, 3],
        "units": [2, 1, 1, 2, 2],
    })
    assert_frame_equal(result, expected, check_dtype=True)


def test_map_control_single_sample_null(tmp_path):
    write_aspect(tmp_path, "unit_positions", [position_row(10, 1, 4, 700, 800)])

    result = compute_at_blocksizes(tmp_path, map_control_timeline.build)

    assert result["samples"].tolist() == [1]
    assert result["units"].tolist() == [1]
    assert result["bounding_box_area"].tolist() == [0.0]
    assert math.isnan(result["dispersion_x"].iat[0])
    assert math.isnan(result["dispersion_z"].iat[0])


def test_map_control_unit_across_partitions(tmp_path):
    # One unit sampled 40 times in one minute spans many partitions at 64 and 7
    # bytes, and is still one unit.
    rows = [position_row(frame, 3, 0, frame % 7, 2 * frame) for frame in range(0, 1600, 40)]
    write_aspect(tmp_path, "unit_positions", rows)

    result = compute_at_blocksizes(tmp_path, map_control_timeline.build)

    assert result["units"].tolist() == [1]
    assert result["samples"].tolist() == [40]
    assert result["bounding_box_area"].tolist() == [6.0 * 3120.0]


def test_map_control_coordinates_too_large(tmp_path):
    # Two samples at 3e9 have squares summing past int64, so the moments are
    # rejected instead of wrapping around.
    write_aspect(tmp_path, "unit_positions", [
        position_row(10, 1, 0, 3_000_000_000, 0),
        position_row(20, 1, 0, 3_000_000_000, 0),
    ])

    with pytest.raises(ValueError, match="too large for exact int64 moments"):
        map_control_timeline.build(read_frames(tmp_path), {}).compute(scheduler="sync")


EVENT_ROWS = [
    event_row(10, 1, 100, 0, "CREATED"),
    event_row(20, 2, 100, 0, "CREATED"),
    event_row(30, 3, 101, 0, "CREATED"),
    # Excluded: not CREATED, a null unit_def_id, a null unit_team_id, and an unknown
    # event code, which the reader turns into a null event_type.
    event_row(40, 1, 100, 0, "FINISHED"),
    event_row(50, 4, None, 0, "CREATED"),
    event_row(60, 5, 100, None, "CREATED"),
    event_row(70, 6, 100, 0, 99),
    event_row(1799, 7, 100, 1, "CREATED"),
    event_row(1800, 8, 100, 1, "CREATED"),
    event_row(1800, 9, 100, 0, "DESTROYED"),
    # A full 15-element row, as real exports write some events.
    [2000, 10, 102, 0, 10, 20, 30, None, None, None, 1, None, None, 55, 2],
]


def test_force_composition_counts(tmp_path):
    write_aspect(tmp_path, "unit_events", EVENT_ROWS)

    result = compute_at_blocksizes(tmp_path, force_composition_timeline.build)

    expected = pd.DataFrame({
        "player_id": [0, 0, 0, 1, 1],
        "minute": [0, 0, 1, 0, 1],
        "unit_def_id": [100, 101, 102, 100, 100],
        "units_produced": [2, 1, 1, 1, 1],
    })
    assert_frame_equal(result, expected, check_dtype=True)


@pytest.mark.parametrize(("aspect", "module", "dtypes"), [
    ("unit_positions", map_control_timeline, {
        "player_id": "int64", "minute": "int64", "bounding_box_area": "float64",
        "dispersion_x": "float64", "dispersion_z": "float64", "samples": "int64",
        "units": "int64"}),
    ("unit_events", force_composition_timeline, {
        "player_id": "int64", "minute": "int64", "unit_def_id": "int64",
        "units_produced": "int64"}),
])
def test_timeline_empty_file(tmp_path, aspect, module, dtypes):
    write_aspect(tmp_path, aspect, [])

    result = compute_at_blocksizes(tmp_path, module.build)

    expected = pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in dtypes.items()})
    assert_frame_equal(result, expected, check_dtype=True, check_index_type=False)
