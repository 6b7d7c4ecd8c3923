"""The single source of truth for every aspect: raw layout, dequantization, enums, clean names.

Each aspect file is a concatenation of MessagePack arrays, one array per row, whose
n-th element is the n-th field declared here. Everything else in mpp-dask (the
decoder's column plan, pandas dtypes and Dask ``meta``, the ``list-aspects``
listing, the generator) is derived from these declarations.
"""

from __future__ import annotations

from enum import Enum
from functools import cached_property

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, model_validator

SCHEMA_VERSION = "1"

FRAMES_PER_SECOND = 30
FRAMES_PER_MINUTE = 60 * FRAMES_PER_SECOND



class RawType(str, Enum):
    """Raw MessagePack type of a field, as the decoder checks it."""

    INT = "int"
    BOOL = "bool"
    STR = "str"


ENUMS: dict[str, tuple[str, ...]] = {
    # Member names in code order: code 1 is the first name.
    "Command": (
        "BUILD", "ATTACK", "CAPTURE", "FIGHT", "GUARD", "LOAD_UNITS", "MANUAL_FIRE",
        "MOVE", "PATROL", "RECLAIM", "REPAIR", "RESURRECT", "STOP", "UNLOAD_UNITS", "WAIT",
    ),
    "ConstructionAction": (
        "CONSTRUCTION_START", "CONSTRUCTION_SNAPSHOT", "CONSTRUCTION_END",
        "ASSIST_START", "ASSIST_SNAPSHOT", "ASSIST_END",
    ),
    "UnitEconomyEvent": ("PRODUCTION_STARTED", "SNAPSHOT", "DESTROYED"),
    "UnitEvent": (
        "CREATED", "FINISHED", "DESTROYED", "GIVEN", "TAKEN", "IDLE", "MOVE_FAILED",
        "CLOAKED", "DECLOAKED",
    ),
}


def enum_dtype(enum: str) -> pd.CategoricalDtype:
    """Return the categorical dtype of an enum, with all members in code order."""
    return pd.CategoricalDtype(categories=list(ENUMS[enum]), ordered=False)


class Field(BaseModel):
    """One positional field of an aspect row."""

    model_config = ConfigDict(frozen=True)

    raw_name: str
    raw_type: RawType = RawType.INT
    nullable: bool = False
    divisor: int | None = None
    enum: str | None = None
    rename: str | None = None

    @model_validator(mode="after")
    def _check_transforms(self) -> Field:
        if self.divisor is not None and self.raw_type is not RawType.INT:
            raise ValueError(f"field {self.raw_name}: a divisor needs an int field")
        if self.divisor is not None and self.divisor <= 0:
            raise ValueError(f"field {self.raw_name}: divisor must be positive")
        if self.enum is not None and self.enum not in ENUMS:
            raise ValueError(f"field {self.raw_name}: unknown enum {self.enum}")
        if self.enum is not None and (self.raw_type is not RawType.INT or self.divisor):
            raise ValueError(f"field {self.raw_name}: an enum is an int code without divisor")
        return self

    @property
    def name(self) -> str:
        """Clean column name."""
        return self.rename or self.raw_name

    @property
    def dtype(self) -> object:
        """pandas dtype of the clean column."""
        if self.enum is not None:
            return enum_dtype(self.enum)
        if self.divisor is not None:
            return np.dtype("float64")
        if self.raw_type is RawType.BOOL:
            return pd.BooleanDtype() if self.nullable else np.dtype("bool")
        if self.raw_type is RawType.STR:
            return pd.StringDtype()
        return pd.Int64Dtype() if self.nullable else np.dtype("int64")

    def describe(self) -> str:
        """Return a one-line description of the raw type and transforms."""
        parts = [self.raw_type.value]
        if self.nullable:
            parts.append("nullable")
        if self.divisor is not None:
            parts.append(f"/{self.divisor}")
        if self.enum is not None:
            parts.append(f"enum {self.enum}")
        if self.rename is not None:
            parts.append(f"raw name {self.raw_name}")
        return ", ".join(parts)


