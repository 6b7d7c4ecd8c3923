"""Each transform rule of the aspect contract, checked through the byte-range reader.

Raw rows are positional MessagePack arrays. A ``÷N`` field becomes float64
``raw / N``. Enum codes become categoricals with the enum's fixed members in code
order, and unknown codes become null and are counted. Nullable fields may be null,
or missing at the end of a short row. Ints are int64 (nullable ones Int64),
booleans bool and strings a string dtype, and whole-number floats are valid raw
ints. A 0-byte file is a table with zero rows.
"""

from __future__ import annotations

import math
import re

import msgpack
import numpy as np
import pandas as pd
import pytest

from helpers import decode_file, write_aspect
from mpp_dask.errors import DecodeError
from mpp_dask.schema import ASPECTS, ENUMS, RawType

BLOCKSIZES = [1, 7, 1 << 20]

# The divisors the contract gives, per aspect and raw field name.
TEAM_STATS_TENTHS = [
    "metal_used", "metal_produced", "metal_excess", "metal_received", "metal_sent",
    "energy_used", "energy_produced", "energy_excess", "energy_received", "energy_sent",
    "damage_dealt", "damage_received",
    *(f"{resource}_{suffix}" for resource in ("metal", "energy")
      for suffix in ("current", "storage", "pull", "income", "expense", "share", "Rsent",
                     "Rreceived", "Rexcess")),
]
DIVISORS = {
    "construction_log": {"buildpower": 1000},
    "damage_log": {"damage": 10},
    "team_stats": {name: 10 for name in TEAM_STATS_TENTHS},
    "unit_economy": {"metal_make": 10, "metal_use": 10, "energy_make": 10, "energy_use": 10},
    "unit_positions": {"vx": 1000, "vy": 1000, "vz": 1000},
    "unit_state_snapshots": {"experience": 1000},
}

# The nullable fields the contract marks with "?".
NULLABLE = {
    "commands_log": {"cmd_name", "target_unit_id"},
    "construction_log": {"target_player_id"},
    "damage_log": {"attacker_team_id", "attacker_unit_id", "attacker_def_id"},
    "unit_events": {"unit_def_id", "unit_team_id", "attacker_unit_id", "attacker_unit_def_id",
                    "attacker_team_id", "old_team_id", "new_team_id", "builder_id",
                    "factory_queue_len"},
}

ENUM_FIELDS = {
    ("commands_log", "cmd_name"): "Command",
    ("construction_log", "event"): "ConstructionAction",
    ("unit_economy", "event_type"): "UnitEconomyEvent",
    ("unit_events", "event_type"): "UnitEvent",
}

RENAMES = {
    "commands_log": {"teamId": "team_id", "unitId": "unit_id"},
    "team_stats": {"metal_Rsent": "metal_rate_sent", "metal_Rreceived": "metal_rate_received",
                   "metal_Rexcess": "metal_rate_excess", "energy_Rsent": "energy_rate_sent",
                   "energy_Rreceived": "energy_rate_received",
                   "energy_Rexcess": "energy_rate_excess"},
    "unit_state_snapshots": {"currentHealth": "current_health",
                             "currentMaxHealth": "current_max_health"},
}

BOOLS = {"damage_log": {"is_paralyzer"},
         "unit_state_snapshots": {"is_being_built", "is_stunned", "is_cloaked", "is_firing"}}
STRINGS = {"start_pos": {"player_name", "commander_def_name"}}


def valid_row(aspect_name: str, frame: int = 30) -> list:
    """Return a full valid raw row: every int 5 (enums code 1), bools True, strings "s"."""
    row = []
    for fld in ASPECTS[aspect_name].fields:
        if fld.raw_type is RawType.BOOL:
            row.append(True)
        elif fld.raw_type is RawType.STR:
            row.append("s")
        elif fld.enum is not None:
            row.append(1)
        else:
            row.append(5)
    if ASPECTS[aspect_name].time_series:
        row[0] = frame
    return row


def raw_index(aspect_name: str, raw_name: str) -> int:
    return [fld.raw_name for fld in ASPECTS[aspect_name].fields].index(raw_name)


