"""combat_engagement_summary and its variants: damage_log hits grouped into engagements.

Hits are taken in (frame, file) order. A hit opens a new engagement when it is the
first hit or when its frame is more than ``gap_frames`` after the previous hit's.
When ``max_distance`` is set, a hit also opens one when its victim position is more
than ``max_distance`` from the previous hit's victim position in the map plane (x, z).
Both thresholds are strict. The per-unit variant applies the same rules to each attacker unit's hits on
their own and numbers each unit's engagements from 0.

The three stats are the same code with different parameters (``stats.<name>`` in the
settings).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from numbers import Real
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa

from mpp_dask.errors import ConfigError
from mpp_dask.schema import ASPECTS, FRAMES_PER_SECOND
from mpp_dask.stats._ordered import FILE_ORDER, add_file_order, map_partitions_with_carry
from mpp_dask.stats.registry import Stat

DAMAGE_DIVISOR = ASPECTS["damage_log"].field("damage").divisor

# Parquet stores this as list<int64>. An object column of lists is no alternative,
# because dask's to_parquet cannot infer a Parquet type for it.
# NOTE: with pandas 3.1 and pyarrow 26, pd.read_parquet and Table.to_pandas fail on
# this column unless called with dtype_backend="pyarrow" (or types_mapper=pd.ArrowDtype),
# because pandas cannot rebuild a list dtype from the stored pandas metadata.
PLAYERS_DTYPE = pd.ArrowDtype(pa.list_(pa.int64()))

_INT64 = np.dtype("int64")
_FLOAT64 = np.dtype("float64")

ENGAGEMENT_DTYPES: dict[str, object] = {
    "engagement_id": _INT64,
    "start_frame": _INT64,
    "end_frame": _INT64,
    "duration_seconds": _FLOAT64,
    "location_x": _FLOAT64,
    "location_z": _FLOAT64,
    "involved_players": PLAYERS_DTYPE,
    "total_damage": _FLOAT64,
    "hits": _INT64,
}
PER_UNIT_DTYPES: dict[str, object] = {"attacker_unit_id": _INT64, **ENGAGEMENT_DTYPES}

# Columns of the hits that the engagement code reads. damage_raw is the raw integer
# damage, so that sums are exact whatever the partitioning.
_HIT_DTYPES: dict[str, object] = {
    "frame": _INT64,
    "x": _INT64,
    "z": _INT64,
    "team": pd.Int64Dtype(),
    "damage_raw": _INT64,
}

# Partial aggregates of one run of consecutive hits (a segment), which later combine
# into whole engagements. first_* and last_* are the victim positions of the segment's
# first and last hit, which the distance rule compares across partition boundaries.
_SEGMENT_DTYPES: dict[str, object] = {
    "start_frame": _INT64,
    "end_frame": _INT64,
    "first_x": _INT64,
    "first_z": _INT64,
    "last_x": _INT64,
    "last_z": _INT64,
    "sum_x": _INT64,
    "sum_z": _INT64,
    "hits": _INT64,
    "damage_raw": _INT64,
    "players": PLAYERS_DTYPE,
}


def _empty(dtypes: Mapping[str, object]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in dtypes.items()})


@dataclass(frozen=True)
class EngagementRules:
    """The parameters of one engagement stat, checked."""

    gap_frames: int
    max_distance: int | float | None
    require_attacker: bool
    per_attacker_unit: bool

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> EngagementRules:
        """Return the rules in ``params``.

        Raises
        ------
        ConfigError
            If a parameter is missing or has an invalid value.
        """
        missing = [key for key in ("gap_frames", "max_distance", "require_attacker",
                                   "per_attacker_unit") if key not in params]
        if missing:
            raise ConfigError(f"engagement parameters are missing: {', '.join(missing)}. "
                              "Set them under stats.<stat name> in the settings")
        gap_frames = params["gap_frames"]
        if isinstance(gap_frames, bool) or not isinstance(gap_frames, int) or gap_frames < 0:
            raise ConfigError("engagement parameter gap_frames must be a non-negative "
                              f"integer number of frames, got {gap_frames!r}")
        max_distance = params["max_distance"]
        if max_distance is not None and (isinstance(max_distance, bool)
                                         or not isinstance(max_distance, Real)
                                         or not max_distance >= 0):
            raise ConfigError("engagement parameter max_distance must be null or a "
                              f"non-negative distance in map units, got {max_distance!r}")
        for key in ("require_attacker", "per_attacker_unit"):
            if not isinstance(params[key], bool):
                raise ConfigError(f"engagement parameter {key} must be true or false, "
                                  f"got {params[key]!r}")
        if params["per_attacker_unit"] and not params["require_attacker"]:
            raise ConfigError("engagement parameter per_attacker_unit needs "
                              "require_attacker: true, because hits without an attacker "
                              "unit belong to no unit")
        return cls(gap_frames=gap_frames, max_distance=max_distance,
                   require_attacker=params["require_attacker"],
                   per_attacker_unit=params["per_attacker_unit"])

    @property
    def max_distance_squared(self) -> int | float | None:
        """Square of ``max_distance``: an int for an int distance, so comparisons are exact."""
        if self.max_distance is None:
            return None
        return self.max_distance * self.max_distance


def build_engagements(frames: Mapping[str, dd.DataFrame], params: Mapping[str, Any]
                      ) -> dd.DataFrame:
    """Build the engagement table of damage_log under the rules in ``params``."""
    rules = EngagementRules.from_params(params)
    damage = frames["damage_log"]
    if rules.require_attacker:
        damage = damage[damage["attacker_unit_id"].notnull()]

    hit_dtypes = dict(_HIT_DTYPES)
    if rules.per_attacker_unit:
        hit_dtypes["attacker_unit_id"] = _INT64
    hits = damage.map_partitions(_select_hits, per_attacker_unit=rules.per_attacker_unit,
                                 meta=_empty(hit_dtypes))

    if rules.per_attacker_unit:
        return _engagements_per_unit(hits, rules)
    return _engagements_in_order(hits, rules)


def _select_hits(damage: pd.DataFrame, per_attacker_unit: bool) -> pd.DataFrame:
    hits = pd.DataFrame({
        "frame": damage["frame"].to_numpy(dtype=np.int64),
        "x": damage["victim_pos_x"].to_numpy(dtype=np.int64),
        "z": damage["victim_pos_z"].to_numpy(dtype=np.int64),
        "team": damage["attacker_team_id"].astype(pd.Int64Dtype()).array,
        # The clean damage is raw / divisor; rounding recovers the raw integer exactly.
        "damage_raw": np.rint(damage["damage"].to_numpy(dtype=np.float64)
                              * DAMAGE_DIVISOR).astype(np.int64),
    })
    if per_attacker_unit:
        hits["attacker_unit_id"] = damage["attacker_unit_id"].to_numpy(dtype=np.int64)
    return hits


def _opening_hits(hits: pd.DataFrame, rules: EngagementRules) -> np.ndarray:
    """Return a bool per hit: true where a hit opens a new segment after the hit before it.

    The first hit always opens one. Whether it continues an engagement of an earlier
    partition is decided later.
    """
    frames = hits["frame"].to_numpy()
    opens = np.ones(len(hits), dtype=bool)
    opens[1:] = np.diff(frames) > rules.gap_frames
    if rules.max_distance_squared is not None:
        dx = np.diff(hits["x"].to_numpy())
        dz = np.diff(hits["z"].to_numpy())
        opens[1:] |= dx * dx + dz * dz > rules.max_distance_squared
    return opens


def _aggregate_segments(hits: pd.DataFrame, opens: np.ndarray) -> pd.DataFrame:
    """Return the partial aggregates of the segments that start where ``opens`` is true.

    Hits must be in (frame, file) order inside each segment, and ``opens[0]`` true.
    """
    starts = np.flatnonzero(opens)
    lasts = np.append(starts[1:], len(hits)) - 1
    frames = hits["frame"].to_numpy(dtype=np.int64)
    x = hits["x"].to_numpy(dtype=np.int64)
    z = hits["z"].to_numpy(dtype=np.int64)
    segments = pd.DataFrame({
        "start_frame": frames[starts],
        "end_frame": frames[lasts],
        "first_x": x[starts],
        "first_z": z[starts],
        "last_x": x[lasts],
        "last_z": z[lasts],
        "sum_x": np.add.reduceat(x, starts),
        "sum_z": np.add.reduceat(z, starts),
        "hits": lasts - starts + 1,
        "damage_raw": np.add.reduceat(hits["damage_raw"].to_numpy(dtype=np.int64), starts),
    })
    segment_ids = np.cumsum(opens) - 1
    segments["players"] = _players_per_segment(hits["team"], segment_ids, len(starts))
    return segments


def _players_per_segment(teams: pd.Series, segment_ids: np.ndarray,
                         segment_count: int) -> pd.Series:
    """Return the sorted distinct non-null teams of each segment, as a list column."""
    known = teams.notna().to_numpy()
    segments = segment_ids[known]
    team_ids = teams[known].to_numpy(dtype=np.int64)
    order = np.lexsort((team_ids, segments))
    segments = segments[order]
    team_ids = team_ids[order]
    distinct = np.ones(len(segments), dtype=bool)
    distinct[1:] = (segments[1:] != segments[:-1]) | (team_ids[1:] != team_ids[:-1])
    segments = segments[distinct]
    team_ids = team_ids[distinct]
    offsets = np.searchsorted(segments, np.arange(segment_count + 1), side="left")
    lists = pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()),
                                     pa.array(team_ids, type=pa.int64()))
    return pd.Series(pd.arrays.ArrowExtensionArray(lists), dtype=PLAYERS_DTYPE)


def _finish(segments: pd.DataFrame, engagement_ids: np.ndarray,
            attacker_unit_ids: np.ndarray | None = None) -> pd.DataFrame:
    """Turn complete segments (whole engagements) into output rows."""
    start = segments["start_frame"].to_numpy(dtype=np.int64)
    end = segments["end_frame"].to_numpy(dtype=np.int64)
    hits = segments["hits"].to_numpy(dtype=np.int64)
    columns: dict[str, Any] = {}
    if attacker_unit_ids is not None:
        columns["attacker_unit_id"] = np.asarray(attacker_unit_ids, dtype=np.int64)
    columns.update({
        "engagement_id": np.asarray(engagement_ids, dtype=np.int64),
        "start_frame": start,
        "end_frame": end,
        "duration_seconds": (end - start) / FRAMES_PER_SECOND,
        # Positions and damage are summed as integers and divided once, so the result
        # does not depend on the order of additions.
        "location_x": segments["sum_x"].to_numpy(dtype=np.int64) / hits,
        "location_z": segments["sum_z"].to_numpy(dtype=np.int64) / hits,
        "involved_players": segments["players"].array,
        "total_damage": segments["damage_raw"].to_numpy(dtype=np.int64) / DAMAGE_DIVISOR,
        "hits": hits,
    })
    dtypes = PER_UNIT_DTYPES if attacker_unit_ids is not None else ENGAGEMENT_DTYPES
    return pd.DataFrame(columns).astype(dtypes)


# --- Sessioning over the whole log, in (frame, file) order ---------------------------

@dataclass(frozen=True)
class _SegmentSummary:
    """Segment count and the first and last segments of one partition."""

    count: int
    first: dict
    last: dict


@dataclass
class _SegmentCarry:
    """Engagement numbering and boundary joins that the scan computes for one partition."""

    # Engagement id of the partition's first segment.
    first_id: int
    # Combined partial of the engagement's earlier segments when the first segment
    # continues an engagement from earlier partitions, otherwise None.
    earlier_part: dict | None = None
    # False when the last segment continues in a later partition, which then
    # outputs the whole engagement.
    keep_last: bool = True


def _engagements_in_order(hits: dd.DataFrame, rules: EngagementRules) -> dd.DataFrame:
    segments = hits.map_partitions(_segments_of_partition, rules=rules,
                                   meta=_empty(_SEGMENT_DTYPES))
    return map_partitions_with_carry(
        segments,
        summarize=_summarize_segments,
        scan=partial(_scan_segments, rules=rules),
        apply=_finish_partition,
        meta=_empty(ENGAGEMENT_DTYPES),
    )


def _segments_of_partition(hits: pd.DataFrame, rules: EngagementRules) -> pd.DataFrame:
    if hits.empty:
        return _empty(_SEGMENT_DTYPES)
    return _aggregate_segments(hits, _opening_hits(hits, rules))


def _summarize_segments(segments: pd.DataFrame) -> _SegmentSummary | None:
    if segments.empty:
        return None
    return _SegmentSummary(count=len(segments), first=_segment_row(segments, 0),
                           last=_segment_row(segments, len(segments) - 1))


def _segment_row(segments: pd.DataFrame, position: int) -> dict:
    row = {name: int(segments[name].iat[position]) for name in _SEGMENT_DTYPES
           if name != "players"}
    row["players"] = list(segments["players"].iat[position])
    return row


def _combine_segments(earlier: dict, later: dict) -> dict:
    """Return the partial of two consecutive segments of one engagement."""
    combined = {name: earlier[name] + later[name]
                for name in ("sum_x", "sum_z", "hits", "damage_raw")}
    combined.update(
        start_frame=earlier["start_frame"], end_frame=later["end_frame"],
        first_x=earlier["first_x"], first_z=earlier["first_z"],
        last_x=later["last_x"], last_z=later["last_z"],
        players=sorted(set(earlier["players"]) | set(later["players"])),
    )
    return combined


def _opens_after(previous: dict, segment: dict, rules: EngagementRules) -> bool:
    """Return whether ``segment``'s first hit opens a new engagement after ``previous``."""
    if segment["start_frame"] - previous["end_frame"] > rules.gap_frames:
        return True
    if rules.max_distance_squared is None:
        return False
    dx = segment["first_x"] - previous["last_x"]
    dz = segment["first_z"] - previous["last_z"]
    return dx * dx + dz * dz > rules.max_distance_squared