class Aspect(BaseModel):
    """One aspect: a file ``<name>.mpk`` and the clean table decoded from it."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    fields: tuple[Field, ...]
    time_series: bool = True

    @model_validator(mode="after")
    def _check_fields(self) -> Aspect:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"aspect {self.name}: duplicate clean names")
        if self.time_series and (names[0] != "frame" or self.fields[0].nullable):
            raise ValueError(f"aspect {self.name}: a time series starts with a non-null frame")
        return self

    @property
    def file_name(self) -> str:
        """Name of the aspect file in a replay folder."""
        return f"{self.name}.mpk"

    @cached_property
    def min_row_length(self) -> int:
        """Minimum elements of a valid row: every field up to the last non-nullable one."""
        required = [i for i, f in enumerate(self.fields) if not f.nullable]
        return required[-1] + 1 if required else 0

    @property
    def max_row_length(self) -> int:
        """Most elements a valid row has."""
        return len(self.fields)

    @property
    def columns(self) -> list[str]:
        """Clean column names in raw order."""
        return [f.name for f in self.fields]

    @property
    def dtypes(self) -> dict[str, object]:
        """Clean column name to pandas dtype."""
        return {f.name: f.dtype for f in self.fields}

    def meta(self) -> pd.DataFrame:
        """Return an empty frame with the exact clean columns and dtypes (Dask ``meta``)."""
        return pd.DataFrame({f.name: pd.Series([], dtype=f.dtype) for f in self.fields})

    def field(self, name: str) -> Field:
        """Return the field with clean name ``name``."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"aspect {self.name} has no column {name!r}")


def _int(name: str, *, nullable: bool = False, divisor: int | None = None,
         rename: str | None = None) -> Field:
    return Field(raw_name=name, nullable=nullable, divisor=divisor, rename=rename)


def _enum(name: str, enum: str, *, nullable: bool = False) -> Field:
    return Field(raw_name=name, enum=enum, nullable=nullable)


def _bool(name: str) -> Field:
    return Field(raw_name=name, raw_type=RawType.BOOL)


def _str(name: str) -> Field:
    return Field(raw_name=name, raw_type=RawType.STR)


def _tenths(*names: str) -> list[Field]:
    return [_int(n, divisor=10) for n in names]


_TEAM_STATS_RATE_RENAMES = {"Rsent": "rate_sent", "Rreceived": "rate_received",
                            "Rexcess": "rate_excess"}


def _team_resource_state(resource: str) -> list[Field]:
    fields = []
    for suffix in ("current", "storage", "pull", "income", "expense", "share",
                   "Rsent", "Rreceived", "Rexcess"):
        raw = f"{resource}_{suffix}"
        clean = _TEAM_STATS_RATE_RENAMES.get(suffix)
        fields.append(_int(raw, divisor=10, rename=f"{resource}_{clean}" if clean else None))
    return fields


