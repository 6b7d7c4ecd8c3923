"""The stats built on each team's final team_stats row, on hand-written team_stats files.

Every case is read through the real byte-range reader at several blocksizes
(whole file, 1 KiB, 64 bytes, 7 bytes), and the results must be identical.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from helpers import read_frames, write_aspect
from mpp_dask.schema import ASPECTS
from mpp_dask.stats import (
    player_collaboration, player_economic_efficiency, resources_by_player,
)
from mpp_dask.stats._common import final_team_rows

BLOCKSIZES = [1 << 26, 1024, 64, 7]

TEAM_STATS_COLUMNS = ASPECTS["team_stats"].columns


def team_stats_row(frame: int, team_id: int, **raw_counters: float) -> list:
    """Return a raw team_stats row: the given counters (raw tenths), every other field 0."""
    row = [0] * len(TEAM_STATS_COLUMNS)
    row[0] = frame
    row[1] = team_id
    for name, value in raw_counters.items():
        row[TEAM_STATS_COLUMNS.index(name)] = value
    return row


# Team 0 has two rows at its largest frame (600): the later one in the file wins.
# Team 1 has a single row. Team 2 spent nothing. Team 3 has whole-number float
# counters, as exporters write them above 2**24. Team 16 is Gaia, all zeros.
TEAM_STATS_ROWS = [
    team_stats_row(0, 0, metal_used=100, metal_produced=200, energy_used=300,
                   energy_produced=400, metal_sent=5, metal_received=7, energy_sent=11,
                   energy_received=13, damage_dealt=17, damage_received=19),
    team_stats_row(0, 16),
    team_stats_row(300, 0, metal_used=1000, metal_produced=2000, energy_used=3000,
                   energy_produced=4000, metal_sent=50, metal_received=70, energy_sent=110,
                   energy_received=130, damage_dealt=170, damage_received=190),
    team_stats_row(300, 1, metal_used=123, metal_produced=456, energy_used=789,
                   energy_produced=1011, metal_sent=123, metal_received=45, energy_sent=0,
                   energy_received=10, damage_dealt=912, damage_received=3),
    team_stats_row(600, 0, metal_used=5000, metal_produced=5100, energy_used=5200,
                   energy_produced=5300, metal_sent=54, metal_received=55, energy_sent=56,
                   energy_received=57, damage_dealt=58, damage_received=59),
    team_stats_row(600, 2, metal_produced=3, damage_dealt=50, damage_received=4),
    team_stats_row(600, 0, metal_used=6000, metal_produced=7000, energy_used=8000,
                   energy_produced=9000, metal_sent=250, metal_received=1000, energy_sent=33,
                   energy_received=11, damage_dealt=7000, damage_received=4332392),
    team_stats_row(600, 3, metal_used=2, metal_produced=10, energy_used=12345678.0,
                   energy_produced=33554432.0, energy_sent=30000000.0, energy_received=5,
                   damage_dealt=12345680.0, damage_received=0),
    team_stats_row(600, 16),
]


def compute_at_blocksizes(folder, build, params=None) -> pd.DataFrame:
    """Compute a stat at every blocksize, check that the results agree, return one."""
    results = []
    for blocksize in BLOCKSIZES:
        frames = read_frames(folder, blocksize=blocksize)
        results.append(build(frames, params or {}).compute(scheduler="sync"))
    for blocksize, result in zip(BLOCKSIZES[1:], results[1:]):
        assert_frame_equal(result, results[0], check_dtype=True,
                           obj=f"result at blocksize {blocksize}")
    return results[0]


@pytest.fixture
def replay(tmp_path):
    write_aspect(tmp_path, "team_stats", TEAM_STATS_ROWS)
    return tmp_path


def test_final_rows_pick_later_tie(replay):
    def build(frames, params):
        return final_team_rows(frames["team_stats"], ["metal_used", "damage_received"])

    result = compute_at_blocksizes(replay, build)

    expected = pd.DataFrame({
        "team_id": [0, 1, 2, 3, 16],
        "frame": [600, 300, 600, 600, 600],
        "metal_used": [600.0, 12.3, 0.0, 0.2, 0.0],
        "damage_received": [433239.2, 0.3, 0.4, 0.0, 0.0],
    })
    assert_frame_equal(result, expected, check_dtype=True)


def test_final_rows_tie_split_across_partitions(replay):
    # At 64 bytes the two frame-600 rows of team 0 land in different partitions,
    # so the tie is decided across partitions, not inside one.
    frames = read_frames(replay, blocksize=64)
    parts = [frames["team_stats"].get_partition(i).compute(scheduler="sync")
             for i in range(frames["team_stats"].npartitions)]
    holding = [i for i, part in enumerate(parts)
               if ((part["team_id"] == 0) & (part["frame"] == 600)).any()]
    assert len(holding) == 2


def test_resources_by_player(replay):
    result = compute_at_blocksizes(replay, resources_by_player.build)

    expected = pd.DataFrame({
        "player_id": [0, 1, 2, 3, 16],
        "total_metal_produced": [700.0, 45.6, 0.3, 1.0, 0.0],
        "total_metal_used": [600.0, 12.3, 0.0, 0.2, 0.0],
        "total_energy_produced": [900.0, 101.1, 0.0, 3355443.2, 0.0],
        "total_energy_used": [800.0, 78.9, 0.0, 1234567.8, 0.0],
    })
    assert_frame_equal(result, expected, check_dtype=True)


def test_player_collaboration(replay):
    result = compute_at_blocksizes(replay, player_collaboration.build)

    # The nets are exact decimal differences: 12.3 - 4.5 is 7.8 and 3.3 - 1.1 is
    # 2.2, where float subtraction would give 7.800000000000001 and 2.1999999999999997.
    expected = pd.DataFrame({
        "player_id": [0, 1, 2, 3, 16],
        "total_metal_sent": [25.0, 12.3, 0.0, 0.0, 0.0],
        "total_metal_received": [100.0, 4.5, 0.0, 0.0, 0.0],
        "total_energy_sent": [3.3, 0.0, 0.0, 3000000.0, 0.0],
        "total_energy_received": [1.1, 1.0, 0.0, 0.5, 0.0],
        "net_metal_contribution": [-75.0, 7.8, 0.0, 0.0, 0.0],
        "net_energy_contribution": [2.2, -1.0, 0.0, 2999999.5, 0.0],
    })
    assert_frame_equal(result, expected, check_dtype=True)


def test_player_economic_efficiency(replay):
    result = compute_at_blocksizes(replay, player_economic_efficiency.build)

    # Team 2 dealt damage without spending anything and Gaia did nothing: both
    # ratios are null (NaN), because metal_used + energy_used is 0.
    expected = pd.DataFrame({
        "player_id": [0, 1, 2, 3, 16],
        "total_metal_spent": [600.0, 12.3, 0.0, 0.2, 0.0],
        "total_energy_spent": [800.0, 78.9, 0.0, 1234567.8, 0.0],
        "total_damage_output": [700.0, 91.2, 5.0, 1234568.0, 0.0],
        "damage_per_resource_unit": [0.5, 1.0, math.nan, 1.0, math.nan],
    })
    assert_frame_equal(result, expected, check_dtype=True)


def empty_table(dtypes: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in dtypes.items()})


@pytest.mark.parametrize(("module", "dtypes"), [
    (resources_by_player, {
        "player_id": "int64", "total_metal_produced": "float64", "total_metal_used": "float64",
        "total_energy_produced": "float64", "total_energy_used": "float64"}),
    (player_collaboration, {
        "player_id": "int64", "total_metal_sent": "float64", "total_metal_received": "float64",
        "total_energy_sent": "float64", "total_energy_received": "float64",
        "net_metal_contribution": "float64", "net_energy_contribution": "float64"}),
    (player_economic_efficiency, {
        "player_id": "int64", "total_metal_spent": "float64", "total_energy_spent": "float64",
        "total_damage_output": "float64", "damage_per_resource_unit": "float64"}),
])
def test_empty_team_stats_file(tmp_path, module, dtypes):
    write_aspect(tmp_path, "team_stats", [])

    result = compute_at_blocksizes(tmp_path, module.build)

    assert_frame_equal(result, empty_table(dtypes), check_dtype=True, check_index_type=False)
