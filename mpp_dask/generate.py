"""Write deterministic synthetic replays shaped like real Beyond All Reason exports.

A synthetic replay is a folder with every aspect file of :data:`mpp_dask.schema.ASPECTS`,
``defs.csv`` and ``game_meta.json``. The data follows one simulated match, so ids and
frames agree across aspects: a unit is CREATED before it moves, is hit, builds or is
given commands, and it appears in no time series after the frame it is DESTROYED.
``team_stats`` damage and death counters are the running sums of ``damage_log`` and
``unit_events``.

Rows are built as numpy columns in time windows and encoded to MessagePack with
numpy (:func:`encode_block`), so even gigabyte replays are written at tens of MB/s
with bounded memory.
"""

from __future__ import annotations

import csv
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mpp_dask.schema import (ASPECTS, ENUMS, FRAMES_PER_MINUTE, FRAMES_PER_SECOND, Aspect, Field,
                             RawType)

# ---------------------------------------------------------------------------
# MessagePack encoding
# ---------------------------------------------------------------------------

# The integer classes of the MessagePack spec, in this order: int64, int32, int16,
# int8, negative fixint, positive fixint, uint8, uint16, uint32, uint64. A value's
# class index is the number of bounds at or below it. This is the narrowest class,
# the one msgpack-python picks.
_INT_CLASS_BOUNDS = np.array(
    [-(1 << 31), -(1 << 15), -(1 << 7), -32, 0, 1 << 7, 1 << 8, 1 << 16, 1 << 32], dtype=np.int64
)
_INT_CLASS_MARKERS = np.array([0xD3, 0xD2, 0xD1, 0xD0, 0, 0, 0xCC, 0xCD, 0xCE, 0xCF],
                              dtype=np.uint8)
_INT_CLASS_PAYLOAD_BYTES = np.array([8, 4, 2, 1, 0, 0, 1, 2, 4, 8], dtype=np.uint8)

_NIL, _FALSE, _FLOAT32, _FLOAT64 = 0xC0, 0xC2, 0xCA, 0xCB
_FIXARRAY, _ARRAY16 = 0x90, 0xDC
_FIXSTR, _STR8, _STR16, _STR32 = 0xA0, 0xD9, 0xDA, 0xDB

# Rows encoded at once: bounds the encoder's scratch memory (about 100 bytes a row).
_ENCODE_ROWS = 1 << 17


@dataclass
class RowBlock:
    """Consecutive rows of one aspect as columns, ready for :func:`encode_block`.

    Attributes
    ----------
    columns : dict[str, numpy.ndarray]
        Raw field name to values, one entry per field of the aspect: int64 for int
        fields, bool for bool fields, str for str fields.
    nulls : dict[str, numpy.ndarray]
        Raw field name to a bool mask that is True where the value is nil. Fields
        without a mask have no nils.
    floats : dict[str, numpy.ndarray]
        Raw field name to a bool mask that is True where an int field is written as a
        whole-number float (float32 when the value is exact in float32, else float64).
    lengths : numpy.ndarray or None
        Elements written per row. Fields at or past a row's length are left out, as in
        the short rows of real exports. None writes every field.
    """

    columns: dict[str, np.ndarray]
    nulls: dict[str, np.ndarray] = field(default_factory=dict)
    floats: dict[str, np.ndarray] = field(default_factory=dict)
    lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    @staticmethod
    def concat(blocks: list[RowBlock]) -> RowBlock:
        """Return the rows of ``blocks`` in order as one block."""
        if len(blocks) == 1:
            return blocks[0]

        def joined_masks(kind: str) -> dict[str, np.ndarray]:
            masks = [getattr(block, kind) for block in blocks]
            names = {name for block_masks in masks for name in block_masks}
            return {name: np.concatenate([block_masks.get(name, np.zeros(len(block), bool))
                                          for block, block_masks in zip(blocks, masks)])
                    for name in sorted(names)}

        lengths = None
        if any(block.lengths is not None for block in blocks):
            lengths = np.concatenate([
                np.full(len(block), len(block.columns)) if block.lengths is None
                else block.lengths
                for block in blocks])
        columns = {name: np.concatenate([block.columns[name] for block in blocks])
                   for name in blocks[0].columns}
        return RowBlock(columns=columns, nulls=joined_masks("nulls"),
                        floats=joined_masks("floats"), lengths=lengths)

    def rows(self, start: int, stop: int) -> RowBlock:
        """Return rows ``start`` to ``stop`` (exclusive) as a new block."""
        return RowBlock(
            columns={name: values[start:stop] for name, values in self.columns.items()},
            nulls={name: mask[start:stop] for name, mask in self.nulls.items()},
            floats={name: mask[start:stop] for name, mask in self.floats.items()},
            lengths=None if self.lengths is None else self.lengths[start:stop],
        )


def encode_block(aspect: Aspect, block: RowBlock) -> bytes:
    """Encode the rows of a block as concatenated MessagePack arrays.

    Every value gets the narrowest standard encoding, the one msgpack-python's packer
    writes, so ``msgpack.packb(row)`` gives the same bytes for each row. Whole-number
    floats are the exception when they fit float32, because msgpack-python writes
    floats as float64 unless ``use_single_float`` is set.

    Parameters
    ----------
    aspect : Aspect
        The aspect whose field order, raw types and nullability the rows follow.
    block : RowBlock
        The rows as columns.

    Returns
    -------
    bytes
        The rows in file format.

    Raises
    ------
    ValueError
        If the block's columns are not the aspect's fields, a non-nullable field has
        a nil or a row is shorter than the aspect allows.
    """
    _check_block(aspect, block)
    count = len(block)
    if count == 0:
        return b""
    lengths = block.lengths
    if lengths is None:
        lengths = np.full(count, aspect.max_row_length, dtype=np.int64)

    # Each value takes a slot of cells as wide as the widest value of its column.
    # Row bytes are the cells, in row order, that fall within each value's width.
    columns = [_array_header_parts(lengths)]
    widths = [columns[0].widths()]
    for position, fld in enumerate(aspect.fields):
        columns.append(_field_parts(fld, block))
        widths.append(np.where(lengths > position, columns[-1].widths(), 0))

    slots = [column.slot() for column in columns]
    matrix = np.empty((count, sum(slots)), dtype=np.uint8)
    keep = np.empty((count, sum(slots)), dtype=bool)
    offset = 0
    for column, column_widths, slot in zip(columns, widths, slots):
        column.fill(matrix[:, offset:offset + slot])
        keep[:, offset:offset + slot] = np.arange(slot) < column_widths[:, None]
        offset += slot
    return matrix[keep].tobytes()


def _check_block(aspect: Aspect, block: RowBlock) -> None:
    expected = [fld.raw_name for fld in aspect.fields]
    if sorted(block.columns) != sorted(expected):
        raise ValueError(f"{aspect.name}: block columns {sorted(block.columns)} "
                         f"are not the aspect's fields {expected}")
    for fld in aspect.fields:
        if fld.raw_name in block.nulls and not fld.nullable and block.nulls[fld.raw_name].any():
            raise ValueError(f"{aspect.name}: field {fld.raw_name} is not nullable "
                             "but the block has nils in it")
    if block.lengths is not None and len(block) and (
            block.lengths.min() < aspect.min_row_length
            or block.lengths.max() > aspect.max_row_length):
        raise ValueError(f"{aspect.name}: row lengths must be between "
                         f"{aspect.min_row_length} and {aspect.max_row_length}, got "
                         f"{block.lengths.min()} to {block.lengths.max()}")


class _Parts(NamedTuple):
    """Encoded values of one column: a marker byte, then ``size`` payload bytes.

    ``payload`` stores the payload bytes in the high end of a uint64, so its
    big-endian bytes start with them.
    """

    marker: np.ndarray
    payload: np.ndarray
    size: np.ndarray

    def widths(self) -> np.ndarray:
        return 1 + self.size.astype(np.int64)

    def slot(self) -> int:
        return 1 + int(self.size.max())

    def fill(self, cells: np.ndarray) -> None:
        cells[:, 0] = self.marker
        if cells.shape[1] > 1:
            payload_bytes = self.payload.astype(">u8").view(np.uint8).reshape(-1, 8)
            cells[:, 1:] = payload_bytes[:, :cells.shape[1] - 1]


class _StrCells(NamedTuple):
    """Encoded str values of one column, already padded to the widest."""

    cells: np.ndarray
    value_widths: np.ndarray

    def widths(self) -> np.ndarray:
        return self.value_widths

    def slot(self) -> int:
        return self.cells.shape[1]

    def fill(self, cells: np.ndarray) -> None:
        cells[:] = self.cells


def _field_parts(fld: Field, block: RowBlock) -> _Parts | _StrCells:
    values = block.columns[fld.raw_name]
    if fld.raw_type is RawType.STR:
        return _str_cells(values)
    if fld.raw_type is RawType.BOOL:
        parts = _Parts(_FALSE + values.astype(np.uint8), np.zeros(len(values), dtype=np.uint64),
                       np.zeros(len(values), dtype=np.uint8))
    else:
        values = np.asarray(values, dtype=np.int64)
        parts = _int_parts(values)
        if fld.raw_name in block.floats:
            as_float = block.floats[fld.raw_name]
            parts = _Parts(*(np.where(as_float, float_part, int_part)
                             for float_part, int_part in zip(_whole_float_parts(values), parts)))
    if fld.raw_name in block.nulls:
        null = block.nulls[fld.raw_name]
        parts = _Parts(np.where(null, np.uint8(_NIL), parts.marker), parts.payload,
                       np.where(null, np.uint8(0), parts.size))
    return parts


def _int_parts(values: np.ndarray) -> _Parts:
    kind = np.zeros(len(values), dtype=np.int8)
    for bound in _INT_CLASS_BOUNDS:
        kind += values >= bound
    size = _INT_CLASS_PAYLOAD_BYTES[kind]
    # Fixints are the values -32 to 127, whose marker byte is the value itself.
    marker = np.where(size == 0, (values & 0xFF).astype(np.uint8), _INT_CLASS_MARKERS[kind])
    # Shifting the two's complement bits to the top keeps exactly the payload bytes,
    # in order, when the result is written big-endian. A shift of 64 gives 0 in numpy.
    shift = (64 - 8 * size.astype(np.uint64)).astype(np.uint64)
    return _Parts(marker, np.left_shift(values.view(np.uint64), shift), size)