def decode_rows(tmp_path, aspect_name: str, rows: list, blocksize: int = 1 << 20):
    path = write_aspect(tmp_path, aspect_name, rows)
    return decode_file(path, aspect_name, blocksize=blocksize)


def decode_bytes(tmp_path, aspect_name: str, data: bytes, blocksize: int = 1 << 20):
    path = tmp_path / f"{aspect_name}.mpk"
    path.write_bytes(data)
    return decode_file(path, aspect_name, blocksize=blocksize)


# Schema as the contract states it.

def test_schema_divisors_match_contract():
    for aspect in ASPECTS.values():
        divisors = {fld.raw_name: fld.divisor for fld in aspect.fields if fld.divisor}
        assert divisors == DIVISORS.get(aspect.name, {}), aspect.name


def test_schema_nullable_fields_match_contract():
    for aspect in ASPECTS.values():
        nullable = {fld.raw_name for fld in aspect.fields if fld.nullable}
        assert nullable == NULLABLE.get(aspect.name, set()), aspect.name


def test_schema_renames_match_contract():
    for aspect in ASPECTS.values():
        renames = {fld.raw_name: fld.rename for fld in aspect.fields if fld.rename}
        assert renames == RENAMES.get(aspect.name, {}), aspect.name


def test_schema_enums_match_contract():
    enums = {(aspect.name, fld.raw_name): fld.enum
             for aspect in ASPECTS.values() for fld in aspect.fields if fld.enum}
    assert enums == ENUM_FIELDS


def test_schema_types_match_contract():
    for aspect in ASPECTS.values():
        bools = {fld.raw_name for fld in aspect.fields if fld.raw_type is RawType.BOOL}
        strings = {fld.raw_name for fld in aspect.fields if fld.raw_type is RawType.STR}
        assert bools == BOOLS.get(aspect.name, set()), aspect.name
        assert strings == STRINGS.get(aspect.name, set()), aspect.name


def test_enum_members_in_code_order():
    assert ENUMS["UnitEvent"] == ("CREATED", "FINISHED", "DESTROYED", "GIVEN", "TAKEN", "IDLE",
                                  "MOVE_FAILED", "CLOAKED", "DECLOAKED")
    assert ENUMS["UnitEconomyEvent"] == ("PRODUCTION_STARTED", "SNAPSHOT", "DESTROYED")
    assert ENUMS["ConstructionAction"] == (
        "CONSTRUCTION_START", "CONSTRUCTION_SNAPSHOT", "CONSTRUCTION_END", "ASSIST_START",
        "ASSIST_SNAPSHOT", "ASSIST_END")
    assert ENUMS["Command"][0] == "BUILD"
    assert ENUMS["Command"][-1] == "WAIT"
    assert len(ENUMS["Command"]) == 15


# Dequantization.

DIVISOR_CASES = [(aspect, name, divisor) for aspect, fields in DIVISORS.items()
                 for name, divisor in fields.items()]


@pytest.mark.parametrize(("aspect_name", "raw_name", "divisor"), DIVISOR_CASES)
def test_divisor_field_dequantized(tmp_path, aspect_name, raw_name, divisor):
    row = valid_row(aspect_name)
    row[raw_index(aspect_name, raw_name)] = -12345
    other = valid_row(aspect_name, frame=31)
    other[raw_index(aspect_name, raw_name)] = 2**40 + 7

    frame, _ = decode_rows(tmp_path, aspect_name, [row, other])

    column = frame[ASPECTS[aspect_name].fields[raw_index(aspect_name, raw_name)].name]
    assert column.dtype == np.float64
    assert column.tolist() == [-12345 / divisor, (2**40 + 7) / divisor]


def test_divisor_large_value_rounded_once(tmp_path):
    # 2**62 + 513 is no float64. Converting it to float64 and then dividing rounds
    # twice, which gives a different result here.
    raw = 2**62 + 513
    assert float(raw) / 10 != raw / 10
    row = valid_row("damage_log")
    row[raw_index("damage_log", "damage")] = raw

    frame, _ = decode_rows(tmp_path, "damage_log", [row])

    assert frame["damage"].iat[0] == raw / 10