def _scan_segments(summaries: list[_SegmentSummary | None], rules: EngagementRules
                   ) -> list[_SegmentCarry]:
    """Number the engagements and join the ones that cross partition boundaries."""
    carries: list[_SegmentCarry] = []
    next_id = 0
    # The engagement that the latest non-empty partition ends with: its partial so
    # far and the index of that partition.
    open_part: dict | None = None
    open_index: int | None = None
    for index, summary in enumerate(summaries):
        if summary is None:
            carries.append(_SegmentCarry(first_id=next_id))
            continue
        continues = open_part is not None and not _opens_after(open_part, summary.first, rules)
        if continues:
            carries[open_index].keep_last = False
            carry = _SegmentCarry(first_id=next_id - 1, earlier_part=open_part)
        else:
            carry = _SegmentCarry(first_id=next_id)
        carries.append(carry)
        next_id = carry.first_id + summary.count

        if summary.count == 1 and continues:
            open_part = _combine_segments(open_part, summary.last)
        else:
            open_part = summary.last
        open_index = index
    return carries


def _finish_partition(segments: pd.DataFrame, carry: _SegmentCarry) -> pd.DataFrame:
    if carry.earlier_part is not None:
        first = _combine_segments(carry.earlier_part, _segment_row(segments, 0))
        segments = pd.concat([_segments_from_rows([first]), segments.iloc[1:]],
                             ignore_index=True)
    engagement_ids = carry.first_id + np.arange(len(segments), dtype=np.int64)
    if not carry.keep_last:
        segments = segments.iloc[:-1]
        engagement_ids = engagement_ids[:-1]
    return _finish(segments, engagement_ids)


