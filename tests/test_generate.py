"""Tests of the synthetic replay generator: format, determinism and match consistency."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import msgpack
import numpy as np
import pytest
from helpers import decode_file

from mpp_dask.generate import (RowBlock, aspect_blocks, encode_block, generate_replay,
                               plan_replay)
from mpp_dask.schema import ASPECTS, ENUMS, Aspect, Field, RawType

SMALL = {"minutes": 4, "teams": 4, "seed": 3, "units_per_team": 80}
GAIA_TEAM = SMALL["teams"]

# team_stats counters that are running totals since the game start.
CUMULATIVE = ("metal_used", "metal_produced", "metal_excess", "metal_received", "metal_sent",
              "energy_used", "energy_produced", "energy_excess", "energy_received",
              "energy_sent", "damage_dealt", "damage_received")

# Where unit ids appear in each aspect, by raw field name.
UNIT_ID_FIELDS = {
    "unit_positions": ("unit_id",),
    "unit_state_snapshots": ("unit_id",),
    "damage_log": ("victim_unit_id", "attacker_unit_id"),
    "commands_log": ("unitId",),
    "construction_log": ("builder_unit_id", "target_unit_id"),
    "unit_economy": ("unit_id",),
}


def field_index(aspect_name: str, raw_name: str) -> int:
    return [fld.raw_name for fld in ASPECTS[aspect_name].fields].index(raw_name)


def code_of(enum: str, member: str) -> int:
    return ENUMS[enum].index(member) + 1


def read_rows(path: Path) -> list[list]:
    with open(path, "rb") as handle:
        return list(msgpack.Unpacker(handle, raw=False))


def block_rows(aspect: Aspect, block: RowBlock) -> list[list]:
    """Return the rows of a block as msgpack decodes them from the file."""
    rows = []
    for index in range(len(block)):
        length = len(aspect.fields) if block.lengths is None else int(block.lengths[index])
        row = []
        for fld in aspect.fields[:length]:
            value = block.columns[fld.raw_name][index]
            if fld.raw_name in block.nulls and block.nulls[fld.raw_name][index]:
                row.append(None)
            elif fld.raw_name in block.floats and block.floats[fld.raw_name][index]:
                row.append(float(value))
            elif fld.raw_type is RawType.BOOL:
                row.append(bool(value))
            elif fld.raw_type is RawType.STR:
                row.append(str(value))
            else:
                row.append(int(value))
        rows.append(row)
    return rows


def pack_canonically(row: list) -> bytes:
    """Pack a row as msgpack-python does, with float32 because generated floats are float32."""
    return msgpack.packb(row, use_single_float=any(isinstance(v, float) for v in row))


@pytest.fixture(scope="module")
def replay(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    folder = tmp_path_factory.mktemp("replay")
    return folder, generate_replay(folder, **SMALL)


@pytest.fixture(scope="module")
def raw(replay) -> dict[str, list[list]]:
    folder, _ = replay
    return {name: read_rows(folder / aspect.file_name) for name, aspect in ASPECTS.items()}


@pytest.fixture(scope="module")
def unit_life(raw) -> tuple[dict[int, int], dict[int, int]]:
    """CREATED and DESTROYED frame of every unit, from unit_events."""
    unit_id = field_index("unit_events", "unit_id")
    event = field_index("unit_events", "event_type")
    created, destroyed = {}, {}
    for row in raw["unit_events"]:
        if row[event] == code_of("UnitEvent", "CREATED"):
            created[row[unit_id]] = row[0]
        elif row[event] == code_of("UnitEvent", "DESTROYED"):
            destroyed[row[unit_id]] = row[0]
    return created, destroyed


def test_generate_writes_every_file(replay, raw):
    folder, rows = replay
    assert set(rows) == set(ASPECTS)
    for name in ASPECTS:
        assert rows[name] == len(raw[name]), name
        assert rows[name] > 0, name
    assert (folder / "defs.csv").exists()
    assert (folder / "game_meta.json").exists()


def test_same_arguments_same_bytes(replay, tmp_path):
    folder, _ = replay
    generate_replay(tmp_path / "again", **SMALL)
    generate_replay(tmp_path / "other", **{**SMALL, "seed": SMALL["seed"] + 1})
    for path in sorted(folder.iterdir()):
        assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes(), path.name
    other = tmp_path / "other" / "unit_positions.mpk"
    assert other.read_bytes() != (folder / "unit_positions.mpk").read_bytes()


def test_files_hold_planned_rows(replay, raw):
    folder, _ = replay
    plan = plan_replay(**SMALL)
    for name, aspect in ASPECTS.items():
        intended = []
        for block in aspect_blocks(plan, name):
            intended.extend(block_rows(aspect, block))
        assert raw[name] == intended, name
        for decoded, planned in zip(raw[name], intended):
            assert [type(v) for v in decoded] == [type(v) for v in planned], name


def test_encoding_matches_msgpack_packer(replay, raw):
    folder, _ = replay
    for name, aspect in ASPECTS.items():
        expected = b"".join(pack_canonically(row) for row in raw[name])
        assert (folder / aspect.file_name).read_bytes() == expected, name


def test_every_file_decodes_through_reader(replay, raw):
    folder, rows = replay
    for name, aspect in ASPECTS.items():
        frame, tally = decode_file(folder / aspect.file_name, name, blocksize=4096)
        assert len(frame) == rows[name], name
        assert tally.problem_count == 0, name
        assert tally.unknown_enum_codes == 0, name
        assert list(frame.columns) == aspect.columns


def test_large_counters_are_float32_whole_numbers(replay, raw):
    folder, _ = replay
    frame, _ = decode_file(folder / "team_stats.mpk", "team_stats", blocksize=4096)
    for name in ("energy_used", "energy_produced"):
        column = field_index("team_stats", name)
        values = [row[column] for row in raw["team_stats"]]
        floats = [value for value in values if isinstance(value, float)]
        assert floats, name
        assert all(value >= 2**24 and value.is_integer() for value in floats), name
        assert all(value < 2**24 for value in values if isinstance(value, int)), name
        assert np.allclose(frame[name].to_numpy(), np.array(values, dtype=float) / 10), name
    assert b"\xca" in (folder / "team_stats.mpk").read_bytes()


def test_frames_never_decrease(raw):
    for name, aspect in ASPECTS.items():
        if not aspect.time_series:
            continue
        frames = [row[0] for row in raw[name]]
        assert all(a <= b for a, b in zip(frames, frames[1:])), name


def test_units_appear_only_while_alive(raw, unit_life):
    created, destroyed = unit_life
    for name, fields in UNIT_ID_FIELDS.items():
        for raw_name in fields:
            column = field_index(name, raw_name)
            for row in raw[name]:
                unit = row[column]
                if unit is None:
                    continue
                assert unit in created, (name, raw_name, row)
                assert created[unit] <= row[0], (name, raw_name, row)
                assert row[0] <= destroyed.get(unit, row[0]), (name, raw_name, row)


def test_unit_events_follow_life_cycle(raw, unit_life):
    created, destroyed = unit_life
    unit_id = field_index("unit_events", "unit_id")
    assert all(created[unit] <= frame for unit, frame in destroyed.items())
    last_seen = {}
    for row in raw["unit_events"]:
        last_seen[row[unit_id]] = row[0]
    assert all(last_seen[unit] == frame for unit, frame in destroyed.items())


def test_team_stats_every_300_frames_per_team(raw):
    rows = raw["team_stats"]
    team = field_index("team_stats", "team_id")
    frames_by_team = defaultdict(list)
    for row in rows:
        frames_by_team[row[team]].append(row[0])
    assert sorted(frames_by_team) == list(range(GAIA_TEAM + 1))
    expected = list(range(300, SMALL["minutes"] * 1800 + 1, 300))
    for team_id, frames in frames_by_team.items():
        assert frames == expected, team_id


def test_team_stats_counters_never_decrease(raw):
    team = field_index("team_stats", "team_id")
    by_team = defaultdict(list)
    for row in raw["team_stats"]:
        by_team[row[team]].append(row)
    for name in CUMULATIVE:
        column = field_index("team_stats", name)
        for team_id, rows in by_team.items():
            values = [row[column] for row in rows]
            assert all(a <= b for a, b in zip(values, values[1:])), (name, team_id)


def test_gaia_team_has_no_activity(raw):
    team = field_index("team_stats", "team_id")
    gaia_rows = [row for row in raw["team_stats"] if row[team] == GAIA_TEAM]
    for name in CUMULATIVE:
        assert all(row[field_index("team_stats", name)] == 0 for row in gaia_rows), name


def test_damage_counters_add_up_damage_log(raw):
    damage_log = raw["damage_log"]
    last_frame = raw["team_stats"][-1][0]
    received = Counter()
    for row in damage_log:
        if row[0] <= last_frame:
            received[row[field_index("damage_log", "victim_team_id")]] += \
                row[field_index("damage_log", "damage")]
    final = {row[1]: row[field_index("team_stats", "damage_received")]
             for row in raw["team_stats"]}
    for team_id in range(SMALL["teams"]):
        assert final[team_id] == received[team_id], team_id


def test_short_unit_events_rows(raw):
    event = field_index("unit_events", "event_type")
    shapes = Counter((row[event], len(row)) for row in raw["unit_events"])
    lengths_by_event = defaultdict(set)
    for (code, length) in shapes:
        lengths_by_event[ENUMS["UnitEvent"][code - 1]].add(length)
    assert lengths_by_event["CREATED"] == {11, 14, 15}
    assert lengths_by_event["FINISHED"] == {11}
    assert lengths_by_event["DESTROYED"] == {11}
    assert lengths_by_event["GIVEN"] == {13}
    assert lengths_by_event["TAKEN"] == {13}


def test_nulls_where_real_exports_have_them(raw):
    attacker_fields = ("attacker_team_id", "attacker_unit_id", "attacker_def_id")
    patterns = Counter(tuple(row[field_index("damage_log", name)] is None
                             for name in attacker_fields) for row in raw["damage_log"])
    assert set(patterns) == {(False,) * 3, (True,) * 3}

    cmd_name = field_index("commands_log", "cmd_name")
    assert any(row[cmd_name] is None for row in raw["commands_log"])

    event = field_index("unit_events", "event_type")
    team = field_index("unit_events", "unit_team_id")
    transfers = {code_of("UnitEvent", "GIVEN"), code_of("UnitEvent", "TAKEN")}
    for row in raw["unit_events"]:
        assert (row[team] is None) == (row[event] in transfers), row

    attacker = field_index("unit_events", "attacker_unit_id")
    destroyed = [row for row in raw["unit_events"]
                 if row[event] == code_of("UnitEvent", "DESTROYED")]
    assert any(row[attacker] is None for row in destroyed)
    assert any(row[attacker] is not None for row in destroyed)


def test_enum_codes_valid(raw):
    for name, aspect in ASPECTS.items():
        for index, fld in enumerate(aspect.fields):
            if fld.enum is None:
                continue
            codes = {row[index] for row in raw[name] if len(row) > index}
            allowed = set(range(1, len(ENUMS[fld.enum]) + 1))
            if fld.nullable:
                allowed.add(None)
            assert codes <= allowed, (name, fld.raw_name, codes - allowed)


def test_construction_log_has_every_action(raw):
    event = field_index("construction_log", "event")
    codes = {row[event] for row in raw["construction_log"]}
    assert codes == set(range(1, len(ENUMS["ConstructionAction"]) + 1))


def test_commands_include_group_orders(raw):
    team, cmd_id = field_index("commands_log", "teamId"), field_index("commands_log", "cmd_id")
    action_sizes = Counter((row[0], row[team], row[cmd_id]) for row in raw["commands_log"])
    assert max(action_sizes.values()) >= 5


def test_build_orders_name_the_def(raw):
    cmd_id = field_index("commands_log", "cmd_id")
    cmd_name = field_index("commands_log", "cmd_name")
    target = field_index("commands_log", "target_unit_id")
    builds = [row for row in raw["commands_log"] if row[cmd_name] == code_of("Command", "BUILD")]
    assert builds
    assert all(row[cmd_id] == -row[target] for row in builds)


def test_start_pos_one_row_per_player(raw):
    rows = raw["start_pos"]
    assert [row[0] for row in rows] == list(range(SMALL["teams"]))
    assert [row[1] for row in rows] == [f"player_{team:02d}" for team in range(SMALL["teams"])]


def test_game_meta_matches_team_stats(replay, raw):
    folder, _ = replay
    meta = json.loads((folder / "game_meta.json").read_text())
    final_received = {row[1]: row[field_index("team_stats", "damage_received")]
                      for row in raw["team_stats"] if row[1] != GAIA_TEAM}
    award = meta["awards"]["mostDamageTaken"]
    assert award["value"] == pytest.approx(final_received[award["teamId"]] / 10)
    assert final_received[award["teamId"]] == max(final_received.values())

    sides = [[player["teamId"] for player in ally["Players"]] for ally in meta["AllyTeams"]]
    assert len(sides) == 2
    assert all(sides)
    assert sorted(sides[0] + sides[1]) == list(range(SMALL["teams"]))


def test_defs_cover_every_def_id(replay, raw):
    folder, _ = replay
    lines = (folder / "defs.csv").read_text().splitlines()
    assert lines[0] == "id,name,translatedTooltip,translatedHumanName"
    ids = {int(line.split(",")[0]) for line in lines[1:]}
    used = {row[field_index("unit_positions", "unit_def_id")] for row in raw["unit_positions"]}
    used |= {row[field_index("unit_events", "unit_def_id")] for row in raw["unit_events"]}
    assert used <= ids


def test_tiny_match_writes_valid_files(tmp_path):
    rows = generate_replay(tmp_path, minutes=0.05, teams=2, seed=1)
    for name, aspect in ASPECTS.items():
        path = tmp_path / aspect.file_name
        assert len(read_rows(path)) == rows[name], name
    assert rows["team_stats"] == 0
    meta = json.loads((tmp_path / "game_meta.json").read_text())
    assert meta["awards"]["mostDamageTaken"]["value"] == 0


@pytest.mark.parametrize("arguments", [
    {"minutes": 0}, {"teams": 1}, {"seed": -1}, {"units_per_team": 1},
])
def test_invalid_arguments_rejected(tmp_path, arguments):
    with pytest.raises(ValueError):
        generate_replay(tmp_path, **arguments)


# Rows may stop before the nullable last field.
PROBE = Aspect(name="probe", description="Every raw type and a nullable field.", fields=(
    Field(raw_name="frame"),
    Field(raw_name="flag", raw_type=RawType.BOOL),
    Field(raw_name="label", raw_type=RawType.STR),
    Field(raw_name="count", nullable=True),
))

# Both ends of every MessagePack integer class.
BOUNDARY_INTS = [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1,
                 -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63]


def test_encode_block_matches_packb_for_every_class():
    count = len(BOUNDARY_INTS)
    labels = ["", "a" * 31, "b" * 32, "c" * 255, "d" * 256, "é" * 40]
    labels = (labels * count)[:count]
    block = RowBlock(
        columns={"frame": np.array(BOUNDARY_INTS, dtype=np.int64),
                 "count": np.array(BOUNDARY_INTS[::-1], dtype=np.int64),
                 "flag": np.arange(count) % 2 == 0,
                 "label": np.array(labels, dtype=object)},
        nulls={"count": np.arange(count) % 3 == 0},
    )
    expected = b"".join(msgpack.packb(row) for row in block_rows(PROBE, block))
    assert encode_block(PROBE, block) == expected


def test_encode_block_whole_floats_and_short_rows():
    values = np.array([2**24, 2**24 + 1, 2**40, 5], dtype=np.int64)
    block = RowBlock(
        columns={"frame": values, "count": values, "flag": np.ones(4, bool),
                 "label": np.array(["x"] * 4, dtype=object)},
        floats={"count": np.array([True, True, True, False])},
        lengths=np.array([4, 4, 4, 3]),
    )
    encoded = encode_block(PROBE, block)
    unpacker = msgpack.Unpacker()
    unpacker.feed(encoded)
    rows = list(unpacker)
    assert rows == block_rows(PROBE, block)
    assert rows[3] == [5, True, "x"]
    # 2**24 + 1 is not exact in float32, so it takes float64; the others float32.
    packed = [msgpack.packb(row, use_single_float=single)
              for row, single in zip(rows, [True, False, True, False])]
    assert encoded == b"".join(packed)


def test_encode_block_rejects_invalid_blocks():
    frame_only = {"frame": np.zeros(2, dtype=np.int64)}
    full = {**frame_only, "count": np.zeros(2, dtype=np.int64), "flag": np.zeros(2, bool),
            "label": np.array(["a", "b"], dtype=object)}
    with pytest.raises(ValueError, match="block columns"):
        encode_block(PROBE, RowBlock(columns=frame_only))
    with pytest.raises(ValueError, match="not nullable"):
        encode_block(PROBE, RowBlock(columns=full, nulls={"frame": np.ones(2, bool)}))
    with pytest.raises(ValueError, match="row lengths"):
        encode_block(PROBE, RowBlock(columns=full, lengths=np.array([2, 4])))