def test_whole_float32_counter_is_valid(tmp_path):
    # Exporters write counters above 2**24 as float32 whole numbers.
    row = valid_row("team_stats")
    row[raw_index("team_stats", "energy_used")] = float(2**25)
    data = msgpack.packb(row, use_single_float=True)
    assert b"\xca" in data

    frame, _ = decode_bytes(tmp_path, "team_stats", data)

    assert frame["energy_used"].iat[0] == 2**25 / 10


@pytest.mark.parametrize("raw_name", ["frame", "unit_id", "event_type", "unit_def_id"])
def test_whole_float_int_field_is_valid(tmp_path, raw_name):
    row = valid_row("unit_events")
    row[raw_index("unit_events", raw_name)] = 3.0

    frame, _ = decode_rows(tmp_path, "unit_events", [row])

    fld = ASPECTS["unit_events"].fields[raw_index("unit_events", raw_name)]
    expected = "DESTROYED" if fld.enum else 3
    assert frame[fld.name].iat[0] == expected
    assert frame[fld.name].dtype == fld.dtype


# Enums.

@pytest.mark.parametrize(("aspect_name", "raw_name"), sorted(ENUM_FIELDS))
def test_enum_field_categorical(tmp_path, aspect_name, raw_name):
    enum = ENUM_FIELDS[(aspect_name, raw_name)]
    members = ENUMS[enum]
    rows = []
    for code in range(1, len(members) + 1):
        row = valid_row(aspect_name, frame=code)
        row[raw_index(aspect_name, raw_name)] = code
        rows.append(row)

    frame, tally = decode_rows(tmp_path, aspect_name, rows)

    column = frame[raw_name]
    assert isinstance(column.dtype, pd.CategoricalDtype)
    assert list(column.dtype.categories) == list(members)
    assert column.dtype.ordered is False
    assert column.tolist() == list(members)
    assert tally.unknown_enum_codes == 0


@pytest.mark.parametrize(("aspect_name", "raw_name"), sorted(ENUM_FIELDS))
def test_unknown_enum_code_null_and_counted(tmp_path, aspect_name, raw_name):
    size = len(ENUMS[ENUM_FIELDS[(aspect_name, raw_name)]])
    rows = []
    for frame_number, code in enumerate([0, size + 1, -5, 2**40, 1]):
        row = valid_row(aspect_name, frame=frame_number)
        row[raw_index(aspect_name, raw_name)] = code
        rows.append(row)

    for blocksize in BLOCKSIZES:
        frame, tally = decode_rows(tmp_path, aspect_name, rows, blocksize)

        column = frame[raw_name]
        assert column.isna().tolist() == [True, True, True, True, False]
        assert len(column.dtype.categories) == size
        assert tally.unknown_enum_codes == 4
        assert tally.problems == []


def test_unknown_enum_in_never_null_column(tmp_path):
    # event_type is not nullable, yet an unknown code still gives null.
    row = valid_row("unit_economy")
    row[raw_index("unit_economy", "event_type")] = 9

    frame, tally = decode_rows(tmp_path, "unit_economy", [row])

    assert frame["event_type"].isna().tolist() == [True]
    assert tally.unknown_enum_codes == 1


def test_null_in_nullable_enum_not_counted(tmp_path):
    row = valid_row("commands_log")
    row[raw_index("commands_log", "cmd_name")] = None

    frame, tally = decode_rows(tmp_path, "commands_log", [row])

    assert frame["cmd_name"].isna().tolist() == [True]
    assert tally.unknown_enum_codes == 0


# Dtypes and nulls.

@pytest.mark.parametrize("aspect_name", sorted(ASPECTS))
def test_column_dtypes_follow_contract(tmp_path, aspect_name):
    aspect = ASPECTS[aspect_name]
    frame, _ = decode_rows(tmp_path, aspect_name, [valid_row(aspect_name)])

    for fld in aspect.fields:
        dtype = frame[fld.name].dtype
        if fld.enum:
            assert isinstance(dtype, pd.CategoricalDtype), fld.name
        elif fld.divisor:
            assert dtype == np.float64, fld.name
        elif fld.raw_type is RawType.BOOL:
            assert dtype == np.bool_, fld.name
        elif fld.raw_type is RawType.STR:
            assert isinstance(dtype, pd.StringDtype), fld.name
        elif fld.nullable:
            assert dtype == pd.Int64Dtype(), fld.name
        else:
            assert dtype == np.int64, fld.name
    assert list(frame.columns) == aspect.columns


