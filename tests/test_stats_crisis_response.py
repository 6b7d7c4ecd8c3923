"""Tests of crisis_response_index."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pandas as pd
import pytest
from helpers import read_frames, write_aspect

from mpp_dask.errors import ConfigError
from mpp_dask.schema import ENUMS
from mpp_dask.settings import DEFAULTS, NAMESPACE
from mpp_dask.stats.crisis_response_index import CRISIS_DTYPES, STATS

STAT = STATS[0]

# Whole file, then partitions of a few rows, about one row, and at most one row.
BLOCKSIZES = [1 << 26, 1024, 64, 7]

COMMAND = {name: code for code, name in enumerate(ENUMS["Command"], start=1)}
UNIT_EVENT = {name: code for code, name in enumerate(ENUMS["UnitEvent"], start=1)}


def hit(frame: int, victim_unit: int, victim_team: int, attacker_unit: int | None = 50
        ) -> list:
    """Return a raw damage_log row."""
    attacker_team = None if attacker_unit is None else 9
    attacker_def = None if attacker_unit is None else 200
    return [frame, victim_team, attacker_team, victim_unit, 100, attacker_unit, attacker_def,
            300, 0, 10, False, 0, 0, 0]


def command(frame: int, team: int, name: str | None, unit: int = 77) -> list:
    """Return a raw commands_log row; ``name`` None writes a null cmd_name."""
    code = None if name is None else COMMAND[name]
    return [frame, team, unit, code or 0, code, 0, None, 0, 0, 0]


def unit_event(frame: int, unit: int, event: str) -> list:
    """Return a raw unit_events row with the 11 fields real files always have."""
    return [frame, unit, 100, 1, 0, 0, 0, None, None, None, UNIT_EVENT[event]]


DAMAGE_ROWS = [
    hit(100, 10, 1),  # first hit of unit 10: crisis
    hit(100, 10, 1),  # same victim, same frame: no second crisis
    hit(100, 11, 2),  # first hit of unit 11: crisis in the same frame
    hit(300, 10, 1, attacker_unit=None),  # no attacker, but still a hit on unit 10
    hit(750, 10, 1),  # exactly 450 after the hit at 300: no crisis
    hit(1201, 10, 1),  # 451 after the hit at 750: crisis
    hit(1201, 12, 1),  # first hit of unit 12
    hit(2000, 13, 2),  # three crises in frame 2000, written out of victim order
    hit(2000, 11, 2),
    hit(2000, 15, 2),
    hit(2000, 13, 2),
    hit(3000, 14, 1),
]

COMMAND_ROWS = [
    command(50, 1, "MOVE"),  # before every crisis of team 1
    command(100, 1, "ATTACK"),  # same frame as the crisis of unit 10, from another unit
    command(120, 2, "BUILD"),  # not a response command
    command(130, 2, "STOP"),  # not a response command
    command(160, 2, "GUARD", unit=5),
    command(1250, 1, "REPAIR"),
    command(1250, 1, "REPAIR", unit=78),
    command(2100, 2, "FIGHT"),
    command(2500, 2, "RECLAIM"),
    command(3500, 2, "MOVE"),  # another team than the crisis at 3000
    command(3600, 1, None),  # no command name
]

EVENT_ROWS = [
    unit_event(10, 99, "DESTROYED"),
    unit_event(50, 12, "CREATED"),
    unit_event(1300, 12, "DESTROYED"),  # first DESTROYED of unit 12
    unit_event(2101, 10, "DESTROYED"),  # crisis start 1201 + 900: not survived
    unit_event(2901, 11, "DESTROYED"),  # crisis start 2000 + 901: survived
    unit_event(3000, 14, "DESTROYED"),  # the crisis start frame itself
    unit_event(5000, 12, "DESTROYED"),  # a later DESTROYED of unit 12 does not count
]


def crisis_table(rows: list[tuple]) -> pd.DataFrame:
    """Return an expected table from literal rows in output column order."""
    columns = {name: [row[index] for row in rows] for index, name in enumerate(CRISIS_DTYPES)}
    return pd.DataFrame({name: pd.Series(values, dtype=CRISIS_DTYPES[name])
                         for name, values in columns.items()})


def run_stat(folder: Path, blocksize: int, params: dict | None = None) -> pd.DataFrame:
    frames = read_frames(folder, blocksize=blocksize)
    result = STAT.build(frames, {**STAT.params, **(params or {})})
    return result.compute(scheduler="sync").sort_values("crisis_id").reset_index(drop=True)


@pytest.fixture
def crafted_replay(tmp_path: Path) -> Path:
    write_aspect(tmp_path, "damage_log", DAMAGE_ROWS)
    write_aspect(tmp_path, "commands_log", COMMAND_ROWS)
    write_aspect(tmp_path, "unit_events", EVENT_ROWS)
    return tmp_path


@pytest.mark.parametrize("blocksize", BLOCKSIZES)
def test_crafted(crafted_replay: Path, blocksize: int):
    result = run_stat(crafted_replay, blocksize)

    expected = crisis_table([
        # crisis_id, player_id, victim_unit_id, crisis_start_frame,
        # time_to_response_frames, asset_survived
        (0, 1, 10, 100, 0, True),
        (1, 2, 11, 100, 60, True),
        (2, 1, 10, 1201, 49, False),
        (3, 1, 12, 1201, 49, False),
        (4, 2, 11, 2000, 100, True),
        (5, 2, 13, 2000, 100, True),
        (6, 2, 15, 2000, 100, True),
        (7, 1, 14, 3000, -1, False),
    ])
    pd.testing.assert_frame_equal(result, expected, check_dtype=True)


def test_empty_damage_log(tmp_path: Path):
    write_aspect(tmp_path, "damage_log", [])
    write_aspect(tmp_path, "commands_log", COMMAND_ROWS)
    write_aspect(tmp_path, "unit_events", EVENT_ROWS)
    result = run_stat(tmp_path, 64)

    assert len(result) == 0
    assert result.dtypes.to_dict() == CRISIS_DTYPES


@pytest.mark.parametrize("blocksize", [1 << 26, 7])
def test_no_commands_no_events(tmp_path: Path, blocksize: int):
    write_aspect(tmp_path, "damage_log", DAMAGE_ROWS[:3])
    write_aspect(tmp_path, "commands_log", [])
    write_aspect(tmp_path, "unit_events", [])
    result = run_stat(tmp_path, blocksize)

    expected = crisis_table([(0, 1, 10, 100, -1, True), (1, 2, 11, 100, -1, True)])
    pd.testing.assert_frame_equal(result, expected, check_dtype=True)


@pytest.mark.parametrize("blocksize", [1 << 26, 64, 7])
def test_other_params(crafted_replay: Path, blocksize: int):
    params = {"lull_frames": 1000, "survival_window_frames": 0,
              "response_commands": ["FIGHT"]}
    result = run_stat(crafted_replay, blocksize, params)

    # Unit 10: 1201 - 750 is within 1000, so only its first hit opens a crisis.
    # Unit 11: 2000 - 100 = 1900 is over 1000. Unit 14 is destroyed at its start frame.
    expected = crisis_table([
        (0, 1, 10, 100, -1, True),
        (1, 2, 11, 100, 2000, True),
        (2, 1, 12, 1201, -1, True),
        (3, 2, 11, 2000, 100, True),
        (4, 2, 13, 2000, 100, True),
        (5, 2, 15, 2000, 100, True),
        (6, 1, 14, 3000, -1, False),
    ])
    pd.testing.assert_frame_equal(result, expected, check_dtype=True)


def test_params_match_packaged_settings():
    assert DEFAULTS[NAMESPACE]["stats"][STAT.name] == STAT.params


@pytest.mark.parametrize("params, message", [
    ({"lull_frames": -1}, "lull_frames must be a non-negative integer"),
    ({"survival_window_frames": "900"}, "survival_window_frames must be a non-negative"),
    ({"response_commands": "MOVE"}, "response_commands must be a list"),
    ({"response_commands": ["MOVE", "DANCE"]}, r"unknown command names \['DANCE'\]"),
])
def test_invalid_params(crafted_replay: Path, params: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        STAT.build(read_frames(crafted_replay), {**STAT.params, **params})


# --- The real example replay ---------------------------------------------------------

def write_example_excerpt(replay: Path, folder: Path, aspect: str, step: int) -> int:
    """Copy every ``step``-th row of a real aspect file, in file order; return how many.

    Thinning spreads the hits more than 450 frames apart, so the excerpt has several
    crises. A few dozen rows read at a 7-byte blocksize in seconds.
    """
    with open(replay / f"{aspect}.mpk", "rb") as stream:
        rows = list(msgpack.Unpacker(stream, raw=False))[::step]
    write_aspect(folder, aspect, rows)
    return len(rows)


def reference_crises(damage: pd.DataFrame, commands: pd.DataFrame, events: pd.DataFrame
                     ) -> pd.DataFrame:
    """Follow the definition row by row, with plain Python and pandas."""
    last_hit: dict[int, int] = {}
    rows = []
    for hit_row in damage.itertuples():
        previous = last_hit.get(hit_row.victim_unit_id)
        if previous is None or hit_row.frame - previous > 450:
            rows.append((hit_row.frame, hit_row.victim_unit_id, hit_row.victim_team_id))
        last_hit[hit_row.victim_unit_id] = hit_row.frame
    crises = pd.DataFrame(rows, columns=["crisis_start_frame", "victim_unit_id", "player_id"])
    crises = crises.sort_values(["crisis_start_frame", "victim_unit_id"]).reset_index(drop=True)

    names = ["ATTACK", "FIGHT", "REPAIR", "RECLAIM", "GUARD", "MOVE"]
    responses = commands[commands["cmd_name"].isin(names)]
    response_frames = {team: np.sort(group["frame"].to_numpy())
                       for team, group in responses.groupby("team_id")}
    destroyed = events[events["event_type"] == "DESTROYED"].groupby("unit_id")["frame"].min()

    waits, survived = [], []
    for crisis in crises.itertuples():
        frames = response_frames.get(crisis.player_id, np.array([], dtype=np.int64))
        later = frames[frames >= crisis.crisis_start_frame]
        waits.append(int(later[0]) - crisis.crisis_start_frame if len(later) else -1)
        destroyed_at = destroyed.get(crisis.victim_unit_id)
        survived.append(destroyed_at is None
                        or destroyed_at > crisis.crisis_start_frame + 900)
    crises["time_to_response_frames"] = waits
    crises["asset_survived"] = survived
    crises.insert(0, "crisis_id", np.arange(len(crises)))
    return crises[list(CRISIS_DTYPES)].astype(CRISIS_DTYPES)


@pytest.fixture(scope="module")
def example_result(example_replay: Path):
    """Return a function that computes the stat on the real example once per blocksize."""
    cache: dict[int, pd.DataFrame] = {}

    def compute(blocksize: int) -> pd.DataFrame:
        if blocksize not in cache:
            cache[blocksize] = run_stat(example_replay, blocksize)
        return cache[blocksize].copy()

    return compute


@pytest.mark.example
def test_example_matches_reference(example_replay: Path, example_result):
    frames = read_frames(example_replay)
    damage = frames["damage_log"].compute(scheduler="sync")
    commands = frames["commands_log"].compute(scheduler="sync")
    events = frames["unit_events"].compute(scheduler="sync")
    reference = reference_crises(damage, commands, events)

    result = example_result(1 << 16)
    assert len(result) > 0
    pd.testing.assert_frame_equal(result, reference, check_dtype=True)


@pytest.mark.example
def test_example_same_for_any_blocksize(example_result):
    whole = example_result(1 << 26)
    for blocksize in (1 << 18, 1 << 16):
        pd.testing.assert_frame_equal(example_result(blocksize), whole,
                                      check_dtype=True)


@pytest.mark.example
def test_example_excerpt_same_for_all_blocksizes(example_replay: Path, tmp_path: Path):
    steps = {"damage_log": 3000, "commands_log": 3000, "unit_events": 1000}
    for aspect, step in steps.items():
        assert write_example_excerpt(example_replay, tmp_path, aspect, step) > 20
    whole = run_stat(tmp_path, BLOCKSIZES[0])
    assert len(whole) > 1
    for blocksize in BLOCKSIZES[1:]:
        pd.testing.assert_frame_equal(run_stat(tmp_path, blocksize), whole, check_dtype=True)