ASPECT_LIST: tuple[Aspect, ...] = (
    Aspect(
        name="commands_log",
        description="One row per command given to one unit.",
        fields=(
            _int("frame"), _int("teamId", rename="team_id"), _int("unitId", rename="unit_id"),
            _int("cmd_id"), _enum("cmd_name", "Command", nullable=True), _int("cmd_tag"),
            _int("target_unit_id", nullable=True), _int("x"), _int("y"), _int("z"),
        ),
    ),
    Aspect(
        name="construction_log",
        description="Construction and assist events of builders.",
        fields=(
            _int("frame"), _enum("event", "ConstructionAction"), _int("builder_unit_id"),
            _int("builder_unit_def_id"), _int("builder_player_id"), _int("target_unit_id"),
            _int("target_unit_def_id"), _int("target_player_id", nullable=True),
            _int("buildpower", divisor=1000),
        ),
    ),
    Aspect(
        name="damage_log",
        description="One row per hit.",
        fields=(
            _int("frame"), _int("victim_team_id"), _int("attacker_team_id", nullable=True),
            _int("victim_unit_id"), _int("victim_def_id"),
            _int("attacker_unit_id", nullable=True), _int("attacker_def_id", nullable=True),
            _int("weapon_def_id"), _int("projectile_id"), _int("damage", divisor=10),
            _bool("is_paralyzer"), _int("victim_pos_x"), _int("victim_pos_y"),
            _int("victim_pos_z"),
        ),
    ),
    Aspect(
        name="map_envir_econ",
        description="Wind and tidal strength over time.",
        fields=(_int("frame"), _int("wind_strength"), _int("tidal_strength")),
    ),
    Aspect(
        name="start_pos",
        description="One row per player: name, commander and start position.",
        time_series=False,
        fields=(
            _int("player_id"), _str("player_name"), _str("commander_def_name"),
            _int("unit_def_id"), _int("x"), _int("y"), _int("z"),
        ),
    ),
    Aspect(
        name="team_stats",
        description="One row per team every 300 frames; the first 12 counters are cumulative.",
        fields=(
            _int("frame"), _int("team_id"),
            *_tenths("metal_used", "metal_produced", "metal_excess", "metal_received",
                     "metal_sent", "energy_used", "energy_produced", "energy_excess",
                     "energy_received", "energy_sent", "damage_dealt", "damage_received"),
            _int("units_killed"), _int("units_died"), _int("units_captured"),
            _int("units_out_captured"), _int("units_received"), _int("units_sent"),
            _int("current_unit_count"),
            *_team_resource_state("metal"), *_team_resource_state("energy"),
        ),
    ),
    Aspect(
        name="unit_economy",
        description="Per-unit resource production and use.",
        fields=(
            _int("frame"), _int("unit_id"), _int("unit_def_id"), _int("team_id"),
            _enum("event_type", "UnitEconomyEvent"),
            *_tenths("metal_make", "metal_use", "energy_make", "energy_use"),
        ),
    ),
    Aspect(
        name="unit_events",
        description="Unit life-cycle events: created, finished, destroyed, given, taken.",
        fields=(
            _int("frame"), _int("unit_id"), _int("unit_def_id", nullable=True),
            _int("unit_team_id", nullable=True), _int("x"), _int("y"), _int("z"),
            _int("attacker_unit_id", nullable=True),
            _int("attacker_unit_def_id", nullable=True),
            _int("attacker_team_id", nullable=True), _enum("event_type", "UnitEvent"),
            _int("old_team_id", nullable=True), _int("new_team_id", nullable=True),
            _int("builder_id", nullable=True), _int("factory_queue_len", nullable=True),
        ),
    ),
    Aspect(
        name="unit_positions",
        description="Sampled unit positions and velocities.",
        fields=(
            _int("frame"), _int("unit_id"), _int("unit_def_id"), _int("team_id"),
            _int("x"), _int("y"), _int("z"), _int("vx", divisor=1000),
            _int("vy", divisor=1000), _int("vz", divisor=1000), _int("heading"),
        ),
    ),
    Aspect(
        name="unit_state_snapshots",
        description="Sampled unit health, experience and state flags.",
        fields=(
            _int("frame"), _int("unit_id"), _int("team_id"),
            _int("currentHealth", rename="current_health"),
            _int("currentMaxHealth", rename="current_max_health"),
            _int("experience", divisor=1000), _bool("is_being_built"), _bool("is_stunned"),
            _bool("is_cloaked"), _int("is_transporting_count"), _int("current_max_range"),
            _bool("is_firing"),
        ),
    ),
)

ASPECTS: dict[str, Aspect] = {aspect.name: aspect for aspect in ASPECT_LIST}


def get_aspect(name: str) -> Aspect:
    """Return the aspect called ``name``, or raise ``KeyError`` listing the known ones."""
    try:
        return ASPECTS[name]
    except KeyError:
        known = ", ".join(sorted(ASPECTS))
        raise KeyError(f"unknown aspect {name!r}; known aspects: {known}") from None