def test_nullable_int_null_is_na(tmp_path):
    row = valid_row("damage_log")
    row[raw_index("damage_log", "attacker_unit_id")] = None

    frame, _ = decode_rows(tmp_path, "damage_log", [row, valid_row("damage_log", 31)])

    assert frame["attacker_unit_id"].dtype == pd.Int64Dtype()
    assert frame["attacker_unit_id"].isna().tolist() == [True, False]


def test_bool_and_string_values(tmp_path):
    rows = [[1, "player_01", "armcom", 10, 1, 2, 3], [2, "ünïcødé ✓", "", 11, -1, -2, -3]]

    frame, _ = decode_rows(tmp_path, "start_pos", rows)

    assert frame["player_name"].tolist() == ["player_01", "ünïcødé ✓"]
    assert frame["commander_def_name"].tolist() == ["armcom", ""]


@pytest.mark.parametrize("length", [11, 13, 14, 15])
def test_short_unit_events_row_nulls(tmp_path, length):
    row = list(range(1, 16))
    row[raw_index("unit_events", "event_type")] = 2

    frame, _ = decode_rows(tmp_path, "unit_events", [row[:length]])

    record = frame.iloc[0]
    fields = ASPECTS["unit_events"].fields
    for position, fld in enumerate(fields):
        if position < length:
            assert not pd.isna(record[fld.name]), fld.name
        else:
            assert pd.isna(record[fld.name]), fld.name
    assert record["event_type"] == "FINISHED"
    assert dict(frame.dtypes) == ASPECTS["unit_events"].dtypes


@pytest.mark.parametrize("aspect_name", sorted(ASPECTS))
def test_empty_file_zero_rows(tmp_path, aspect_name):
    path = tmp_path / f"{aspect_name}.mpk"
    path.write_bytes(b"")

    frame, tally = decode_file(path, aspect_name, blocksize=4)

    assert len(frame) == 0
    assert list(frame.columns) == ASPECTS[aspect_name].columns
    assert dict(frame.dtypes) == ASPECTS[aspect_name].dtypes
    assert tally.rows_kept == 0
    assert tally.problems == []


# Errors the contract names. Each message gives the file, offset, row and field.

def expect_decode_error(tmp_path, aspect_name, data, offset, row, pattern):
    """Assert that every blocksize raises DecodeError at ``offset`` and ``row``."""
    path = tmp_path / f"{aspect_name}.mpk"
    path.write_bytes(data)
    for blocksize in BLOCKSIZES:
        with pytest.raises(DecodeError, match=pattern) as caught:
            decode_file(path, aspect_name, blocksize=blocksize)
        message = str(caught.value)
        assert message.startswith(f"invalid data in {path}: byte offset {offset}, row {row}"), \
            message
        assert caught.value.first.offset == offset
        assert caught.value.first.row == row


def rows_with_bad_second(aspect_name: str, raw_name: str, value) -> tuple[bytes, int]:
    """Return a 3-row file whose second row has ``value`` in ``raw_name``, and its offset."""
    first, second, third = (valid_row(aspect_name, frame) for frame in (1, 2, 3))
    second[raw_index(aspect_name, raw_name)] = value
    packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(first) + packer.pack(second) + packer.pack(third), len(packer.pack(first))


def test_short_row_missing_required_field(tmp_path):
    first = valid_row("unit_events", 1)
    data = msgpack.packb(first) + msgpack.packb(first[:10])
    expect_decode_error(
        tmp_path, "unit_events", data, len(msgpack.packb(first)), 1,
        r"field event_type: row too short: expected at least 11 elements \(every field up "
        r"to event_type is required\), found 10 elements")