def _whole_float_parts(values: np.ndarray) -> _Parts:
    as_float64 = values.astype(np.float64)
    as_float32 = as_float64.astype(np.float32)
    single = as_float32.astype(np.float64) == as_float64
    single_payload = np.left_shift(as_float32.view(np.uint32).astype(np.uint64), np.uint64(32))
    return _Parts(np.where(single, np.uint8(_FLOAT32), np.uint8(_FLOAT64)),
                  np.where(single, single_payload, as_float64.view(np.uint64)),
                  np.where(single, np.uint8(4), np.uint8(8)))


def _array_header_parts(lengths: np.ndarray) -> _Parts:
    short = lengths <= 15
    return _Parts(np.where(short, (_FIXARRAY | lengths).astype(np.uint8), np.uint8(_ARRAY16)),
                  np.where(short, 0, lengths.astype(np.uint64) << np.uint64(48)).astype(np.uint64),
                  np.where(short, np.uint8(0), np.uint8(2)))


def _str_cells(values: np.ndarray) -> _StrCells:
    # Only start_pos has str fields (one row per player), so strings are encoded
    # value by value.
    encoded = [_str_bytes(str(value)) for value in values]
    widths = np.array([len(item) for item in encoded], dtype=np.int64)
    cells = np.zeros((len(encoded), int(widths.max())), dtype=np.uint8)
    for row, item in enumerate(encoded):
        cells[row, :len(item)] = np.frombuffer(item, dtype=np.uint8)
    return _StrCells(cells, widths)


def _str_bytes(text: str) -> bytes:
    data = text.encode("utf-8")
    size = len(data)
    if size < 32:
        return bytes([_FIXSTR | size]) + data
    if size < 1 << 8:
        return bytes([_STR8, size]) + data
    if size < 1 << 16:
        return bytes([_STR16]) + size.to_bytes(2, "big") + data
    return bytes([_STR32]) + size.to_bytes(4, "big") + data


# ---------------------------------------------------------------------------
# Unit definitions
# ---------------------------------------------------------------------------

COMMANDER, FACTORY, CONSTRUCTOR, GROUND, AIRCRAFT, ECONOMY, DEFENSE = range(7)
_MOBILE_ROLES = (COMMANDER, CONSTRUCTOR, GROUND, AIRCRAFT)
_ARMED_ROLES = (COMMANDER, GROUND, AIRCRAFT, DEFENSE)
_BUILT_BY_FACTORY = (CONSTRUCTOR, GROUND, AIRCRAFT)

# Share of each role among the units a team builds after its first factory.
_ROLE_SHARES = {FACTORY: 0.03, CONSTRUCTOR: 0.08, GROUND: 0.50, AIRCRAFT: 0.08,
                ECONOMY: 0.24, DEFENSE: 0.07}

_FACTIONS = (("aur", "Aurora"), ("kro", "Krona"))

_WEAPON_BEAM, _WEAPON_PARALYZER, _WEAPON_SHELL = 1, 2, 3


@dataclass(frozen=True)
class _DefTemplate:
    """One made-up unit type, built by each faction under its own prefix."""

    suffix: str
    human_name: str
    tooltip: str
    role: int
    max_health: int
    max_range: int
    speed: float          # elmos per frame at full speed; 0 for buildings
    build_seconds: int
    weapon: int = 0       # 0 unarmed, else _WEAPON_BEAM, _WEAPON_PARALYZER or _WEAPON_SHELL
    altitude: int = 0     # cruise height above ground, aircraft only
    metal_make: int = 0   # unit_economy rates in tenths per second
    metal_use: int = 0
    energy_make: int = 0
    energy_use: int = 0
    weight: float = 1.0   # how often a team builds it, relative to its role's other types


_DEF_TEMPLATES = (
    _DefTemplate("com", "Commander", "Commander", COMMANDER, 3700, 300, 1.3, 0,
                 weapon=_WEAPON_BEAM, metal_make=20, energy_make=250),
    _DefTemplate("botyard", "Bot Yard", "Produces light bots", FACTORY, 2900, 0, 0, 40,
                 metal_use=60, energy_use=800),
    _DefTemplate("motorpool", "Motor Pool", "Produces light vehicles", FACTORY, 3600, 0, 0, 55,
                 metal_use=90, energy_use=1100),
    _DefTemplate("hangar", "Hangar", "Produces light aircraft", FACTORY, 2100, 0, 0, 70,
                 metal_use=70, energy_use=1800),
    _DefTemplate("mason", "Mason", "Construction bot", CONSTRUCTOR, 600, 0, 1.1, 14),
    _DefTemplate("hauler", "Hauler", "Construction vehicle", CONSTRUCTOR, 1100, 0, 1.5, 18),
    _DefTemplate("runner", "Runner", "Fast raider bot", GROUND, 280, 180, 2.8, 6,
                 weapon=_WEAPON_BEAM),
    _DefTemplate("lancer", "Lancer", "Light laser bot", GROUND, 700, 260, 1.6, 10,
                 weapon=_WEAPON_BEAM),
    _DefTemplate("mortar", "Mortar", "Artillery bot", GROUND, 450, 700, 1.3, 14,
                 weapon=_WEAPON_SHELL),
    _DefTemplate("crawler", "Crawler", "Light tank", GROUND, 1600, 300, 1.9, 18,
                 weapon=_WEAPON_SHELL),
    _DefTemplate("jolt", "Jolt", "Paralyzer bot", GROUND, 500, 250, 1.7, 12,
                 weapon=_WEAPON_PARALYZER, weight=0.05),
    _DefTemplate("bastion", "Bastion", "Heavy assault tank", GROUND, 4200, 380, 1.0, 45,
                 weapon=_WEAPON_SHELL, weight=0.3),
    _DefTemplate("kestrel", "Kestrel", "Fighter aircraft", AIRCRAFT, 200, 500, 7.0, 12,
                 weapon=_WEAPON_SHELL, altitude=110),
    _DefTemplate("condor", "Condor", "Bomber aircraft", AIRCRAFT, 900, 80, 5.5, 25,
                 weapon=_WEAPON_SHELL, altitude=150),
    _DefTemplate("drill", "Metal Drill", "Extracts metal", ECONOMY, 300, 0, 0, 8,
                 metal_make=20, energy_use=30),
    _DefTemplate("solar", "Solar Panel", "Produces energy", ECONOMY, 500, 0, 0, 10,
                 energy_make=200),
    _DefTemplate("turbine", "Wind Turbine", "Produces energy from wind", ECONOMY, 200, 0, 0, 8),
    _DefTemplate("watch", "Watch Tower", "Light laser turret", DEFENSE, 900, 450, 0, 16,
                 weapon=_WEAPON_BEAM),
    _DefTemplate("spire", "Flak Spire", "Anti-air turret", DEFENSE, 1400, 800, 0, 25,
                 weapon=_WEAPON_SHELL),
)

# Wind turbines make energy in proportion to map_envir_econ.wind_strength.
_TURBINE_SUFFIX = "turbine"


@dataclass(frozen=True)
class UnitDefs:
    """The made-up unit definitions of ``defs.csv``, as parallel arrays."""

    ids: np.ndarray
    names: list[str]
    human_names: list[str]
    tooltips: list[str]
    faction: np.ndarray
    role: np.ndarray
    max_health: np.ndarray
    max_range: np.ndarray
    speed: np.ndarray
    build_frames: np.ndarray
    weapon_id: np.ndarray   # 0 for unarmed defs
    beam: np.ndarray
    paralyzer: np.ndarray
    altitude: np.ndarray
    turbine: np.ndarray
    metal_make: np.ndarray
    metal_use: np.ndarray
    energy_make: np.ndarray
    energy_use: np.ndarray
    weight: np.ndarray

    def of_role(self, faction: int, role: int) -> np.ndarray:
        """Return the def rows of one faction and role."""
        return np.flatnonzero((self.faction == faction) & (self.role == role))


def _unit_defs() -> UnitDefs:
    entries = [(prefix + template.suffix, faction, label, template)
               for faction, (prefix, label) in enumerate(_FACTIONS)
               for template in _DEF_TEMPLATES]
    entries.sort(key=lambda entry: entry[0])  # Real defs.csv ids follow name order.
    templates = [entry[3] for entry in entries]

    def column(attribute: str, dtype: type = np.int64) -> np.ndarray:
        return np.array([getattr(t, attribute) for t in templates], dtype=dtype)

    weapon_kind = column("weapon")
    armed = weapon_kind > 0
    # Weapon ids are made up: the armed defs numbered in name order from 101.
    weapon_id = np.where(armed, 100 + np.cumsum(armed), 0)
    return UnitDefs(
        ids=np.arange(1, len(entries) + 1, dtype=np.int64),
        names=[entry[0] for entry in entries],
        human_names=[f"{entry[2]} {entry[3].human_name}" for entry in entries],
        tooltips=[t.tooltip for t in templates],
        faction=np.array([entry[1] for entry in entries], dtype=np.int64),
        role=column("role"),
        max_health=column("max_health"),
        max_range=column("max_range"),
        speed=column("speed", np.float64),
        build_frames=column("build_seconds") * FRAMES_PER_SECOND,
        weapon_id=weapon_id,
        beam=weapon_kind == _WEAPON_BEAM,
        paralyzer=weapon_kind == _WEAPON_PARALYZER,
        altitude=column("altitude"),
        turbine=np.array([t.suffix == _TURBINE_SUFFIX for t in templates]),
        metal_make=column("metal_make"),
        metal_use=column("metal_use"),
        energy_make=column("energy_make"),
        energy_use=column("energy_use"),
        weight=column("weight", np.float64),
    )


# ---------------------------------------------------------------------------
# The match plan: teams, units and their life cycles
# ---------------------------------------------------------------------------

# Map size in elmos (a Spring map square is 512 elmos): 16 x 24 squares.
MAP_SQUARES = (16, 24)
_ELMOS_PER_SQUARE = 512

# Sampling periods in frames, as in a real 8-vs-8 export.
POSITION_STEP = 150
SNAPSHOT_STEP = 150
TEAM_STATS_STEP = 300
ENVIRONMENT_STEP = 300
CONSTRUCTION_STEP = 60
COMMAND_STEP = 30
UNIT_ECONOMY_STEP = 900

_SNAPSHOT_SHARE = 0.25          # share of live units in each unit_state_snapshots tick
_ACTIONS_PER_TEAM_MINUTE = 30   # group orders; BUILD orders come on top
_PROJECTILE_ID_LIMIT = 1 << 14  # projectile ids wrap here, as in a real export
_WINDOW_FRAMES = 300            # frames encoded together, which bounds memory

# Chance that a finished unit dies before the end, and its mean lifetime as a share
# of the match. Commanders and factories never die.
_DEATH_CHANCE = {CONSTRUCTOR: 0.5, GROUND: 0.8, AIRCRAFT: 0.8, ECONOMY: 0.3, DEFENSE: 0.5}
_MEAN_LIFE_SHARE = 0.25

