"""Tests of combat_engagement_summary and its _global and _per_unit variants."""

from __future__ import annotations

from pathlib import Path

import dask.dataframe as dd
import msgpack
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import read_frames, write_aspect

from mpp_dask.errors import ConfigError
from mpp_dask.settings import DEFAULTS, NAMESPACE
from mpp_dask.stats.combat_engagement_summary import (
    ENGAGEMENT_DTYPES,
    PER_UNIT_DTYPES,
    PLAYERS_DTYPE,
    STATS,
)

STAT = {stat.name: stat for stat in STATS}
MAIN = "combat_engagement_summary"
GLOBAL = "combat_engagement_summary_global"
PER_UNIT = "combat_engagement_summary_per_unit"

# Whole file, then partitions of about 30 rows, 2 rows, and at most one row (most
# partitions empty).
BLOCKSIZES = [1 << 26, 1024, 64, 7]


def hit(frame: int, x: int, z: int, *, attacker_unit: int | None, attacker_team: int | None,
        damage: int, victim_unit: int = 10, victim_team: int = 1) -> list:
    """Return a raw damage_log row; ``damage`` is the raw integer (clean value / 10)."""
    attacker_def = None if attacker_unit is None else 200
    return [frame, victim_team, attacker_team, victim_unit, 100, attacker_unit, attacker_def,
            300, 0, damage, False, x, 50, z]


# File order is frame order. The comment on a row names the case it covers in the main
# variant.
SESSION_ROWS = [
    hit(100, 1000, 1000, attacker_unit=20, attacker_team=2, damage=15),
    hit(100, 1000, 1000, attacker_unit=21, attacker_team=3, damage=25),  # same frame
    # No attacker: the main variant skips this row, which would open an engagement by
    # distance.
    hit(150, 5000, 5000, attacker_unit=None, attacker_team=None, damage=100),
    hit(400, 1000, 1000, attacker_unit=20, attacker_team=2, damage=5),  # gap exactly 300
    hit(410, 1300, 1400, attacker_unit=21, attacker_team=3, damage=5),  # distance exactly 500
    hit(711, 1300, 1400, attacker_unit=22, attacker_team=4, damage=10),  # gap 301: opens
    # Distance sqrt(300**2 + 401**2), just over 500: opens. No attacker team is known.
    hit(720, 1600, 1801, attacker_unit=23, attacker_team=None, damage=7),
    hit(730, 1600, 1801, attacker_unit=23, attacker_team=None, damage=3),
    # No attacker: bridges the gap from 730 to 1250 in the global variant only.
    hit(1000, 200, 300, attacker_unit=None, attacker_team=None, damage=40, victim_unit=12,
        victim_team=2),
    hit(1250, 200, 300, attacker_unit=21, attacker_team=3, damage=12, victim_unit=12,
        victim_team=2),
    hit(1250, 210, 300, attacker_unit=24, attacker_team=1, damage=8, victim_unit=12,
        victim_team=2),
]

PER_UNIT_ROWS = [
    hit(100, 0, 0, attacker_unit=30, attacker_team=1, damage=10),
    hit(100, 0, 0, attacker_unit=31, attacker_team=2, damage=20),
    hit(200, 0, 0, attacker_unit=None, attacker_team=None, damage=99),  # dropped
    hit(550, 0, 0, attacker_unit=30, attacker_team=1, damage=30),  # unit 30: gap exactly 450
    hit(560, 10, 0, attacker_unit=31, attacker_team=2, damage=40),  # unit 31: gap 460, opens
    hit(1001, 20, 0, attacker_unit=30, attacker_team=1, damage=50),  # unit 30: gap 451, opens
    hit(1001, 30, 40, attacker_unit=32, attacker_team=None, damage=60),  # one hit, no team
    hit(1001, 40, 0, attacker_unit=30, attacker_team=1, damage=5),  # unit 30: same frame
]


def engagement_table(rows: list[tuple], per_unit: bool = False) -> pd.DataFrame:
    """Return an expected table from literal rows in output column order."""
    dtypes = PER_UNIT_DTYPES if per_unit else ENGAGEMENT_DTYPES
    columns = {name: [row[index] for row in rows] for index, name in enumerate(dtypes)}
    table = pd.DataFrame({name: pd.Series(values, dtype=dtypes[name])
                          for name, values in columns.items()})
    return table


def run_stat(folder: Path, name: str, blocksize: int, params: dict | None = None
             ) -> pd.DataFrame:
    stat = STAT[name]
    frames = read_frames(folder, blocksize=blocksize)
    result = stat.build(frames, {**stat.params, **(params or {})})
    return result.compute(scheduler="sync")