def _segments_from_rows(rows: list[dict]) -> pd.DataFrame:
    columns = {name: pd.Series([row[name] for row in rows], dtype=dtype)
               for name, dtype in _SEGMENT_DTYPES.items()}
    return pd.DataFrame(columns)


# --- Sessioning per attacker unit ----------------------------------------------------

def _engagements_per_unit(hits: dd.DataFrame, rules: EngagementRules) -> dd.DataFrame:
    # A shuffle brings all hits of one attacker unit into one partition. The file
    # order key restores their (frame, file) order there, which the distance rule
    # needs when two hits of a unit share a frame.
    hits = add_file_order(hits).shuffle(on="attacker_unit_id")
    return hits.map_partitions(_engagements_of_units, rules=rules,
                               meta=_empty(PER_UNIT_DTYPES))


def _engagements_of_units(hits: pd.DataFrame, rules: EngagementRules) -> pd.DataFrame:
    if hits.empty:
        return _empty(PER_UNIT_DTYPES)
    hits = hits.sort_values(["attacker_unit_id", FILE_ORDER]).reset_index(drop=True)
    units = hits["attacker_unit_id"].to_numpy()
    opens = _opening_hits(hits, rules)
    opens[1:] |= units[1:] != units[:-1]

    segments = _aggregate_segments(hits, opens)
    segment_units = units[opens]
    engagement_ids = pd.Series(segment_units).groupby(segment_units).cumcount().to_numpy()
    return _finish(segments, engagement_ids, attacker_unit_ids=segment_units)


_MAIN_PARAMS = {"gap_frames": 300, "max_distance": 500, "require_attacker": True,
                "per_attacker_unit": False}

STATS = [
    Stat(
        name="combat_engagement_summary",
        description="Engagements: hits with a known attacker, split where time or "
                    "place jumps",
        aspects=("damage_log",),
        build=build_engagements,
        params=dict(_MAIN_PARAMS),
    ),
    Stat(
        name="combat_engagement_summary_global",
        description="Engagements over every hit, split where time jumps",
        aspects=("damage_log",),
        build=build_engagements,
        default=False,
        params={**_MAIN_PARAMS, "max_distance": None, "require_attacker": False},
    ),
    Stat(
        name="combat_engagement_summary_per_unit",
        description="Engagements of each attacker unit, split where time jumps",
        aspects=("damage_log",),
        build=build_engagements,
        default=False,
        params={**_MAIN_PARAMS, "gap_frames": 450, "max_distance": None,
                "per_attacker_unit": True},
    ),
]