# Cumulative energy counters of real exports become float32 whole numbers from
# 2**24 on, where float32 stops holding every integer.
_FLOAT32_EXACT_LIMIT = 1 << 24
_FLOAT_COUNTERS = ("energy_used", "energy_produced")


@dataclass
class Units:
    """Every unit of the match as parallel arrays, ordered by creation frame.

    Frames past the end of the match mean "never": ``destroyed`` and
    ``transfer_frame`` are ``end_frame + 1`` for units that survive or stay with
    their team.
    """

    id: np.ndarray
    team: np.ndarray          # team at creation
    def_row: np.ndarray       # row in UnitDefs
    role: np.ndarray
    created: np.ndarray
    finished: np.ndarray
    destroyed: np.ndarray
    builder: np.ndarray       # unit row of the builder, -1 for commanders
    queue_length: np.ndarray  # factory queue length when built by a factory, else -1
    killer: np.ndarray        # unit row of the killer, -1 when unknown or alive
    transfer_frame: np.ndarray  # frame of a transfer to an ally
    new_team: np.ndarray
    spawn_x: np.ndarray
    spawn_z: np.ndarray
    goal_x: np.ndarray
    goal_z: np.ndarray
    travel_frames: np.ndarray
    wander: np.ndarray        # amplitude in elmos of the wandering around the goal
    omega_x: np.ndarray       # radians per frame
    omega_z: np.ndarray
    phase_x: np.ndarray
    phase_z: np.ndarray

    def team_at(self, rows: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """Return the team of each unit row at the matching frame."""
        return np.where(frames >= self.transfer_frame[rows], self.new_team[rows], self.team[rows])


@dataclass
class Hits:
    """Every damage_log hit, ordered by frame. ``attacker`` is -1 when unknown."""

    frame: np.ndarray
    victim: np.ndarray
    attacker: np.ndarray
    damage: np.ndarray        # tenths
    weapon_id: np.ndarray
    projectile_id: np.ndarray
    paralyzer: np.ndarray


@dataclass
class Commands:
    """Every commands_log row, ordered by frame. ``cmd_name`` 0 is null."""

    frame: np.ndarray
    unit: np.ndarray
    cmd_id: np.ndarray
    cmd_name: np.ndarray
    cmd_tag: np.ndarray
    target: np.ndarray        # -1 is null
    x: np.ndarray
    z: np.ndarray


@dataclass
class Builds:
    """Construction and assist jobs, for construction_log."""

    builder: np.ndarray
    target: np.ndarray
    first_tick: np.ndarray
    last_tick: np.ndarray
    assist: np.ndarray
    null_target_team: np.ndarray


@dataclass
class ReplayPlan:
    """One simulated match, from which every file of the replay is written."""

    seed: int
    teams: int
    end_frame: int
    ally: np.ndarray          # ally team of each player team
    faction: np.ndarray
    start_x: np.ndarray
    start_z: np.ndarray
    economy_scale: np.ndarray
    defs: UnitDefs
    units: Units
    builds: Builds
    hits: Hits
    commands: Commands

    @property
    def gaia_team(self) -> int:
        """Team id of the engine's Gaia team: the one after the players."""
        return self.teams


def plan_replay(*, minutes: float = 10, teams: int = 4, seed: int = 0,
                units_per_team: int | None = None) -> ReplayPlan:
    """Simulate a match: teams, units, their life cycles, hits and orders.

    Parameters
    ----------
    minutes, teams, seed, units_per_team
        As for :func:`generate_replay`.

    Returns
    -------
    ReplayPlan

    Raises
    ------
    ValueError
        If an argument is out of range.
    """
    _check_arguments(minutes, teams, seed, units_per_team)
    if units_per_team is None:
        units_per_team = max(10, round(20 * minutes))
    rng = np.random.default_rng(seed)
    end_frame = max(1, round(minutes * FRAMES_PER_MINUTE))
    map_width, map_height = (squares * _ELMOS_PER_SQUARE for squares in MAP_SQUARES)
    defs = _unit_defs()

    ally = (np.arange(teams) >= teams // 2).astype(np.int64)
    faction = rng.integers(0, len(_FACTIONS), teams)
    start_x, start_z = _start_positions(rng, ally, map_width, map_height)
    # Economy strength per team. The strongest team's energy counters pass 2**24 in
    # the last sixth of the match, whatever its length.
    economy_scale = rng.uniform(0.5, 1.0, teams)
    economy_scale *= 1.3 / economy_scale.max()

    units = _plan_units(rng, defs, teams, faction, units_per_team, end_frame)
    builds = _assign_builders(rng, units, defs, end_frame)
    _assign_transfers(rng, units, ally, end_frame)
    _assign_killers(rng, units, ally, end_frame)
    _place_units(rng, units, defs, start_x, start_z, map_width, map_height)
    hits = _plan_hits(rng, units, defs, ally, end_frame)
    commands = _plan_commands(rng, units, builds, defs, teams, end_frame, map_width, map_height)
    return ReplayPlan(seed=seed, teams=teams, end_frame=end_frame, ally=ally, faction=faction,
                      start_x=start_x, start_z=start_z, economy_scale=economy_scale, defs=defs,
                      units=units,
                      builds=builds, hits=hits, commands=commands)


def _check_arguments(minutes: float, teams: int, seed: int, units_per_team: int | None) -> None:
    if not minutes > 0:
        raise ValueError(f"minutes must be positive, got {minutes}")
    if teams < 2:
        raise ValueError(f"teams must be at least 2 (two ally teams), got {teams}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if units_per_team is not None and units_per_team < 2:
        raise ValueError("units_per_team must be at least 2 (a commander and a factory), "
                         f"got {units_per_team}")


def _start_positions(rng: np.random.Generator, ally: np.ndarray, width: int,
                     height: int) -> tuple[np.ndarray, np.ndarray]:
    # Ally team 0 starts near the top edge (large z), ally team 1 near the bottom.
    start_x = np.zeros(len(ally))
    start_z = np.zeros(len(ally))
    for side in (0, 1):
        members = np.flatnonzero(ally == side)
        slots = (np.arange(len(members)) + 0.5) / len(members)
        start_x[members] = width * (slots + rng.uniform(-0.3, 0.3, len(members)) / len(members))
        band = 0.88 if side == 0 else 0.12
        start_z[members] = height * (band + rng.uniform(-0.05, 0.05, len(members)))
    return np.round(start_x), np.round(start_z)


def _plan_units(rng: np.random.Generator, defs: UnitDefs, teams: int, faction: np.ndarray,
                units_per_team: int, end_frame: int) -> Units:
    """Draw each team's units with creation and finish frames, ordered by creation."""
    roles = np.array(list(_ROLE_SHARES))
    shares = np.array(list(_ROLE_SHARES.values()))
    per_team = []
    for team in range(teams):
        role = np.empty(units_per_team, dtype=np.int64)
        role[0], role[1] = COMMANDER, FACTORY
        role[2:] = rng.choice(roles, size=units_per_team - 2, p=shares / shares.sum())
        def_row = np.empty(units_per_team, dtype=np.int64)
        for each_role in np.unique(role):
            options = defs.of_role(faction[team], each_role)
            members = np.flatnonzero(role == each_role)
            weight = defs.weight[options] / defs.weight[options].sum()
            def_row[members] = rng.choice(options, len(members), p=weight)
        def_row[1] = defs.of_role(faction[team], FACTORY)[0]

        # The commander starts the first factory within seconds. Production then
        # speeds up, so creation frames crowd towards the end.
        created = np.zeros(units_per_team, dtype=np.int64)
        created[1] = rng.integers(60, 300)
        opening = created[1] + 300
        later = rng.uniform(0, 1, units_per_team - 2) ** 0.6
        created[2:] = opening + (later * max(end_frame - opening, 0)).astype(np.int64)
        build_speed = rng.uniform(0.7, 1.3, units_per_team)
        build = (defs.build_frames[def_row] * build_speed).astype(np.int64)
        finished = created + build

        # Factory-built units wait for the first factory.
        from_factory = np.isin(role, _BUILT_BY_FACTORY)
        created = np.where(from_factory, np.maximum(created, finished[1] + 30), created)
        finished = created + build
        per_team.append((np.full(units_per_team, team), role, def_row, created, finished))

    team, role, def_row, created, finished = (np.concatenate(parts) for parts in zip(*per_team))
    keep = np.flatnonzero(created <= end_frame)
    order = keep[np.argsort(created[keep], kind="stable")]
    count = len(order)
    never = np.full(count, end_frame + 1, dtype=np.int64)
    # Ids are unique and scattered like engine unit ids (below 32000 in a real 8-vs-8 export).
    id_space = max(32000, 2 * count)
    return Units(
        id=rng.choice(id_space, size=count, replace=False).astype(np.int64),
        team=team[order], def_row=def_row[order], role=role[order],
        created=created[order], finished=finished[order],
        destroyed=_draw_deaths(rng, role[order], finished[order], end_frame),
        builder=np.full(count, -1), queue_length=np.full(count, -1),
        killer=np.full(count, -1), transfer_frame=never.copy(), new_team=team[order].copy(),
        **{name: np.zeros(count) for name in (
            "spawn_x", "spawn_z", "goal_x", "goal_z", "travel_frames", "wander",
            "omega_x", "omega_z", "phase_x", "phase_z")},
    )


def _draw_deaths(rng: np.random.Generator, role: np.ndarray, finished: np.ndarray,
                 end_frame: int) -> np.ndarray:
    chance = np.zeros(len(role))
    for mortal_role, role_chance in _DEATH_CHANCE.items():
        chance[role == mortal_role] = role_chance
    life = rng.exponential(_MEAN_LIFE_SHARE * end_frame, len(role)).astype(np.int64) + 30
    dies = rng.uniform(0, 1, len(role)) < chance
    # Counting from the construction tick after the finish keeps the unit alive
    # through its CONSTRUCTION_END row.
    destroyed = np.where(dies, _ceil_to(finished, CONSTRUCTION_STEP) + life, end_frame + 1)
    return np.minimum(destroyed, end_frame + 1)


def _pick_units(rng: np.random.Generator, pool: np.ndarray, pool_ready: np.ndarray,
                ready_by: np.ndarray, alive_after: np.ndarray, destroyed: np.ndarray,
                tries: int = 4) -> np.ndarray:
    """Pick, per request, a random pool unit ready by a frame and alive after another.

    ``pool`` is sorted by ``pool_ready``. Returns unit rows, -1 where ``tries``
    random draws found none.
    """
    picked = np.full(len(ready_by), -1, dtype=np.int64)
    ready_count = np.searchsorted(pool_ready, ready_by, side="right")
    for _ in range(tries):
        open_requests = np.flatnonzero((picked < 0) & (ready_count > 0))
        if len(open_requests) == 0:
            break
        draw = rng.uniform(0, 1, len(open_requests)) * ready_count[open_requests]
        candidate = pool[draw.astype(np.int64)]
        alive = destroyed[candidate] > alive_after[open_requests]
        picked[open_requests[alive]] = candidate[alive]
    return picked


def _ceil_to(frames: np.ndarray, step: int) -> np.ndarray:
    return -(-frames // step) * step


def _assign_builders(rng: np.random.Generator, units: Units, defs: UnitDefs,
                     end_frame: int) -> Builds:
    """Give every built unit a builder and some buildings an assisting builder.

    Factories build mobile units; the commander or a constructor builds
    buildings. A builder's life is stretched to outlast its jobs.
    """
    first_tick = _ceil_to(units.created, CONSTRUCTION_STEP)
    last_tick = _ceil_to(units.finished, CONSTRUCTION_STEP)
    commander_of = {int(units.team[row]): row for row in np.flatnonzero(units.role == COMMANDER)}
    built = np.flatnonzero(units.role != COMMANDER)
    assist_rows, assisters, assist_starts = [], [], []

    for team, commander in commander_of.items():
        mine = built[units.team[built] == team]
        by_factory = mine[np.isin(units.role[mine], _BUILT_BY_FACTORY)]
        buildings = mine[~np.isin(units.role[mine], _BUILT_BY_FACTORY)]

        factories = mine[units.role[mine] == FACTORY]
        factories = factories[np.argsort(units.finished[factories], kind="stable")]
        units.builder[by_factory] = _pick_units(
            rng, factories, units.finished[factories], units.created[by_factory],
            units.created[by_factory], units.destroyed)
        units.queue_length[by_factory] = _draw_queue_lengths(rng, len(by_factory))

        constructors = mine[units.role[mine] == CONSTRUCTOR]
        constructors = constructors[np.argsort(units.finished[constructors], kind="stable")]
        builder = _pick_units(rng, constructors, units.finished[constructors],
                              units.created[buildings], units.created[buildings],
                              units.destroyed)
        by_commander = (builder < 0) | (rng.uniform(0, 1, len(buildings)) < 0.3)
        units.builder[buildings] = np.where(by_commander, commander, builder)

        # About one building in six gets a second builder for part of its build.
        helped = buildings[rng.uniform(0, 1, len(buildings)) < 0.15]
        helped = helped[last_tick[helped] - first_tick[helped] >= 2 * CONSTRUCTION_STEP]
        ticks = (last_tick[helped] - first_tick[helped]) // CONSTRUCTION_STEP
        start = first_tick[helped] + CONSTRUCTION_STEP * rng.integers(1, ticks)
        helper = _pick_units(rng, constructors, units.finished[constructors], start, start,
                             units.destroyed)
        helper = np.where(helper < 0, commander, helper)
        distinct = helper != units.builder[helped]
        assist_rows.append(helped[distinct])
        assisters.append(helper[distinct])
        assist_starts.append(start[distinct])

    assist_target = np.concatenate(assist_rows)
    assister = np.concatenate(assisters)
    builder = np.concatenate([units.builder[built], assister])
    target = np.concatenate([built, assist_target])
    job_last = last_tick[target]
    np.maximum.at(units.destroyed, builder, np.minimum(job_last + 1, end_frame + 1))
    return Builds(
        builder=builder, target=target,
        first_tick=np.concatenate([first_tick[built], np.concatenate(assist_starts)]),
        last_tick=job_last,
        assist=np.concatenate([np.zeros(len(built), bool), np.ones(len(assist_target), bool)]),
        null_target_team=rng.uniform(0, 1, len(target)) < 0.01,
    )


def _draw_queue_lengths(rng: np.random.Generator, count: int) -> np.ndarray:
    # Mostly short queues, with the occasional long batch order.
    short = rng.geometric(0.5, count) - 1
    return np.where(rng.uniform(0, 1, count) < 0.08, rng.integers(10, 60, count), short)


def _assign_transfers(rng: np.random.Generator, units: Units, ally: np.ndarray,
                      end_frame: int) -> None:
    """Give a few combat units to an ally at a random frame of their life."""
    candidates = np.flatnonzero(np.isin(units.role, (GROUND, AIRCRAFT))
                                & (units.finished < np.minimum(units.destroyed, end_frame)))
    chosen = candidates[rng.uniform(0, 1, len(candidates)) < 0.03]
    for row in chosen:
        team = units.team[row]
        allies = np.flatnonzero((ally == ally[team]) & (np.arange(len(ally)) != team))
        if len(allies) == 0:
            continue
        last = min(units.destroyed[row], end_frame + 1)
        units.transfer_frame[row] = rng.integers(units.finished[row] + 1, last)
        units.new_team[row] = rng.choice(allies)


def _assign_killers(rng: np.random.Generator, units: Units, ally: np.ndarray,
                    end_frame: int) -> None:
    """Name an enemy killer for most destroyed units."""
    victims = np.flatnonzero(units.destroyed <= end_frame)
    victims = victims[rng.uniform(0, 1, len(victims)) < 0.7]
    armed = np.flatnonzero(np.isin(units.role, _ARMED_ROLES))
    for side in (0, 1):
        pool = armed[ally[units.team[armed]] != side]
        pool = pool[np.argsort(units.finished[pool], kind="stable")]
        mine = victims[ally[units.team[victims]] == side]
        death = units.destroyed[mine]
        units.killer[mine] = _pick_units(rng, pool, units.finished[pool], death - 30, death,
                                         units.destroyed)


def _place_units(rng: np.random.Generator, units: Units, defs: UnitDefs, start_x: np.ndarray,
                 start_z: np.ndarray, width: int, height: int) -> None:
    """Set where units appear, where they head and how they wander there."""
    count = len(units.id)
    angle = rng.uniform(0, 2 * np.pi, count)
    radius = 150 + 1300 * np.sqrt(rng.uniform(0, 1, count))
    base_x = start_x[units.team] + radius * np.cos(angle)
    base_z = start_z[units.team] + radius * np.sin(angle)

    # Buildings stand in the base and commanders at their start position; units
    # from a factory appear next to it.
    mobile = np.isin(units.role, _MOBILE_ROLES)
    commander = units.role == COMMANDER
    units.spawn_x[:] = np.where(commander, start_x[units.team], base_x)
    units.spawn_z[:] = np.where(commander, start_z[units.team], base_z)
    from_factory = np.flatnonzero(np.isin(units.role, _BUILT_BY_FACTORY))
    factory = units.builder[from_factory]
    units.spawn_x[from_factory] = units.spawn_x[factory] + rng.normal(0, 40, len(factory))
    units.spawn_z[from_factory] = units.spawn_z[factory] + rng.normal(0, 40, len(factory))

    # Fighters head for the middle of the map where the ally teams meet;
    # constructors and commanders stay near their base.
    front_x = rng.uniform(0.05, 0.95, count) * width
    front_z = height * np.clip(rng.normal(0.5, 0.12, count), 0.02, 0.98)
    fighter = np.isin(units.role, (GROUND, AIRCRAFT))
    near_base = np.where(commander, 0.3, 1.0)
    units.goal_x[:] = np.where(fighter, front_x,
                               units.spawn_x + near_base * (base_x - start_x[units.team]))
    units.goal_z[:] = np.where(fighter, front_z,
                               units.spawn_z + near_base * (base_z - start_z[units.team]))
    units.goal_x[~mobile] = units.spawn_x[~mobile]
    units.goal_z[~mobile] = units.spawn_z[~mobile]

    speed = np.maximum(defs.speed[units.def_row], 0.1)
    distance = np.hypot(units.goal_x - units.spawn_x, units.goal_z - units.spawn_z)
    units.travel_frames[:] = np.maximum(distance / speed, 1)

    wander = np.select(
        [units.role == GROUND, units.role == AIRCRAFT, units.role == CONSTRUCTOR, commander],
        [rng.uniform(80, 350, count), rng.uniform(300, 700, count),
         rng.uniform(50, 250, count), rng.uniform(30, 120, count)], 0.0)
    # Some fighters hold their position once there, so their velocity is 0.
    holds_position = (units.role == GROUND) & (rng.uniform(0, 1, count) < 0.3)
    units.wander[:] = np.where(holds_position, 0.0, wander)
    units.omega_x[:] = 2 * np.pi / rng.uniform(1200, 3600, count)
    units.omega_z[:] = 2 * np.pi / rng.uniform(1200, 3600, count)
    units.phase_x[:] = rng.uniform(0, 2 * np.pi, count)
    units.phase_z[:] = rng.uniform(0, 2 * np.pi, count)


def _plan_hits(rng: np.random.Generator, units: Units, defs: UnitDefs, ally: np.ndarray,
               end_frame: int) -> Hits:
    """Draw the hits: a burst before every death, and skirmishes units survive."""
    armed_def = defs.weapon_id > 0

    # Lethal bursts: by the killer, or by an unknown attacker (a unit that died
    # before its shot landed) for a tenth of the deaths without a killer.
    dead = np.flatnonzero(units.destroyed <= end_frame)
    unknown = units.killer[dead] < 0
    lethal = dead[~unknown | (rng.uniform(0, 1, len(dead)) < 0.1)]
    lethal_end = units.destroyed[lethal]
    killer = units.killer[lethal]
    earliest = np.maximum(units.finished[lethal],
                          np.where(killer >= 0, units.finished[killer], 0))
    lethal_start = np.maximum(lethal_end - rng.integers(30, 600, len(lethal)), earliest)

    # Skirmishes: a burst at a random frame of a unit's finished life, by an enemy
    # armed unit alive through it.
    living_until = np.minimum(units.destroyed, end_frame + 1)
    exposed = np.flatnonzero((units.finished < living_until - 1)
                             & (rng.uniform(0, 1, len(units.id)) < 0.4))
    skirmish_start = rng.integers(units.finished[exposed], living_until[exposed] - 1)
    skirmish_end = np.minimum(skirmish_start + rng.integers(15, 300, len(exposed)),
                              living_until[exposed] - 1)
    attacker = np.full(len(exposed), -1)
    armed = np.flatnonzero(armed_def[units.def_row])
    for side in (0, 1):
        pool = armed[ally[units.team[armed]] != side]
        pool = pool[np.argsort(units.finished[pool], kind="stable")]
        mine = np.flatnonzero(ally[units.team[exposed]] == side)
        attacker[mine] = _pick_units(rng, pool, units.finished[pool], skirmish_start[mine],
                                     skirmish_end[mine], units.destroyed)
    fought = attacker >= 0

    victim = np.concatenate([lethal, exposed[fought]])
    burst_attacker = np.concatenate([killer, attacker[fought]])
    start = np.concatenate([lethal_start, skirmish_start[fought]])
    end = np.concatenate([lethal_end, skirmish_end[fought]])
    share_of_health = np.concatenate([rng.uniform(1.0, 1.3, len(lethal)),
                                      rng.uniform(0.05, 0.5, fought.sum())])
    lethal_burst = np.arange(len(victim)) < len(lethal)
    return _burst_hits(rng, units, defs, victim, burst_attacker, start, end,
                       share_of_health, lethal_burst)


def _burst_hits(rng: np.random.Generator, units: Units, defs: UnitDefs, victim: np.ndarray,
                attacker: np.ndarray, start: np.ndarray, end: np.ndarray,
                share_of_health: np.ndarray, lethal: np.ndarray) -> Hits:
    """Spread each burst over hits whose damage adds up to a share of the victim's health."""
    hit_count = 1 + rng.poisson(np.where(lethal, 6, 3))
    burst = np.repeat(np.arange(len(victim)), hit_count)
    offset = rng.uniform(0, 1, len(burst)) * (end - start + 1)[burst]
    frame = np.minimum(start[burst] + offset.astype(np.int64), end[burst])
    last_of_burst = np.cumsum(hit_count) - 1
    frame[last_of_burst[lethal]] = end[lethal]

    hit_attacker = attacker[burst]
    # A few hits of known attackers land after the attacker is gone.
    hit_attacker[rng.uniform(0, 1, len(burst)) < 0.01] = -1

    weight = rng.gamma(2.0, 1.0, len(burst))
    weight /= np.bincount(burst, weights=weight)[burst]
    health_tenths = 10 * defs.max_health[units.def_row[victim]] * share_of_health
    damage = np.round(health_tenths[burst] * weight).astype(np.int64)

    armed_defs = np.flatnonzero(defs.weapon_id > 0)
    stray_def = rng.choice(armed_defs, len(burst))
    weapon_def = np.where(hit_attacker >= 0, units.def_row[np.maximum(hit_attacker, 0)], stray_def)

    order = np.argsort(frame, kind="stable")
    beam = defs.beam[weapon_def[order]]
    projectile = np.where(beam, -1, (np.cumsum(~beam) - 1) % _PROJECTILE_ID_LIMIT)
    return Hits(frame=frame[order], victim=victim[burst][order], attacker=hit_attacker[order],
                damage=damage[order], weapon_id=defs.weapon_id[weapon_def[order]],
                projectile_id=projectile, paralyzer=defs.paralyzer[weapon_def[order]])


# Group orders: Spring engine command id, Command enum member, share of orders and
# whether the order carries a map position. Mod commands (member None) are outside
# the Command enum, so their cmd_name is null.
_GROUP_ORDERS = (
    (10, "MOVE", 0.40, True), (16, "FIGHT", 0.30, True), (90, "RECLAIM", 0.07, True),
    (20, "ATTACK", 0.05, False), (25, "GUARD", 0.05, False), (40, "REPAIR", 0.04, True),
    (15, "PATROL", 0.03, True), (125, "RESURRECT", 0.01, True), (0, "STOP", 0.015, False),
    (5, "WAIT", 0.005, False), (105, "MANUAL_FIRE", 0.005, True),
    (75, "LOAD_UNITS", 0.005, False), (80, "UNLOAD_UNITS", 0.005, True),
    (130, "CAPTURE", 0.005, False), (31410, None, 0.005, True), (31522, None, 0.005, False),
)


def _plan_commands(rng: np.random.Generator, units: Units, builds: Builds, defs: UnitDefs,
                   teams: int, end_frame: int, width: int, height: int) -> Commands:
    """Draw group orders of each team and a BUILD order for every built unit."""
    group = _group_orders(rng, units, teams, end_frame, width, height)
    build = _build_orders(rng, units, builds, defs)
    frame, unit, cmd_id, cmd_name, target, x, z = (
        np.concatenate([a, b]) for a, b in zip(group, build))
    order = np.argsort(frame, kind="stable")
    frame, unit, cmd_id, cmd_name, target, x, z = (
        column[order] for column in (frame, unit, cmd_id, cmd_name, target, x, z))

    # cmd_tag counts each unit's orders from 1, as the engine's command queue does.
    by_unit = np.argsort(unit, kind="stable")
    first_of_unit = np.r_[True, unit[by_unit][1:] != unit[by_unit][:-1]]
    run_start = np.maximum.accumulate(np.where(first_of_unit, np.arange(len(unit)), 0))
    cmd_tag = np.empty(len(unit), dtype=np.int64)
    cmd_tag[by_unit] = np.arange(len(unit)) - run_start + 1
    return Commands(frame=frame, unit=unit, cmd_id=cmd_id, cmd_name=cmd_name, cmd_tag=cmd_tag,
                    target=target, x=x, z=z)


def _group_orders(rng: np.random.Generator, units: Units, teams: int, end_frame: int,
                  width: int, height: int) -> tuple[np.ndarray, ...]:
    """Draw orders that each give one command to a group of a team's live units.

    One order is one action: its rows share the frame and cmd_id.
    """
    ids = np.array([order[0] for order in _GROUP_ORDERS])
    names = np.array([0 if order[1] is None else ENUMS["Command"].index(order[1]) + 1
                      for order in _GROUP_ORDERS])
    shares = np.array([order[2] for order in _GROUP_ORDERS])
    positioned = np.array([order[3] for order in _GROUP_ORDERS])

    ticks = end_frame // COMMAND_STEP
    per_team = max(1, round(_ACTIONS_PER_TEAM_MINUTE * end_frame / FRAMES_PER_MINUTE))
    action_team = np.repeat(np.arange(teams), per_team)
    action_frame = COMMAND_STEP * rng.integers(1, max(ticks, 1) + 1, len(action_team))
    kind = rng.choice(len(ids), len(action_team), p=shares / shares.sum())
    # Most orders go to one to five units, a few to hundreds.
    group_size = np.ceil(rng.lognormal(0.7, 1.2, len(action_team)))
    group_size = np.minimum(group_size, 1000).astype(np.int64)
    point_x = rng.uniform(0.05, 0.95, len(action_team)) * width
    point_z = np.clip(rng.normal(0.5, 0.2, len(action_team)), 0.02, 0.98) * height

    # Draw twice the group size among the team's units created by then, then keep
    # the first live, distinct ones up to the group size.
    mobile = np.flatnonzero(np.isin(units.role, _MOBILE_ROLES))
    draws = 2 * group_size
    action = np.repeat(np.arange(len(action_team)), draws)
    unit = np.full(len(action), -1)
    for team in range(teams):
        pool = mobile[units.team[mobile] == team]
        rows = np.flatnonzero(action_team[action] == team)
        ready = np.searchsorted(units.created[pool], action_frame[action[rows]], side="right")
        pick = (rng.uniform(0, 1, len(rows)) * ready).astype(np.int64)
        unit[rows] = np.where(ready > 0, pool[np.minimum(pick, len(pool) - 1)], -1)
    frame = action_frame[action]
    valid = unit >= 0
    valid[valid] = ((units.destroyed[unit[valid]] > frame[valid])
                    & (units.team_at(unit[valid], frame[valid]) == action_team[action[valid]]))
    action, unit = action[valid], unit[valid]
    _, distinct = np.unique(action * len(units.id) + unit, return_index=True)
    distinct.sort()
    action, unit = action[distinct], unit[distinct]
    rank = np.arange(len(action)) - np.searchsorted(action, action)
    within_group = rank < group_size[action]
    action, unit = action[within_group], unit[within_group]

    has_point = positioned[kind[action]]
    x = np.where(has_point, point_x[action] + rng.normal(0, 40, len(action)), 0)
    z = np.where(has_point, point_z[action] + rng.normal(0, 40, len(action)), 0)
    return (action_frame[action], unit, ids[kind[action]], names[kind[action]],
            np.full(len(action), -1), np.round(x), np.round(z))


def _build_orders(rng: np.random.Generator, units: Units, builds: Builds,
                  defs: UnitDefs) -> tuple[np.ndarray, ...]:
    """Order each builder to build its unit shortly before the construction starts.

    Real exports put the ordered unit's def id in target_unit_id of BUILD rows and
    its negative in cmd_id.
    """
    main = ~builds.assist
    builder, target = builds.builder[main], builds.target[main]
    delay = rng.integers(0, 20, len(target)) * COMMAND_STEP
    frame = (units.created[target] - delay) // COMMAND_STEP * COMMAND_STEP
    frame = np.maximum(frame, _ceil_to(units.created[builder], COMMAND_STEP))
    def_id = defs.ids[units.def_row[target]]
    build_code = ENUMS["Command"].index("BUILD") + 1
    return (frame, builder, -def_id, np.full(len(target), build_code), def_id,
            np.round(units.spawn_x[target]), np.round(units.spawn_z[target]))


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------

def terrain_height(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Return the made-up map's ground height (y) at map points (x, z)."""
    return 175 + 40 * np.sin(x / 900 + 0.6) * np.cos(z / 1400) + 15 * np.sin((x + z) / 500)


def _terrain_slope(x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ridge = 15 / 500 * np.cos((x + z) / 500)
    slope_x = 40 / 900 * np.cos(x / 900 + 0.6) * np.cos(z / 1400) + ridge
    slope_z = -40 / 1400 * np.sin(x / 900 + 0.6) * np.sin(z / 1400) + ridge
    return slope_x, slope_z


def unit_motion(units: Units, defs: UnitDefs, rows: np.ndarray,
                frames: np.ndarray) -> tuple[np.ndarray, ...]:
    """Return position (x, y, z) and velocity (elmos per frame) of units at frames.

    A unit waits at its spawn point until finished, travels to its goal on a smooth
    step and wanders around it on a Lissajous curve.

    Parameters
    ----------
    units, defs
        The plan's units and unit definitions.
    rows : numpy.ndarray
        Unit rows.
    frames : numpy.ndarray
        One frame per row.

    Returns
    -------
    tuple of numpy.ndarray
        x, y, z, vx, vy, vz as float64.
    """
    elapsed = frames - units.finished[rows]
    moving = elapsed > 0
    travel = units.travel_frames[rows]
    progress = np.clip(elapsed / travel, 0, 1)
    ease = progress * progress * (3 - 2 * progress)
    ease_rate = 6 * progress * (1 - progress) / travel
    wander = np.where(moving, units.wander[rows], 0.0)
    angle_x = units.omega_x[rows] * elapsed + units.phase_x[rows]
    angle_z = units.omega_z[rows] * elapsed + units.phase_z[rows]

    dx = units.goal_x[rows] - units.spawn_x[rows]
    dz = units.goal_z[rows] - units.spawn_z[rows]
    x = units.spawn_x[rows] + dx * ease + wander * (np.sin(angle_x) - np.sin(units.phase_x[rows]))
    z = units.spawn_z[rows] + dz * ease + wander * (np.sin(angle_z) - np.sin(units.phase_z[rows]))
    vx = dx * ease_rate + wander * units.omega_x[rows] * np.cos(angle_x)
    vz = dz * ease_rate + wander * units.omega_z[rows] * np.cos(angle_z)
    slope_x, slope_z = _terrain_slope(x, z)
    y = terrain_height(x, z) + defs.altitude[units.def_row[rows]]
    vy = slope_x * vx + slope_z * vz
    return x, y, z, vx, vy, vz


def _heading(vx: np.ndarray, vz: np.ndarray) -> np.ndarray:
    # Spring headings map a full turn to the int16 range; 0 faces +z.
    heading = np.round(np.arctan2(vx, vz) * 32768 / np.pi).astype(np.int64)
    return np.clip(heading, -32768, 32767)


def _rounded(*arrays: np.ndarray) -> list[np.ndarray]:
    return [np.round(array).astype(np.int64) for array in arrays]


# ---------------------------------------------------------------------------
# Aspect rows
# ---------------------------------------------------------------------------

def _windows(end_frame: int) -> Iterator[tuple[int, int]]:
    """Yield consecutive frame windows [start, stop) that cover frames 0 to end_frame."""
    for start in range(0, end_frame + 1, _WINDOW_FRAMES):
        yield start, min(start + _WINDOW_FRAMES, end_frame + 1)


def _ticks(start: int, stop: int, step: int) -> np.ndarray:
    """Return the multiples of ``step``, from ``step`` on, that lie in [start, stop)."""
    first = max(step, _ceil_to(start, step))
    return np.arange(first, stop, step, dtype=np.int64)


def _rows_at_ticks(ticks: np.ndarray, rows: np.ndarray, first: np.ndarray,
                   stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (frame, row) for every tick and every row with ``first <= tick < stop``.

    ``first`` and ``stop`` are per row. The result is ordered by tick, then by the
    order of ``rows``.
    """
    frames, selected = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    if len(ticks):
        near = (first <= ticks[-1]) & (stop > ticks[0])
        rows, first, stop = rows[near], first[near], stop[near]
    for tick in ticks:
        live = rows[(first <= tick) & (stop > tick)]
        selected.append(live)
        frames.append(np.full(len(live), tick, dtype=np.int64))
    return np.concatenate(frames), np.concatenate(selected)


def _in_window(frames: np.ndarray, start: int, stop: int) -> slice:
    """Return the slice of sorted ``frames`` that lies in [start, stop)."""
    return slice(*np.searchsorted(frames, [start, stop], side="left"))


def _merge_sources(sources: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate row sources and order the rows by frame, then by source."""
    merged = {name: np.concatenate([source[name] for source in sources]) for name in sources[0]}
    rank = np.concatenate([np.full(len(source["frame"]), index)
                           for index, source in enumerate(sources)])
    order = np.lexsort((rank, merged["frame"]))
    return {name: values[order] for name, values in merged.items()}


def _unit_positions(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Sample every live mobile unit every POSITION_STEP frames."""
    units, defs = plan.units, plan.defs
    mobile = np.flatnonzero(np.isin(units.role, _MOBILE_ROLES))
    for start, stop in _windows(plan.end_frame):
        frame, row = _rows_at_ticks(_ticks(start, stop, POSITION_STEP), mobile,
                                    units.created[mobile], units.destroyed[mobile])
        x, y, z, vx, vy, vz = unit_motion(units, defs, row, frame)
        x, y, z, vx_raw, vy_raw, vz_raw = _rounded(x, y, z, 1000 * vx, 1000 * vy, 1000 * vz)
        yield RowBlock(columns={
            "frame": frame, "unit_id": units.id[row], "unit_def_id": defs.ids[units.def_row[row]],
            "team_id": units.team_at(row, frame), "x": x, "y": y, "z": z,
            "vx": vx_raw, "vy": vy_raw, "vz": vz_raw, "heading": _heading(vx, vz),
        })


def _unit_state_snapshots(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Sample a share of the live units every SNAPSHOT_STEP frames."""
    units, defs = plan.units, plan.defs
    everyone = np.arange(len(units.id))
    for start, stop in _windows(plan.end_frame):
        frame, row = _rows_at_ticks(_ticks(start, stop, SNAPSHOT_STEP), everyone,
                                    units.created, units.destroyed)
        sampled = rng.uniform(0, 1, len(row)) < _SNAPSHOT_SHARE
        frame, row = frame[sampled], row[sampled]
        count = len(row)
        def_row = units.def_row[row]
        max_health = defs.max_health[def_row]

        # Health grows while the unit is built and runs down in the 15 s before its
        # death. Some snapshots catch the unit damaged.
        building = frame < units.finished[row]
        build_span = np.maximum(units.finished[row] - units.created[row], 1)
        built_share = np.clip((frame - units.created[row]) / build_span, 0.05, 1)
        to_death = np.clip((units.destroyed[row] - frame) / 450, 0, 1)
        scratched = np.where(rng.uniform(0, 1, count) < 0.3, rng.uniform(0.5, 1, count), 1)
        health = max_health * np.where(building, built_share, to_death * scratched)

        armed = defs.weapon_id[def_row] > 0
        minutes_alive = np.maximum(frame - units.finished[row], 0) / FRAMES_PER_MINUTE
        experience = 0.03 * minutes_alive * rng.uniform(0.5, 1.5, count)
        experience = np.where(armed, np.minimum(experience, 1.5), 0)
        yield RowBlock(columns={
            "frame": frame, "unit_id": units.id[row], "team_id": units.team_at(row, frame),
            "currentHealth": np.round(health).astype(np.int64), "currentMaxHealth": max_health,
            "experience": np.round(1000 * experience).astype(np.int64),
            "is_being_built": building,
            "is_stunned": building | (rng.uniform(0, 1, count) < 0.01),
            "is_cloaked": (units.role[row] == GROUND) & (rng.uniform(0, 1, count) < 0.01),
            "is_transporting_count": ((units.role[row] == AIRCRAFT)
                                      & (rng.uniform(0, 1, count) < 0.02)).astype(np.int64),
            "current_max_range": defs.max_range[def_row],
            "is_firing": armed & ~building & (rng.uniform(0, 1, count) < 0.03),
        })


def _team_stats(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Write every team's counters every TEAM_STATS_STEP frames, Gaia last."""
    ticks = _ticks(0, plan.end_frame + 1, TEAM_STATS_STEP)
    counters = _combat_counters(plan, ticks)
    counters.update(_economy_counters(plan, rng, ticks))
    teams = plan.gaia_team + 1
    columns = {"frame": np.repeat(ticks, teams), "team_id": np.tile(np.arange(teams), len(ticks))}
    floats = {}
    for name, per_team in counters.items():
        gaia = np.full((len(ticks), 1), _GAIA_COUNTERS.get(name, 0), dtype=np.int64)
        columns[name] = np.hstack([per_team, gaia]).ravel()
    for name in _FLOAT_COUNTERS:
        large = columns[name] >= _FLOAT32_EXACT_LIMIT
        columns[name] = np.where(large, columns[name].astype(np.float32).astype(np.int64),
                                 columns[name])
        floats[name] = large
    yield RowBlock(columns=columns, floats=floats)


# The engine's Gaia team owns nothing here, as in real games, but has storage.
_GAIA_COUNTERS = {"metal_current": 10000, "metal_storage": 10000, "metal_share": 10,
                  "energy_current": 10000, "energy_storage": 10000, "energy_share": 10}


def _combat_counters(plan: ReplayPlan, ticks: np.ndarray) -> dict[str, np.ndarray]:
    """Return the damage, death and transfer counters as (tick, team) arrays.

    Each is the running sum, up to and including the tick, of damage_log and
    unit_events rows.
    """
    units, hits = plan.units, plan.hits

    def running_sum(frames: np.ndarray, teams: np.ndarray, amounts: np.ndarray) -> np.ndarray:
        totals = np.zeros((len(ticks) + 1, plan.teams), dtype=np.int64)
        np.add.at(totals, (np.searchsorted(ticks, frames, side="left"), teams), amounts)
        return np.cumsum(totals[:-1], axis=0)

    known = hits.attacker >= 0
    dead = np.flatnonzero(units.destroyed <= plan.end_frame)
    killed = dead[units.killer[dead] >= 0]
    transferred = np.flatnonzero(units.transfer_frame <= plan.end_frame)
    zeros = np.zeros((len(ticks), plan.teams), dtype=np.int64)
    return {
        "damage_dealt": running_sum(hits.frame[known],
                                    units.team_at(hits.attacker[known], hits.frame[known]),
                                    hits.damage[known]),
        "damage_received": running_sum(hits.frame, units.team_at(hits.victim, hits.frame),
                                       hits.damage),
        "units_killed": running_sum(units.destroyed[killed],
                                    units.team_at(units.killer[killed], units.destroyed[killed]),
                                    1),
        "units_died": running_sum(units.destroyed[dead],
                                  units.team_at(dead, units.destroyed[dead]), 1),
        "units_captured": zeros,
        "units_out_captured": zeros,
        "units_received": running_sum(units.transfer_frame[transferred],
                                      units.new_team[transferred], 1),
        "units_sent": running_sum(units.transfer_frame[transferred], units.team[transferred], 1),
        # A real 8-vs-8 export writes 0 in every row.
        "current_unit_count": zeros,
    }


def _economy_counters(plan: ReplayPlan, rng: np.random.Generator,
                      ticks: np.ndarray) -> dict[str, np.ndarray]:
    """Return resource counters and rates as (tick, team) arrays.

    Income follows the share of the match played to the power 2.5, so economies
    grow late. Cumulative counters are running sums of non-negative amounts per
    tick, and rates are tenths per second over the last tick.
    """
    shape = (len(ticks), plan.teams)
    progress = ticks / plan.end_frame
    growth = np.diff(np.r_[0.0, progress ** 2.5])[:, None]
    energy_total = 1.15 * _FLOAT32_EXACT_LIMIT * plan.economy_scale
    counters = {}
    resources = (("energy", energy_total, 2500), ("metal", energy_total / 20, 200))
    for resource, total, base in resources:
        produced = total * growth * rng.lognormal(0, 0.15, shape) + base
        used = produced * rng.uniform(0.85, 0.99, shape)
        excess = produced * _sometimes(rng, shape, chance=0.1, max_share=0.1)
        sent = produced * _sometimes(rng, shape, chance=0.15, max_share=0.2)
        received = produced * _sometimes(rng, shape, chance=0.15, max_share=0.2)
        storage = 10000 + (plan.economy_scale * (200000 if resource == "metal" else 800000)
                           * progress[:, None] ** 2)
        per_tick = {"used": used, "produced": produced, "excess": excess,
                    "received": received, "sent": sent}
        for name, amounts in per_tick.items():
            counters[f"{resource}_{name}"] = np.round(np.cumsum(amounts, axis=0)).astype(np.int64)
        seconds = TEAM_STATS_STEP / FRAMES_PER_SECOND
        rates = {
            "current": storage * rng.uniform(0.05, 0.7, shape), "storage": storage,
            "pull": used / seconds * rng.uniform(1, 1.3, shape), "income": produced / seconds,
            "expense": used / seconds,
            "share": np.where(rng.uniform(0, 1, shape) < 0.99, 10, 0),
            "Rsent": sent / seconds, "Rreceived": received / seconds, "Rexcess": excess / seconds,
        }
        for name, values in rates.items():
            counters[f"{resource}_{name}"] = np.round(values).astype(np.int64)
    return counters


def _sometimes(rng: np.random.Generator, shape: tuple[int, int], *, chance: float,
               max_share: float) -> np.ndarray:
    """Return random shares up to ``max_share`` in a ``chance`` of the cells, else 0."""
    return np.where(rng.uniform(0, 1, shape) < chance, rng.uniform(0, max_share, shape), 0)


def _unit_events(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Write life-cycle events: CREATED, FINISHED, GIVEN, TAKEN, DESTROYED."""
    units, end = plan.units, plan.end_frame
    sources = []
    for event, frames in (("CREATED", units.created), ("FINISHED", units.finished),
                          ("GIVEN", units.transfer_frame), ("TAKEN", units.transfer_frame),
                          ("DESTROYED", units.destroyed)):
        rows = np.flatnonzero(frames <= end)
        rows = rows[np.argsort(frames[rows], kind="stable")]
        sources.append((event, rows, frames[rows]))
    for start, stop in _windows(end):
        merged = _merge_sources([_event_rows(plan, event, rows[_in_window(frames, start, stop)])
                                 for event, rows, frames in sources])
        lengths = merged.pop("length")
        nulls = {name[:-len("_null")]: merged.pop(name)
                 for name in list(merged) if name.endswith("_null")}
        yield RowBlock(columns=merged, nulls=nulls, lengths=lengths)


# Elements per unit_events row, as in real exports. Most events have 11. Transfers
# add the old and new team (13), buildings their builder (14) and factory-built
# units also the factory's queue length (15).
_EVENT_LENGTH, _TRANSFER_LENGTH, _BUILT_LENGTH, _FACTORY_BUILT_LENGTH = 11, 13, 14, 15


def _event_rows(plan: ReplayPlan, event: str, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Return the columns, null masks and lengths of one event for unit rows."""
    units, defs = plan.units, plan.defs
    frame = {"CREATED": units.created, "FINISHED": units.finished, "GIVEN": units.transfer_frame,
             "TAKEN": units.transfer_frame, "DESTROYED": units.destroyed}[event][rows]
    count = len(rows)
    x, y, z = _rounded(*unit_motion(units, defs, rows, frame)[:3])
    transfer = event in ("GIVEN", "TAKEN")
    killer = units.killer[rows] if event == "DESTROYED" else np.full(count, -1)
    known = killer >= 0
    safe_killer = np.maximum(killer, 0)
    builder = units.builder[rows] if event == "CREATED" else np.full(count, -1)
    built = builder >= 0
    queue_length = units.queue_length[rows] if event == "CREATED" else np.zeros(count, np.int64)

    if event == "CREATED":
        from_factory = np.isin(units.role[rows], _BUILT_BY_FACTORY)
        length = np.select([from_factory, built], [_FACTORY_BUILT_LENGTH, _BUILT_LENGTH],
                           _EVENT_LENGTH)
    else:
        length = np.full(count, _TRANSFER_LENGTH if transfer else _EVENT_LENGTH)
    return {
        "frame": frame, "unit_id": units.id[rows], "unit_def_id": defs.ids[units.def_row[rows]],
        "unit_team_id": units.team_at(rows, frame), "unit_team_id_null": np.full(count, transfer),
        "x": x, "y": y, "z": z,
        "attacker_unit_id": units.id[safe_killer], "attacker_unit_id_null": ~known,
        "attacker_unit_def_id": defs.ids[units.def_row[safe_killer]],
        "attacker_unit_def_id_null": ~known,
        "attacker_team_id": units.team_at(safe_killer, frame), "attacker_team_id_null": ~known,
        "event_type": np.full(count, ENUMS["UnitEvent"].index(event) + 1),
        "old_team_id": units.team[rows], "old_team_id_null": np.full(count, not transfer),
        "new_team_id": units.new_team[rows], "new_team_id_null": np.full(count, not transfer),
        "builder_id": units.id[np.maximum(builder, 0)], "builder_id_null": ~built,
        "factory_queue_len": queue_length,
        "factory_queue_len_null": ~(built & (length == _FACTORY_BUILT_LENGTH)),
        "length": length,
    }


def _damage_log(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Write the planned hits, with the victim's position at each hit."""
    units, defs, hits = plan.units, plan.defs, plan.hits
    for start, stop in _windows(plan.end_frame):
        window = _in_window(hits.frame, start, stop)
        frame, victim, attacker = hits.frame[window], hits.victim[window], hits.attacker[window]
        unknown = attacker < 0
        attacker = np.maximum(attacker, 0)
        x, y, z = _rounded(*unit_motion(units, defs, victim, frame)[:3])
        yield RowBlock(
            columns={
                "frame": frame, "victim_team_id": units.team_at(victim, frame),
                "attacker_team_id": units.team_at(attacker, frame),
                "victim_unit_id": units.id[victim],
                "victim_def_id": defs.ids[units.def_row[victim]],
                "attacker_unit_id": units.id[attacker],
                "attacker_def_id": defs.ids[units.def_row[attacker]],
                "weapon_def_id": hits.weapon_id[window],
                "projectile_id": hits.projectile_id[window],
                "damage": hits.damage[window], "is_paralyzer": hits.paralyzer[window],
                "victim_pos_x": x, "victim_pos_y": y, "victim_pos_z": z,
            },
            nulls={name: unknown for name in ("attacker_team_id", "attacker_unit_id",
                                              "attacker_def_id")},
        )


def _commands_log(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Write the planned orders. Orders without a map position have x, y and z 0."""
    units, commands = plan.units, plan.commands
    for start, stop in _windows(plan.end_frame):
        window = _in_window(commands.frame, start, stop)
        frame, unit = commands.frame[window], commands.unit[window]
        x, z = commands.x[window], commands.z[window]
        positioned = (x != 0) | (z != 0)
        y = np.where(positioned, np.round(terrain_height(x, z)), 0).astype(np.int64)
        yield RowBlock(
            columns={
                "frame": frame, "teamId": units.team_at(unit, frame), "unitId": units.id[unit],
                "cmd_id": commands.cmd_id[window], "cmd_name": commands.cmd_name[window],
                "cmd_tag": commands.cmd_tag[window], "target_unit_id": commands.target[window],
                "x": x.astype(np.int64), "y": y, "z": z.astype(np.int64),
            },
            nulls={"cmd_name": commands.cmd_name[window] == 0,
                   "target_unit_id": commands.target[window] < 0},
        )


def _construction_log(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Write every job every CONSTRUCTION_STEP frames from its start to its end tick."""
    units, defs, builds = plan.units, plan.defs, plan.builds
    jobs = np.arange(len(builds.target))
    # ConstructionAction codes by [assist, step], where step 0 is the first tick,
    # 1 a tick in between and 2 the last tick.
    codes = np.array([[ENUMS["ConstructionAction"].index(f"{kind}_{step}") + 1
                       for step in ("START", "SNAPSHOT", "END")]
                      for kind in ("CONSTRUCTION", "ASSIST")])
    for start, stop in _windows(plan.end_frame):
        frame, job = _rows_at_ticks(_ticks(start, stop, CONSTRUCTION_STEP), jobs,
                                    builds.first_tick, builds.last_tick + 1)
        first, last = frame == builds.first_tick[job], frame == builds.last_tick[job]
        event = codes[builds.assist[job].astype(np.int64), np.select([first, last], [0, 2], 1)]
        builder, target = builds.builder[job], builds.target[job]
        # Builders mostly work at full power, sometimes throttled, and report 0 at the end.
        throttled = np.round(1000 * rng.integers(1, 15, len(job)) / 15)
        power = np.where(rng.uniform(0, 1, len(job)) < 0.7, 1000, throttled)
        yield RowBlock(
            columns={
                "frame": frame, "event": event, "builder_unit_id": units.id[builder],
                "builder_unit_def_id": defs.ids[units.def_row[builder]],
                "builder_player_id": units.team[builder], "target_unit_id": units.id[target],
                "target_unit_def_id": defs.ids[units.def_row[target]],
                "target_player_id": units.team[target],
                "buildpower": np.where(last, 0, power).astype(np.int64),
            },
            nulls={"target_player_id": last & builds.null_target_team[job]},
        )


def _unit_economy(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Write production of economy buildings and factories: start, snapshots, end."""
    units, defs, end = plan.units, plan.defs, plan.end_frame
    producers = np.flatnonzero(np.isin(units.role, (ECONOMY, FACTORY)))
    started = producers[units.finished[producers] <= end]
    started = started[np.argsort(units.finished[started], kind="stable")]
    destroyed = producers[units.destroyed[producers] <= end]
    destroyed = destroyed[np.argsort(units.destroyed[destroyed], kind="stable")]
    wind_ticks, wind = _wind(plan)
    events = ENUMS["UnitEconomyEvent"]

    def rows(event: str, frame: np.ndarray, row: np.ndarray) -> dict[str, np.ndarray]:
        def_row = units.def_row[row]
        count = len(row)
        output = 0 if event == "DESTROYED" else 1
        noise = rng.uniform(0.9, 1.1, count) * output
        # Factories draw resources only while something is in production.
        busy = np.where(units.role[row] == FACTORY, rng.uniform(0, 1, count) < 0.7, 1)
        energy_make = np.where(defs.turbine[def_row], _wind_at(wind_ticks, wind, frame) / 10,
                               defs.energy_make[def_row])
        return {
            "frame": frame, "unit_id": units.id[row], "unit_def_id": defs.ids[def_row],
            "team_id": units.team_at(row, frame),
            "event_type": np.full(count, events.index(event) + 1, dtype=np.int64),
            "metal_make": np.round(defs.metal_make[def_row] * noise).astype(np.int64),
            "metal_use": np.round(defs.metal_use[def_row] * noise * busy).astype(np.int64),
            "energy_make": np.round(energy_make * noise).astype(np.int64),
            "energy_use": np.round(defs.energy_use[def_row] * noise * busy).astype(np.int64),
        }

    for start, stop in _windows(end):
        first = started[_in_window(units.finished[started], start, stop)]
        snapshot_frame, snapshot_row = _rows_at_ticks(
            _ticks(start, stop, UNIT_ECONOMY_STEP), producers,
            units.finished[producers] + 1, units.destroyed[producers])
        last = destroyed[_in_window(units.destroyed[destroyed], start, stop)]
        yield RowBlock(columns=_merge_sources([
            rows("PRODUCTION_STARTED", units.finished[first], first),
            rows("SNAPSHOT", snapshot_frame, snapshot_row),
            rows("DESTROYED", units.destroyed[last], last),
        ]))


def _wind(plan: ReplayPlan) -> tuple[np.ndarray, np.ndarray]:
    """Return the ENVIRONMENT_STEP ticks and the wind strength at each: a bounded random walk."""
    rng = _stream(plan, "wind")
    ticks = _ticks(0, plan.end_frame + 1, ENVIRONMENT_STEP)
    steps = rng.normal(0, 120, len(ticks))
    wind = np.empty(len(ticks))
    level = rng.uniform(400, 1200)
    for index, step in enumerate(steps):
        level = float(np.clip(level + step, 50, 1600))
        wind[index] = level
    return ticks, np.round(wind).astype(np.int64)


def _wind_at(ticks: np.ndarray, wind: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Return the wind of the last tick at or before each frame (the first tick's before it)."""
    if len(ticks) == 0:
        return np.zeros(len(frames))
    return wind[np.maximum(np.searchsorted(ticks, frames, side="right") - 1, 0)]


def _map_envir_econ(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Write wind and tidal strength every ENVIRONMENT_STEP frames (no tide on this map)."""
    ticks, wind = _wind(plan)
    yield RowBlock(columns={"frame": ticks, "wind_strength": wind,
                            "tidal_strength": np.zeros(len(ticks), dtype=np.int64)})


def _start_pos(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Write one row per player: name, commander and start position."""
    units, defs = plan.units, plan.defs
    commanders = np.flatnonzero(units.role == COMMANDER)
    commanders = commanders[np.argsort(units.team[commanders])]
    def_row = units.def_row[commanders]
    x, z = plan.start_x, plan.start_z
    yield RowBlock(columns={
        "player_id": np.arange(plan.teams),
        "player_name": np.array(_player_names(plan.teams)),
        "commander_def_name": np.array([defs.names[row] for row in def_row]),
        "unit_def_id": defs.ids[def_row],
        "x": x.astype(np.int64), "y": np.round(terrain_height(x, z)).astype(np.int64),
        "z": z.astype(np.int64),
    })


def _player_names(teams: int) -> list[str]:
    return [f"player_{team:02d}" for team in range(teams)]


_ASPECT_ROWS = {
    "commands_log": _commands_log,
    "construction_log": _construction_log,
    "damage_log": _damage_log,
    "map_envir_econ": _map_envir_econ,
    "start_pos": _start_pos,
    "team_stats": _team_stats,
    "unit_economy": _unit_economy,
    "unit_events": _unit_events,
    "unit_positions": _unit_positions,
    "unit_state_snapshots": _unit_state_snapshots,
}


def _stream(plan: ReplayPlan, name: str) -> np.random.Generator:
    """Return a random stream of its own for one part of the replay."""
    return np.random.default_rng([plan.seed, zlib.crc32(name.encode())])


def aspect_blocks(plan: ReplayPlan, aspect_name: str) -> Iterator[RowBlock]:
    """Yield the rows of one aspect in file order, as blocks of columns.

    Parameters
    ----------
    plan : ReplayPlan
        The match, from :func:`plan_replay`.
    aspect_name : str
        An aspect of :data:`mpp_dask.schema.ASPECTS`.

    Yields
    ------
    RowBlock
        Consecutive rows; frames never decrease across blocks.

    Raises
    ------
    KeyError
        If the generator has no rows for the aspect.
    """
    if aspect_name not in _ASPECT_ROWS:
        raise KeyError(f"the generator has no rows for aspect {aspect_name!r}; "
                       f"it writes {', '.join(sorted(_ASPECT_ROWS))}")
    yield from _ASPECT_ROWS[aspect_name](plan, _stream(plan, aspect_name))


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

def generate_replay(out_dir: str | Path, *, minutes: float = 10, teams: int = 4, seed: int = 0,
                    units_per_team: int | None = None) -> dict[str, int]:
    """Write a deterministic synthetic replay folder.

    The folder gets ``<aspect>.mpk`` for every aspect of the schema, ``defs.csv``
    and ``game_meta.json``. The same arguments give byte-identical files.

    Size grows with units and match length. Every live mobile unit (about two
    thirds of all units) gets a unit_positions row of about 28 bytes every 150
    frames, and a quarter of the live units a unit_state_snapshots row. Over
    runs of 10 to 60 minutes the total was close to ``teams * units_per_team *
    (450 + 69 * minutes)`` bytes, an estimate:

    - ``minutes=10, teams=4`` (the defaults): 0.9 MB, 40 thousand rows;
    - ``minutes=60, teams=16, units_per_team=13500``: 1.0 GB, 38 million rows,
      63% of the bytes in unit_positions and 24% in unit_state_snapshots.

    ``scripts/time_generate.py`` measures a configuration. On 2 AMD EPYC cores
    shared with other jobs, two runs of the 1 GB replay took 63 s and 70 s. Peak
    resident memory was 340 MB because rows are built and encoded one time
    window at a time.

    Parameters
    ----------
    out_dir : str or Path
        Folder to write; created if missing. Existing files of the same names
        are replaced.
    minutes : float
        Match length in game minutes (1,800 frames each).
    teams : int
        Player teams, split into two ally teams; the Gaia team comes on top
        with the next team id.
    seed : int
        Seed of the random numbers (non-negative).
    units_per_team : int, optional
        Units each team creates over the match, its commander included. The
        default is 20 per game minute (at least 10), about as many as in a real
        8-vs-8 game.

    Returns
    -------
    dict[str, int]
        Rows written per aspect.

    Raises
    ------
    ValueError
        If an argument is out of range.
    """
    plan = plan_replay(minutes=minutes, teams=teams, seed=seed, units_per_team=units_per_team)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    rows = {}
    for aspect in ASPECTS.values():
        rows[aspect.name] = _write_aspect(folder / aspect.file_name, aspect,
                                          aspect_blocks(plan, aspect.name))
    _write_defs(folder / "defs.csv", plan.defs)
    _write_game_meta(folder / "game_meta.json", plan)
    return rows


def _write_aspect(path: Path, aspect: Aspect, blocks: Iterator[RowBlock]) -> int:
    """Encode blocks in batches of about _ENCODE_ROWS rows and write them to ``path``."""
    written = 0
    pending: list[RowBlock] = []
    pending_rows = 0
    with open(path, "wb") as out:
        for block in blocks:
            pending.append(block)
            pending_rows += len(block)
            if pending_rows >= _ENCODE_ROWS:
                written += _write_batch(out, aspect, pending)
                pending, pending_rows = [], 0
        if pending_rows:
            written += _write_batch(out, aspect, pending)
    return written


def _write_batch(out, aspect: Aspect, blocks: list[RowBlock]) -> int:
    batch = RowBlock.concat(blocks)
    for start in range(0, len(batch), _ENCODE_ROWS):
        out.write(encode_block(aspect, batch.rows(start, start + _ENCODE_ROWS)))
    return len(batch)


def _write_defs(path: Path, defs: UnitDefs) -> None:
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["id", "name", "translatedTooltip", "translatedHumanName"])
        for row in zip(defs.ids.tolist(), defs.names, defs.tooltips, defs.human_names):
            writer.writerow(row)


_MAP_NAME = "Synthetic Flats"


def _write_game_meta(path: Path, plan: ReplayPlan) -> None:
    """Write match metadata in the shape of real exports, with made-up values.

    ``awards.mostDamageTaken`` is the team with the largest final
    team_stats.damage_received, and its value that counter divided by 10.
    """
    ticks = _ticks(0, plan.end_frame + 1, TEAM_STATS_STEP)
    damage = _combat_counters(plan, ticks)["damage_received"]
    final_damage = damage[-1] if len(ticks) else np.zeros(plan.teams, dtype=np.int64)
    max_damage_team = int(np.argmax(final_damage))
    losing_side = int(plan.ally[max_damage_team])
    start_y = terrain_height(plan.start_x, plan.start_z)
    faction_names = [label for _, label in _FACTIONS]
    names = _player_names(plan.teams)
    # Start boxes as shares of the map, top and bottom measured along z.
    start_boxes = ({"bottom": 1, "left": 0, "top": 0.8, "right": 1},
                   {"bottom": 0.2, "left": 0, "top": 0, "right": 1})
    ally_teams = []
    for side in (0, 1):
        players = [{
            "playerId": team, "teamId": team, "name": names[team],
            "faction": faction_names[plan.faction[team]],
            "startPos": {"x": float(plan.start_x[team]), "y": round(float(start_y[team]), 3),
                         "z": float(plan.start_z[team])},
        } for team in np.flatnonzero(plan.ally == side).tolist()]
        ally_teams.append({"allyTeamId": side, "winningTeam": side != losing_side,
                           "startBox": start_boxes[side], "Players": players})
    duration_ms = round(plan.end_frame / FRAMES_PER_SECOND * 1000)
    meta = {
        "id": f"synthetic_{plan.teams}p_seed{plan.seed}",
        "engineVersion": "synthetic",
        "gameVersion": "mpp-dask synthetic replay",
        "durationMs": duration_ms,
        "fullDurationMs": duration_ms,
        "gameEndedNormally": True,
        "Map": {"id": 0, "scriptName": _MAP_NAME, "fileName": "synthetic_flats",
                "width": MAP_SQUARES[0], "height": MAP_SQUARES[1]},
        "hostSettings": {"numallyteams": "2", "numteams": str(plan.teams),
                         "startpostype": "2", "mapname": _MAP_NAME},
        "AllyTeams": ally_teams,
        "awards": {"mostDamageTaken": {"teamId": max_damage_team,
                                       "value": int(final_damage[max_damage_team]) / 10}},
    }
    path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
