"""The seven per-player, per-unit-def and timeline stats on the real example replay.

Expected values are recomputed here from the raw MessagePack rows with plain
Python, without the reader, so that they check the stats independently.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import dask
import msgpack
import numpy as np
import pytest
from pandas.testing import assert_frame_equal

from helpers import read_frames
from mpp_dask.schema import ASPECTS, FRAMES_PER_MINUTE
from mpp_dask.stats import build_registry
from mpp_dask.stats._common import final_team_rows

pytestmark = [pytest.mark.example, pytest.mark.slow]

STAT_NAMES = [
    "damage_by_unit_def",
    "resources_by_player",
    "player_collaboration",
    "player_economic_efficiency",
    "calculate_player_apm_and_focus",
    "map_control_timeline",
    "force_composition_timeline",
]


def compute_stats(folder, blocksize: int) -> dict:
    """Compute the seven stats in one dask.compute call, with their default params."""
    registry = build_registry()
    frames = read_frames(folder, blocksize=blocksize)
    graphs = [registry[name].build(frames, registry[name].params) for name in STAT_NAMES]
    results = dask.compute(*graphs, scheduler="threads")
    return dict(zip(STAT_NAMES, results))


def raw_rows(folder, aspect_name: str) -> list[list]:
    with open(folder / f"{aspect_name}.mpk", "rb") as stream:
        return list(msgpack.Unpacker(stream, raw=False))


def column_index(aspect_name: str, column: str) -> int:
    return ASPECTS[aspect_name].columns.index(column)


@pytest.fixture(scope="module")
def whole_file(example_replay):
    return compute_stats(example_replay, blocksize=1 << 26)


@pytest.fixture(scope="module")
def final_raw_rows(example_replay):
    """Return each team's final raw team_stats row (largest frame, later row on ties)."""
    final = {}
    for row in raw_rows(example_replay, "team_stats"):
        team_id = row[1]
        if team_id not in final or row[0] >= final[team_id][0]:
            final[team_id] = row
    return final


def test_example_small_blocksize_equal(example_replay, whole_file):
    small = compute_stats(example_replay, blocksize=4096)

    for name in STAT_NAMES:
        assert_frame_equal(small[name], whole_file[name], check_dtype=True,
                           obj=f"{name} at blocksize 4096")


def test_example_resources_by_player(whole_file, final_raw_rows):
    result = whole_file["resources_by_player"]

    assert len(result) == 17
    assert result["player_id"].tolist() == sorted(final_raw_rows)
    for column, counter in [("total_metal_produced", "metal_produced"),
                            ("total_metal_used", "metal_used"),
                            ("total_energy_produced", "energy_produced"),
                            ("total_energy_used", "energy_used")]:
        position = column_index("team_stats", counter)
        expected = [final_raw_rows[team][position] / 10 for team in sorted(final_raw_rows)]
        assert result[column].tolist() == expected, column


def test_example_final_damage_received(example_replay, final_raw_rows):
    # The mostDamageTaken award in game_meta.json (433239.219) is team 10's final
    # damage_received, which team_stats stores in tenths (raw 4332392).
    meta = json.loads((example_replay / "game_meta.json").read_text())
    award = meta["awards"]["mostDamageTaken"]
    frames = read_frames(example_replay)
    final = final_team_rows(frames["team_stats"], ["damage_received"]).compute(scheduler="sync")
    received = dict(zip(final["team_id"], final["damage_received"]))
    raw = final_raw_rows[10][column_index("team_stats", "damage_received")]

    assert award["teamId"] == 10
    assert round(award["value"], 1) == 433239.2
    assert raw == 4332392
    assert received[10] == 433239.2


def test_example_economic_efficiency(whole_file, final_raw_rows):
    result = whole_file["player_economic_efficiency"].set_index("player_id")
    final = final_raw_rows[10]
    damage = final[column_index("team_stats", "damage_dealt")]
    spent = (final[column_index("team_stats", "metal_used")]
             + final[column_index("team_stats", "energy_used")])

    assert len(result) == 17
    assert result.loc[10, "total_damage_output"] == damage / 10
    assert result.loc[10, "damage_per_resource_unit"] == damage / spent


def test_example_damage_by_unit_def(example_replay, whole_file):
    result = whole_file["damage_by_unit_def"]
    attacker_def = column_index("damage_log", "attacker_def_id")
    damage = column_index("damage_log", "damage")
    raw_damage = Counter()
    hits = Counter()
    for row in raw_rows(example_replay, "damage_log"):
        if len(row) > attacker_def and row[attacker_def] is not None:
            raw_damage[row[attacker_def]] += int(row[damage])
            hits[row[attacker_def]] += 1

    totals = dict(zip(result["unit_def_id"], np.rint(result["total_damage_dealt"] * 10)))
    assert len(result) == len(hits)
    assert totals == {def_id: float(total) for def_id, total in raw_damage.items()}
    assert dict(zip(result["unit_def_id"], result["hits"])) == dict(hits)
    assert result["total_damage_dealt"].is_monotonic_decreasing


def test_example_apm(example_replay, whole_file):
    result = whole_file["calculate_player_apm_and_focus"]
    rows = raw_rows(example_replay, "commands_log")
    actions = defaultdict(set)
    unit_commands = Counter()
    for row in rows:
        frame, team_id, cmd_id = row[0], row[1], row[3]
        actions[(team_id, frame // FRAMES_PER_MINUTE)].add((frame, cmd_id))
        unit_commands[(team_id, frame // FRAMES_PER_MINUTE)] += 1

    keys = list(zip(result["player_id"], result["minute"]))
    assert sorted(keys) == sorted(actions)
    assert dict(zip(keys, result["actions_per_minute"])) == {
        key: len(values) for key, values in actions.items()}
    assert dict(zip(keys, result["unit_commands"])) == dict(unit_commands)
    assert result["unit_commands"].sum() == len(rows)


def test_example_map_control(example_replay, whole_file):
    result = whole_file["map_control_timeline"]
    rows = raw_rows(example_replay, "unit_positions")
    units = defaultdict(set)
    for row in rows:
        units[(row[3], row[0] // FRAMES_PER_MINUTE)].add(row[1])

    keys = list(zip(result["player_id"], result["minute"]))
    assert result["samples"].sum() == len(rows)
    assert dict(zip(keys, result["units"])) == {key: len(ids) for key, ids in units.items()}


def test_example_force_composition(example_replay, whole_file):
    result = whole_file["force_composition_timeline"]
    created_code = 1
    created = Counter()
    for row in raw_rows(example_replay, "unit_events"):
        if row[10] == created_code and row[2] is not None and row[3] is not None:
            created[(row[3], row[0] // FRAMES_PER_MINUTE, row[2])] += 1

    keys = zip(result["player_id"], result["minute"], result["unit_def_id"])
    assert dict(zip(keys, result["units_produced"])) == dict(created)