def test_long_row_is_error(tmp_path):
    first = valid_row("map_envir_econ", 1)
    data = msgpack.packb(first) + msgpack.packb(first + [7])
    expect_decode_error(
        tmp_path, "map_envir_econ", data, len(msgpack.packb(first)), 1,
        r"row too long: expected an array of at most 3 elements, "
        r"found an array header claiming 4 elements")


def test_fractional_float_in_int_field(tmp_path):
    data, offset = rows_with_bad_second("unit_positions", "x", 2.5)
    expect_decode_error(tmp_path, "unit_positions", data, offset, 1,
                        r"field x: wrong type: expected an int64 integer, found float 2\.5")


def test_fractional_float_in_divisor_field(tmp_path):
    data, offset = rows_with_bad_second("damage_log", "damage", 0.5)
    expect_decode_error(tmp_path, "damage_log", data, offset, 1,
                        r"field damage: wrong type: expected an int64 integer, found float 0\.5")


def test_bool_in_int_field(tmp_path):
    data, offset = rows_with_bad_second("damage_log", "victim_unit_id", True)
    expect_decode_error(tmp_path, "damage_log", data, offset, 1,
                        r"field victim_unit_id: wrong type: expected an int64 integer, found bool")


def test_int_in_bool_field(tmp_path):
    data, offset = rows_with_bad_second("unit_state_snapshots", "is_stunned", 1)
    expect_decode_error(tmp_path, "unit_state_snapshots", data, offset, 1,
                        r"field is_stunned: wrong type: expected a bool, found int")


@pytest.mark.parametrize(("value", "found"), [
    (2**63, "9223372036854775808"), (2**64 - 1, "18446744073709551615"),
    (1e19, "float 1e+19"), (-1e19, "float -1e+19"), (2.0**63, "float 9.223372036854776e+18"),
])
def test_int_outside_int64(tmp_path, value, found):
    data, offset = rows_with_bad_second("unit_positions", "heading", value)
    expect_decode_error(tmp_path, "unit_positions", data, offset, 1,
                        r"field heading: integer out of range: expected an int64 integer, "
                        rf"found {re.escape(found)}$")


def test_int64_limits_valid(tmp_path):
    rows = [valid_row("unit_positions", frame) for frame in (1, 2)]
    rows[0][raw_index("unit_positions", "x")] = -(2**63)
    rows[1][raw_index("unit_positions", "x")] = 2**63 - 1

    frame, _ = decode_rows(tmp_path, "unit_positions", rows)

    assert frame["x"].tolist() == [-(2**63), 2**63 - 1]


def test_binary_in_string_field(tmp_path):
    data, offset = rows_with_bad_second("start_pos", "player_name", b"player")
    expect_decode_error(tmp_path, "start_pos", data, offset, 1,
                        r"field player_name: wrong type: expected a UTF-8 string, found binary")


def test_invalid_utf8_string(tmp_path):
    first = valid_row("start_pos")
    head = msgpack.packb(first)
    # fixarray of 7, player_id 2, a 2-byte str holding bytes that are not UTF-8.
    bad = b"\x97\x02\xa2\xff\xfe\xa1s\x05\x05\x05\x05"
    data = head + bad + head
    expect_decode_error(tmp_path, "start_pos", data, len(head), 1,
                        r"field player_name: invalid UTF-8: expected a UTF-8 string, "
                        r"found bytes b'\\xff\\xfe'")


@pytest.mark.parametrize(("aspect_name", "raw_name"),
                         [("damage_log", "victim_team_id"), ("damage_log", "is_paralyzer"),
                          ("start_pos", "player_name"), ("unit_events", "event_type"),
                          ("damage_log", "damage")])
def test_null_in_non_null_field(tmp_path, aspect_name, raw_name):
    data, offset = rows_with_bad_second(aspect_name, raw_name, None)
    expect_decode_error(tmp_path, aspect_name, data, offset, 1,
                        rf"field {raw_name}: missing value: expected a value, found null")


def test_nan_in_divisor_field(tmp_path):
    data, offset = rows_with_bad_second("damage_log", "damage", math.nan)
    expect_decode_error(tmp_path, "damage_log", data, offset, 1,
                        r"field damage: wrong type: expected an int64 integer, found float nan")
