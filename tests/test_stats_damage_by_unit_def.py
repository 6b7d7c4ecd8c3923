"""damage_by_unit_def on hand-written damage_log files, at several blocksizes."""

from __future__ import annotations

import pandas as pd
from pandas.testing import assert_frame_equal

from helpers import read_frames, write_aspect
from mpp_dask.stats import damage_by_unit_def

BLOCKSIZES = [1 << 26, 1024, 64, 7]


def damage_row(frame: int, attacker_def_id: int | None, damage: int,
               attacker_unit_id: int | None = 500) -> list:
    """Return a raw damage_log row, with ``damage`` in raw tenths."""
    return [frame, 1, 0, 900, 77, attacker_unit_id, attacker_def_id, 3, 4000 + frame, damage,
            False, 100, 20, 300]


def compute_at_blocksizes(folder) -> pd.DataFrame:
    """Compute damage_by_unit_def at every blocksize, check that they agree, return one."""
    results = []
    for blocksize in BLOCKSIZES:
        frames = read_frames(folder, blocksize=blocksize)
        results.append(damage_by_unit_def.build(frames, {}).compute(scheduler="sync"))
    for blocksize, result in zip(BLOCKSIZES[1:], results[1:]):
        assert_frame_equal(result, results[0], check_dtype=True,
                           obj=f"result at blocksize {blocksize}")
    return results[0]


def test_damage_sums_exact_tenths(tmp_path):
    write_aspect(tmp_path, "damage_log", [
        damage_row(10, 7, 1),
        damage_row(10, 7, 2),
        damage_row(20, None, 1000, attacker_unit_id=None),
        damage_row(30, 9, 5, attacker_unit_id=None),
        damage_row(40, 11, 30000),
        damage_row(50, 7, 4),
        damage_row(60, 12, 5),
    ])

    result = compute_at_blocksizes(tmp_path)

    # Unit def 7 dealt 0.1 + 0.2 + 0.4: exactly 0.7, where adding the floats in file
    # order gives 0.7000000000000001. The row without attacker_def_id is left out.
    # Unit defs 9 and 12 tie at 0.5 and are ordered by unit_def_id.
    expected = pd.DataFrame({
        "unit_def_id": [11, 7, 9, 12],
        "total_damage_dealt": [3000.0, 0.7, 0.5, 0.5],
        "hits": [1, 3, 1, 1],
    })
    assert_frame_equal(result, expected, check_dtype=True)


def test_damage_only_null_attackers(tmp_path):
    write_aspect(tmp_path, "damage_log", [
        damage_row(10, None, 100, attacker_unit_id=None),
        damage_row(20, None, 200, attacker_unit_id=None),
    ])

    result = compute_at_blocksizes(tmp_path)

    expected = pd.DataFrame({
        "unit_def_id": pd.Series([], dtype="int64"),
        "total_damage_dealt": pd.Series([], dtype="float64"),
        "hits": pd.Series([], dtype="int64"),
    })
    assert_frame_equal(result, expected, check_dtype=True, check_index_type=False)


def test_damage_empty_file(tmp_path):
    write_aspect(tmp_path, "damage_log", [])

    result = compute_at_blocksizes(tmp_path)

    assert list(result.columns) == ["unit_def_id", "total_damage_dealt", "hits"]
    assert len(result) == 0
