"""calculate_player_apm_and_focus on hand-written commands_log files, at several blocksizes."""

from __future__ import annotations

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from helpers import read_frames, write_aspect
from mpp_dask import settings
from mpp_dask.errors import ConfigError
from mpp_dask.schema import ENUMS
from mpp_dask.stats import calculate_player_apm_and_focus as apm

BLOCKSIZES = [1 << 26, 1024, 64, 7]

PARAMS = {
    "combat_commands": ["ATTACK", "FIGHT", "MANUAL_FIRE"],
    "economy_commands": ["BUILD", "RECLAIM", "REPAIR"],
}


def command_row(frame: int, team_id: int, unit_id: int, cmd_id: int,
                cmd_name: str | None) -> list:
    """Return a raw commands_log row. A ``cmd_name`` of None writes a null name."""
    code = None if cmd_name is None else ENUMS["Command"].index(cmd_name) + 1
    return [frame, team_id, unit_id, cmd_id, code, 1, None, 10, 20, 30]


COMMAND_ROWS = [
    # Team 0, minute 0: one ATTACK order to 12 units is one action.
    *[command_row(100, 0, unit_id, 20, "ATTACK") for unit_id in range(1, 13)],
    command_row(100, 0, 13, 10, "MOVE"),
    command_row(150, 1, 20, 16, "FIGHT"),
    command_row(200, 0, 7, -50, "BUILD"),
    command_row(200, 0, 8, 20, "ATTACK"),
    command_row(1799, 0, 9, 90, "RECLAIM"),
    # Frame 1800 starts minute 1. Team 1's rows sit between the rows of team 0's
    # null-named action, which is still one action.
    command_row(1800, 0, 9, 90, "RECLAIM"),
    command_row(1800, 0, 1, 5, None),
    command_row(1800, 1, 21, 40, "REPAIR"),
    command_row(1800, 1, 22, 40, "REPAIR"),
    command_row(1800, 1, 23, 40, "REPAIR"),
    command_row(1800, 0, 2, 5, None),
    command_row(1800, 0, 3, 105, "MANUAL_FIRE"),
    # Team 1, minute 2: an action with only a null name counts in the total only,
    # and an action with one null and one ATTACK row is a combat action.
    command_row(3650, 1, 24, 10, "MOVE"),
    command_row(3700, 1, 25, 7, None),
    command_row(3700, 1, 26, 20, None),
    command_row(3700, 1, 27, 20, "ATTACK"),
]

THIRD = 100 / 3


def compute_at_blocksizes(folder, params) -> pd.DataFrame:
    """Compute the stat at every blocksize, check that the results agree, return one."""
    results = []
    for blocksize in BLOCKSIZES:
        frames = read_frames(folder, blocksize=blocksize)
        results.append(apm.build(frames, params).compute(scheduler="sync"))
    for blocksize, result in zip(BLOCKSIZES[1:], results[1:]):
        assert_frame_equal(result, results[0], check_dtype=True,
                           obj=f"result at blocksize {blocksize}")
    return results[0]


@pytest.fixture
def replay(tmp_path):
    write_aspect(tmp_path, "commands_log", COMMAND_ROWS)
    return tmp_path


def test_apm_per_minute(replay):
    result = compute_at_blocksizes(replay, PARAMS)

    expected = pd.DataFrame({
        "player_id": [0, 0, 1, 1, 1],
        "minute": [0, 1, 0, 1, 2],
        "actions_per_minute": [5, 3, 1, 1, 3],
        "unit_commands": [16, 4, 1, 3, 4],
        "combat_focus_pct": [40.0, THIRD, 100.0, 0.0, THIRD],
        "economy_focus_pct": [40.0, THIRD, 0.0, 100.0, 0.0],
    })
    assert_frame_equal(result, expected, check_dtype=True)


def test_apm_action_split_across_partitions(replay):
    # At 64 bytes the 12 rows of the frame-100 ATTACK order span several
    # partitions, and test_apm_per_minute still counts them as one action.
    frames = read_frames(replay, blocksize=64)
    commands = frames["commands_log"]
    holding = []
    for index in range(commands.npartitions):
        part = commands.get_partition(index).compute(scheduler="sync")
        if ((part["frame"] == 100) & (part["cmd_id"] == 20)).any():
            holding.append(index)
    assert len(holding) >= 2


def test_apm_command_lists_from_params(replay):
    params = {"combat_commands": ["MOVE"], "economy_commands": []}

    result = compute_at_blocksizes(replay, params)

    assert result["combat_focus_pct"].tolist() == [20.0, 0.0, 0.0, 0.0, THIRD]
    assert result["economy_focus_pct"].tolist() == [0.0, 0.0, 0.0, 0.0, 0.0]
    assert result["actions_per_minute"].tolist() == [5, 3, 1, 1, 3]


def test_apm_unknown_command_name(replay):
    params = {"combat_commands": ["ATTACK", "NUKE"], "economy_commands": ["BUILD"]}

    with pytest.raises(ConfigError, match=r"combat_commands names unknown commands \['NUKE'\]"):
        apm.build(read_frames(replay), params)


def test_apm_command_list_missing(replay):
    with pytest.raises(ConfigError, match="economy_commands must be a list"):
        apm.build(read_frames(replay), {"combat_commands": ["ATTACK"]})


def test_apm_default_params_match_settings():
    stat = apm.STATS[0]

    assert stat.params == PARAMS
    assert settings.stat_params("calculate_player_apm_and_focus") == PARAMS


def test_apm_empty_file(tmp_path):
    write_aspect(tmp_path, "commands_log", [])

    result = compute_at_blocksizes(tmp_path, PARAMS)

    expected = pd.DataFrame({
        "player_id": pd.Series([], dtype="int64"),
        "minute": pd.Series([], dtype="int64"),
        "actions_per_minute": pd.Series([], dtype="int64"),
        "unit_commands": pd.Series([], dtype="int64"),
        "combat_focus_pct": pd.Series([], dtype="float64"),
        "economy_focus_pct": pd.Series([], dtype="float64"),
    })
    assert_frame_equal(result, expected, check_dtype=True, check_index_type=False)