def sorted_per_unit(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values(["attacker_unit_id", "engagement_id"]).reset_index(drop=True)


@pytest.fixture
def session_replay(tmp_path: Path) -> Path:
    write_aspect(tmp_path, "damage_log", SESSION_ROWS)
    return tmp_path


@pytest.fixture
def per_unit_replay(tmp_path: Path) -> Path:
    write_aspect(tmp_path, "damage_log", PER_UNIT_ROWS)
    return tmp_path


@pytest.mark.parametrize("blocksize", BLOCKSIZES)
def test_main_crafted(session_replay: Path, blocksize: int):
    result = run_stat(session_replay, MAIN, blocksize)

    expected = engagement_table([
        (0, 100, 410, 310 / 30, 4300 / 4, 4400 / 4, [2, 3], 5.0, 4),
        (1, 711, 711, 0.0, 1300.0, 1400.0, [4], 1.0, 1),
        (2, 720, 730, 10 / 30, 1600.0, 1801.0, [], 1.0, 2),
        (3, 1250, 1250, 0.0, 205.0, 300.0, [1, 3], 2.0, 2),
    ])
    pd.testing.assert_frame_equal(result.reset_index(drop=True), expected, check_dtype=True)


@pytest.mark.parametrize("blocksize", BLOCKSIZES)
def test_global_crafted(session_replay: Path, blocksize: int):
    result = run_stat(session_replay, GLOBAL, blocksize)

    expected = engagement_table([
        (0, 100, 410, 310 / 30, 9300 / 5, 9400 / 5, [2, 3], 15.0, 5),
        (1, 711, 1250, 539 / 30, 5110 / 6, 5902 / 6, [1, 3, 4], 8.0, 6),
    ])
    pd.testing.assert_frame_equal(result.reset_index(drop=True), expected, check_dtype=True)


@pytest.mark.parametrize("blocksize", BLOCKSIZES)
def test_per_unit_crafted(per_unit_replay: Path, blocksize: int):
    result = run_stat(per_unit_replay, PER_UNIT, blocksize)

    expected = engagement_table([
        (30, 0, 100, 550, 15.0, 0.0, 0.0, [1], 4.0, 2),
        (30, 1, 1001, 1001, 0.0, 30.0, 0.0, [1], 5.5, 2),
        (31, 0, 100, 100, 0.0, 0.0, 0.0, [2], 2.0, 1),
        (31, 1, 560, 560, 0.0, 10.0, 0.0, [2], 4.0, 1),
        (32, 0, 1001, 1001, 0.0, 30.0, 40.0, [], 6.0, 1),
    ], per_unit=True)
    pd.testing.assert_frame_equal(sorted_per_unit(result), expected, check_dtype=True)


@pytest.mark.parametrize("blocksize", [1 << 26, 7])
def test_per_unit_distance_rule(per_unit_replay: Path, blocksize: int):
    # Unit 30 hits at x = 20 and then x = 40 in frame 1001: 20 apart, over 15.
    result = run_stat(per_unit_replay, PER_UNIT, blocksize, {"max_distance": 15})

    unit_30 = sorted_per_unit(result).query("attacker_unit_id == 30")
    assert unit_30["engagement_id"].tolist() == [0, 1, 2]
    assert unit_30["start_frame"].tolist() == [100, 1001, 1001]
    assert unit_30["location_x"].tolist() == [0.0, 20.0, 40.0]


@pytest.mark.parametrize("name", [MAIN, GLOBAL, PER_UNIT])
def test_empty_damage_log(tmp_path: Path, name: str):
    write_aspect(tmp_path, "damage_log", [])
    result = run_stat(tmp_path, name, 1 << 26)

    dtypes = PER_UNIT_DTYPES if name == PER_UNIT else ENGAGEMENT_DTYPES
    assert len(result) == 0
    assert result.dtypes.to_dict() == dtypes


def test_only_null_attackers(tmp_path: Path):
    write_aspect(tmp_path, "damage_log", [
        hit(10, 0, 0, attacker_unit=None, attacker_team=None, damage=1),
        hit(20, 0, 0, attacker_unit=None, attacker_team=None, damage=2),
    ])

    main = run_stat(tmp_path, MAIN, 7)
    assert len(main) == 0
    global_ = run_stat(tmp_path, GLOBAL, 7)
    expected = engagement_table([(0, 10, 20, 10 / 30, 0.0, 0.0, [], 0.3, 2)])
    pd.testing.assert_frame_equal(global_.reset_index(drop=True), expected, check_dtype=True)


def test_engagement_spanning_many_partitions(tmp_path: Path):
    # 40 hits 10 frames apart form one engagement; at 64 bytes it spans ~20 partitions.
    rows = [hit(100 + 10 * i, i, 0, attacker_unit=20 + i % 3, attacker_team=i % 3,
                damage=i) for i in range(40)]
    rows.append(hit(1000, 0, 0, attacker_unit=20, attacker_team=7, damage=1))
    write_aspect(tmp_path, "damage_log", rows)

    expected = engagement_table([
        (0, 100, 490, 390 / 30, sum(range(40)) / 40, 0.0, [0, 1, 2], sum(range(40)) / 10, 40),
        (1, 1000, 1000, 0.0, 0.0, 0.0, [7], 0.1, 1),
    ])
    for blocksize in BLOCKSIZES:
        result = run_stat(tmp_path, MAIN, blocksize)
        pd.testing.assert_frame_equal(result.reset_index(drop=True), expected,
                                      check_dtype=True)


def test_parquet_round_trip(session_replay: Path, tmp_path: Path):
    stat = STAT[MAIN]
    result = stat.build(read_frames(session_replay, blocksize=64), stat.params)
    output = tmp_path / "out"
    dd.to_parquet(result, str(output), write_index=False, compute_kwargs={"scheduler": "sync"})

    table = pq.read_table(output)
    players_type = table.schema.field("involved_players").type
    assert pa.types.is_list(players_type)
    assert players_type.value_type == pa.int64()
    assert table.column("involved_players").to_pylist() == [[2, 3], [4], [], [1, 3]]
    assert table.schema.field("engagement_id").type == pa.int64()
    assert table.schema.field("total_damage").type == pa.float64()

    read_back = pd.read_parquet(output, dtype_backend="pyarrow")
    assert read_back["involved_players"].tolist() == [[2, 3], [4], [], [1, 3]]


def test_players_dtype_is_int64_list():
    assert PLAYERS_DTYPE.pyarrow_dtype == pa.list_(pa.int64())


def test_variants_share_build():
    assert STAT[MAIN].build is STAT[GLOBAL].build is STAT[PER_UNIT].build
    assert STAT[MAIN].default
    assert not STAT[GLOBAL].default
    assert not STAT[PER_UNIT].default


@pytest.mark.parametrize("name", [MAIN, GLOBAL, PER_UNIT])
def test_params_match_packaged_settings(name: str):
    assert DEFAULTS[NAMESPACE]["stats"][name] == STAT[name].params


@pytest.mark.parametrize("params, message", [
    ({"gap_frames": -1}, "gap_frames must be a non-negative integer"),
    ({"gap_frames": 2.5}, "gap_frames must be a non-negative integer"),
    ({"max_distance": -5}, "max_distance must be null or a non-negative distance"),
    ({"require_attacker": "yes"}, "require_attacker must be true or false"),
    ({"per_attacker_unit": True, "require_attacker": False},
     "per_attacker_unit needs require_attacker: true"),
])
def test_invalid_params(session_replay: Path, params: dict, message: str):
    stat = STAT[MAIN]
    frames = read_frames(session_replay)
    with pytest.raises(ConfigError, match=message):
        stat.build(frames, {**stat.params, **params})


def test_missing_param(session_replay: Path):
    with pytest.raises(ConfigError, match="engagement parameters are missing: max_distance"):
        STAT[MAIN].build(read_frames(session_replay),
                         {"gap_frames": 300, "require_attacker": True,
                          "per_attacker_unit": False})


# --- The real example replay ---------------------------------------------------------

def reference_engagements(damage: pd.DataFrame, gap: int, max_distance: int | None
                          ) -> pd.DataFrame:
    """Sessionize the rows one by one, as the definition reads."""
    engagement_ids, current, previous = [], -1, None
    for row in damage.itertuples():
        opens = previous is None or row.frame - previous.frame > gap
        if max_distance is not None and previous is not None:
            dx = row.victim_pos_x - previous.victim_pos_x
            dz = row.victim_pos_z - previous.victim_pos_z
            opens = opens or dx * dx + dz * dz > max_distance * max_distance
        current += int(opens)
        engagement_ids.append(current)
        previous = row
    return summarize_reference(damage.assign(engagement_id=engagement_ids), ["engagement_id"])


def summarize_reference(damage: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    grouped = damage.groupby(keys)
    summary = grouped.agg(
        start_frame=("frame", "min"),
        end_frame=("frame", "max"),
        location_x=("victim_pos_x", "mean"),
        location_z=("victim_pos_z", "mean"),
        total_damage=("damage", "sum"),
        hits=("frame", "size"),
    )
    summary["involved_players"] = grouped["attacker_team_id"].agg(
        lambda teams: sorted(set(teams.dropna().tolist())))
    return summary.reset_index()


def assert_matches_reference(result: pd.DataFrame, reference: pd.DataFrame, keys: list[str]):
    result = result.sort_values(keys).reset_index(drop=True)
    assert len(result) == len(reference)
    for column in keys + ["start_frame", "end_frame", "hits"]:
        assert result[column].tolist() == reference[column].tolist(), column
    assert result["involved_players"].tolist() == reference["involved_players"].tolist()
    durations = (reference["end_frame"] - reference["start_frame"]) / 30
    np.testing.assert_allclose(result["duration_seconds"], durations, rtol=1e-12)
    # The reference adds floats one by one; the stat adds raw integers exactly.
    for column in ("location_x", "location_z", "total_damage"):
        np.testing.assert_allclose(result[column], reference[column], rtol=1e-9,
                                   err_msg=column)


def write_example_excerpt(replay: Path, folder: Path, aspect: str, step: int) -> int:
    """Copy every ``step``-th row of a real aspect file, in file order; return how many.

    The real damage log has no gap over 300 frames, so only a thinned excerpt has
    several engagements in the global variant. A few dozen rows read at a 7-byte
    blocksize in seconds.
    """
    with open(replay / f"{aspect}.mpk", "rb") as stream:
        rows = list(msgpack.Unpacker(stream, raw=False))[::step]
    write_aspect(folder, aspect, rows)
    return len(rows)


@pytest.fixture(scope="module")
def example_result(example_replay: Path):
    """Return a function that computes a stat on the real example once per blocksize."""
    cache: dict[tuple, pd.DataFrame] = {}

    def compute(name: str, blocksize: int) -> pd.DataFrame:
        if (name, blocksize) not in cache:
            cache[name, blocksize] = run_stat(example_replay, name, blocksize)
        return cache[name, blocksize].copy()

    return compute


@pytest.fixture(scope="module")
def example_damage(example_replay: Path) -> pd.DataFrame:
    frames = read_frames(example_replay)
    return frames["damage_log"].compute(scheduler="sync").reset_index(drop=True)


@pytest.mark.example
def test_example_main_matches_reference(example_result, example_damage: pd.DataFrame):
    result = example_result(MAIN, 1 << 16)

    with_attacker = example_damage[example_damage["attacker_unit_id"].notna()]
    reference = reference_engagements(with_attacker, gap=300, max_distance=500)
    assert_matches_reference(result, reference, ["engagement_id"])


@pytest.mark.example
def test_example_global_matches_reference(example_result, example_damage: pd.DataFrame):
    result = example_result(GLOBAL, 1 << 16)

    reference = reference_engagements(example_damage, gap=300, max_distance=None)
    assert_matches_reference(result, reference, ["engagement_id"])


@pytest.mark.example
def test_example_per_unit_matches_reference(example_result, example_damage: pd.DataFrame):
    result = example_result(PER_UNIT, 1 << 16)

    with_attacker = example_damage[example_damage["attacker_unit_id"].notna()]
    by_unit = with_attacker.sort_values("attacker_unit_id", kind="stable")
    engagement_ids, previous = [], None
    for row in by_unit.itertuples():
        if previous is None or row.attacker_unit_id != previous.attacker_unit_id:
            current = 0
        elif row.frame - previous.frame > 450:
            current += 1
        engagement_ids.append(current)
        previous = row
    reference = summarize_reference(by_unit.assign(engagement_id=engagement_ids),
                                    ["attacker_unit_id", "engagement_id"])
    assert_matches_reference(result, reference, ["attacker_unit_id", "engagement_id"])


@pytest.mark.example
@pytest.mark.parametrize("name", [MAIN, GLOBAL, PER_UNIT])
def test_example_same_for_any_blocksize(example_result, name: str):
    whole = example_result(name, 1 << 26)
    assert len(whole) > 0
    for blocksize in (1 << 18, 1 << 16):
        result = example_result(name, blocksize)
        if name == PER_UNIT:
            pd.testing.assert_frame_equal(sorted_per_unit(result), sorted_per_unit(whole),
                                          check_dtype=True)
        else:
            pd.testing.assert_frame_equal(result.reset_index(drop=True),
                                          whole.reset_index(drop=True), check_dtype=True)


@pytest.mark.example
@pytest.mark.parametrize("name", [MAIN, GLOBAL, PER_UNIT])
def test_example_excerpt_same_for_all_blocksizes(example_replay: Path, tmp_path: Path,
                                                 name: str):
    assert write_example_excerpt(example_replay, tmp_path, "damage_log", step=3000) > 20
    whole = run_stat(tmp_path, name, BLOCKSIZES[0])
    assert len(whole) > 1
    for blocksize in BLOCKSIZES[1:]:
        result = run_stat(tmp_path, name, blocksize)
        if name == PER_UNIT:
            pd.testing.assert_frame_equal(sorted_per_unit(result), sorted_per_unit(whole),
                                          check_dtype=True)
        else:
            pd.testing.assert_frame_equal(result.reset_index(drop=True),
                                          whole.reset_index(drop=True), check_dtype=True)
