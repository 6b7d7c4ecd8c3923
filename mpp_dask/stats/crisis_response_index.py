"""crisis_response_index: how fast a team reacts when one of its units comes under fire.

A crisis starts at a damage_log hit whose victim unit was not hit in the
``lull_frames`` frames before it. That is the unit's first hit, or a hit more than
``lull_frames`` after its previous hit, which is any earlier row of that victim, with
or without an attacker. Several hits of one victim in one frame open at most one
crisis, at the first of them in file order. The response is the first commands_log
row of the victim's team at a frame at or after the crisis start whose cmd_name is
one of ``response_commands``. The unit survived unless its first DESTROYED
unit_event is at a frame at most ``survival_window_frames`` after the crisis start.

Steps 1 and 2 keep to the frame order of the damage_log partitions and need no
shuffle:

1. Crisis starts: each damage_log partition receives, through a scan over partition
   summaries, the last hit frame of every victim hit within ``lull_frames`` before
   the partition, and finds its crises locally.
2. Numbering: crises sharing a frame across a partition boundary are moved into one
   partition, then each partition sorts by (crisis_start_frame, victim_unit_id) and
   adds an offset from the scan.
3. Responses: an as-of forward join per team against the distinct qualifying
   (team, frame) pairs of commands_log.
4. Survival: a merge on unit id with each unit's first DESTROYED frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd

from mpp_dask.errors import ConfigError
from mpp_dask.schema import ENUMS
from mpp_dask.stats._ordered import map_partitions_with_carry
from mpp_dask.stats.registry import Stat

_INT64 = np.dtype("int64")

CRISIS_DTYPES: dict[str, object] = {
    "crisis_id": _INT64,
    "player_id": _INT64,
    "victim_unit_id": _INT64,
    "crisis_start_frame": _INT64,
    "time_to_response_frames": _INT64,
    "asset_survived": np.dtype("bool"),
}

_START_DTYPES: dict[str, object] = {
    "crisis_start_frame": _INT64,
    "victim_unit_id": _INT64,
    "player_id": _INT64,
}
_NUMBERED_DTYPES: dict[str, object] = {"crisis_id": _INT64, **_START_DTYPES}
_RESPONDED_DTYPES: dict[str, object] = {**_NUMBERED_DTYPES,
                                        "time_to_response_frames": _INT64}
_RESPONSE_DTYPES: dict[str, object] = {"team_id": _INT64, "frame": _INT64}


def _empty(dtypes: Mapping[str, object]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in dtypes.items()})


@dataclass(frozen=True)
class CrisisRules:
    """The parameters of crisis_response_index, checked."""

    lull_frames: int
    survival_window_frames: int
    response_commands: tuple[str, ...]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> CrisisRules:
        """Return the rules in ``params``.

        Raises
        ------
        ConfigError
            If a parameter is missing or has an invalid value.
        """
        for key in ("lull_frames", "survival_window_frames"):
            value = params.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"crisis_response_index parameter {key} must be a "
                                  f"non-negative integer number of frames, got {value!r}")
        commands = params.get("response_commands")
        if isinstance(commands, str) or not isinstance(commands, (list, tuple)):
            raise ConfigError("crisis_response_index parameter response_commands must be "
                              f"a list of command names, got {commands!r}")
        unknown = [name for name in commands if name not in ENUMS["Command"]]
        if unknown:
            raise ConfigError("crisis_response_index parameter response_commands has "
                              f"unknown command names {unknown}. Valid names: "
                              f"{', '.join(ENUMS['Command'])}")
        return cls(lull_frames=params["lull_frames"],
                   survival_window_frames=params["survival_window_frames"],
                   response_commands=tuple(commands))


def build_crisis_response(frames: Mapping[str, dd.DataFrame], params: Mapping[str, Any]
                          ) -> dd.DataFrame:
    """Build the crisis table of damage_log, commands_log and unit_events."""
    rules = CrisisRules.from_params(params)
    starts = _crisis_starts(frames["damage_log"], rules.lull_frames)
    numbered = map_partitions_with_carry(starts, summarize=_summarize_starts,
                                         scan=_scan_starts, apply=_number_starts,
                                         meta=_empty(_NUMBERED_DTYPES))

    responses = _response_frames(frames["commands_log"], rules.response_commands)
    responded = numbered.map_partitions(_attach_responses, responses,
                                        meta=_empty(_RESPONDED_DTYPES))

    events = frames["unit_events"]
    destroyed = events[events["event_type"] == "DESTROYED"]
    # At most one row per unit, so this side of the merge stays small.
    first_destroyed = destroyed.groupby("unit_id")["frame"].min().rename("destroyed_frame")
    merged = responded.merge(first_destroyed.to_frame(), how="left",
                             left_on="victim_unit_id", right_index=True)
    return merged.map_partitions(_finish, window=rules.survival_window_frames,
                                 meta=_empty(CRISIS_DTYPES))


# --- 1. Crisis starts ------------------------------------------------------------------

@dataclass(frozen=True)
class _RecentHits:
    """Last hit frame of each victim, victims sorted ascending."""

    victims: np.ndarray
    frames: np.ndarray


@dataclass(frozen=True)
class _HitSummary:
    first_frame: int
    # Victims hit within lull_frames of the partition's last frame, and their last hit.
    recent: _RecentHits


def _crisis_starts(damage: dd.DataFrame, lull_frames: int) -> dd.DataFrame:
    hits = damage[["frame", "victim_unit_id", "victim_team_id"]]
    return map_partitions_with_carry(
        hits,
        summarize=partial(_summarize_hits, lull_frames=lull_frames),
        scan=partial(_scan_hits, lull_frames=lull_frames),
        apply=partial(_find_starts, lull_frames=lull_frames),
        meta=_empty(_START_DTYPES),
    )


def _summarize_hits(hits: pd.DataFrame, lull_frames: int) -> _HitSummary | None:
    if hits.empty:
        return None
    frames = hits["frame"].to_numpy()
    tail = hits[frames >= frames[-1] - lull_frames]
    last = tail.groupby("victim_unit_id", sort=True)["frame"].max()
    recent = _RecentHits(victims=last.index.to_numpy(dtype=np.int64),
                         frames=last.to_numpy(dtype=np.int64))
    return _HitSummary(first_frame=int(frames[0]), recent=recent)


def _scan_hits(summaries: list[_HitSummary | None], lull_frames: int
               ) -> list[_RecentHits | None]:
    """Return, per partition, the last hit of each victim hit shortly before it."""
    carries: list[_RecentHits | None] = []
    last_hits: dict[int, int] = {}
    for summary in summaries:
        if summary is None:
            carries.append(None)
            continue
        # A hit more than lull_frames before the partition's first frame cannot stop
        # any hit of the partition from opening a crisis, so it is dropped.
        horizon = summary.first_frame - lull_frames
        last_hits = {victim: frame for victim, frame in last_hits.items() if frame >= horizon}
        victims = np.array(sorted(last_hits), dtype=np.int64)
        frames = np.array([last_hits[victim] for victim in victims.tolist()], dtype=np.int64)
        carries.append(_RecentHits(victims=victims, frames=frames))
        # Frames never decrease along the partitions, so later hits replace earlier ones.
        last_hits.update(zip(summary.recent.victims.tolist(), summary.recent.frames.tolist()))
    return carries


def _find_starts(hits: pd.DataFrame, earlier: _RecentHits | None, lull_frames: int
                 ) -> pd.DataFrame:
    """Return the hits that open a crisis, in file order."""
    if hits.empty:
        return _empty(_START_DTYPES)
    frames = hits["frame"].to_numpy(dtype=np.int64)
    victims = hits["victim_unit_id"].to_numpy(dtype=np.int64)

    # Sort by victim, keeping file order inside each victim, so that each hit's
    # previous hit of the same victim is the row before it.
    order = np.argsort(victims, kind="stable")
    sorted_victims = victims[order]
    sorted_frames = frames[order]
    previous = np.zeros(len(hits), dtype=np.int64)
    has_previous = np.zeros(len(hits), dtype=bool)
    previous[1:] = sorted_frames[:-1]
    has_previous[1:] = sorted_victims[1:] == sorted_victims[:-1]

    # A victim's first hit in this partition looks up its last hit in earlier ones.
    if earlier is not None and len(earlier.victims):
        firsts = np.flatnonzero(~has_previous)
        found_at = np.searchsorted(earlier.victims, sorted_victims[firsts])
        found_at = np.minimum(found_at, len(earlier.victims) - 1)
        found = earlier.victims[found_at] == sorted_victims[firsts]
        previous[firsts[found]] = earlier.frames[found_at[found]]
        has_previous[firsts[found]] = True

    opens = ~has_previous | (sorted_frames - previous > lull_frames)
    is_start = np.empty(len(hits), dtype=bool)
    is_start[order] = opens
    starts = hits[is_start]
    return pd.DataFrame({
        "crisis_start_frame": starts["frame"].to_numpy(dtype=np.int64),
        "victim_unit_id": starts["victim_unit_id"].to_numpy(dtype=np.int64),
        "player_id": starts["victim_team_id"].to_numpy(dtype=np.int64),
    })


# --- 2. Numbering ----------------------------------------------------------------------

@dataclass(frozen=True)
class _StartSummary:
    count: int
    first_frame: int
    last_frame: int
    # The partition's crises at its last frame, which move to a later partition when
    # that frame continues there.
    last_frame_rows: pd.DataFrame


@dataclass(frozen=True)
class _NumberCarry:
    first_id: int
    # Crises at this partition's first frame from earlier partitions, or None.
    incoming: pd.DataFrame | None = None
    # False when this partition's last frame continues in the next non-empty
    # partition, which then numbers the crises of that frame.
    keep_last: bool = True


def _summarize_starts(starts: pd.DataFrame) -> _StartSummary | None:
    if starts.empty:
        return None
    frames = starts["crisis_start_frame"].to_numpy()
    return _StartSummary(count=len(starts), first_frame=int(frames[0]),
                         last_frame=int(frames[-1]),
                         last_frame_rows=starts[frames == frames[-1]])


def _scan_starts(summaries: list[_StartSummary | None]) -> list[_NumberCarry]:
    """Move each frame's crises to the last partition containing it, and number them."""
    carries = [_NumberCarry(first_id=0) for _ in summaries]
    filled = [index for index, summary in enumerate(summaries) if summary is not None]
    next_id = 0
    passed_on: pd.DataFrame | None = None
    for position, index in enumerate(filled):
        summary = summaries[index]
        following = summaries[filled[position + 1]] if position + 1 < len(filled) else None
        keep_last = following is None or following.first_frame != summary.last_frame
        carries[index] = _NumberCarry(first_id=next_id, incoming=passed_on,
                                      keep_last=keep_last)

        crisis_count = summary.count + (0 if passed_on is None else len(passed_on))
        if keep_last:
            next_id += crisis_count
            passed_on = None
            continue
        if summary.first_frame == summary.last_frame and passed_on is not None:
            # The whole partition is one frame, which also continues: pass everything.
            passed_on = pd.concat([passed_on, summary.last_frame_rows], ignore_index=True)
        else:
            passed_on = summary.last_frame_rows
        next_id += crisis_count - len(passed_on)
    return carries


def _number_starts(starts: pd.DataFrame, carry: _NumberCarry) -> pd.DataFrame:
    if starts.empty:
        return _empty(_NUMBERED_DTYPES)
    last_frame = starts["crisis_start_frame"].iat[-1]
    if carry.incoming is not None:
        starts = pd.concat([carry.incoming, starts], ignore_index=True)
    if not carry.keep_last:
        starts = starts[starts["crisis_start_frame"] < last_frame]
    starts = starts.sort_values(["crisis_start_frame", "victim_unit_id"])
    numbered = starts.reset_index(drop=True)
    numbered.insert(0, "crisis_id", carry.first_id + np.arange(len(numbered), dtype=np.int64))
    return numbered.astype(_NUMBERED_DTYPES)


# --- 3. Responses ----------------------------------------------------------------------

def _response_frames(commands: dd.DataFrame, response_commands: tuple[str, ...]
                     ) -> dd.DataFrame:
    response_rows = commands[commands["cmd_name"].isin(list(response_commands))]
    pairs = response_rows[["team_id", "frame"]].map_partitions(
        _distinct_pairs, meta=_empty(_RESPONSE_DTYPES))
    # Distinct (team, frame) pairs number at most teams x game frames: 17 x 50,400,
    # about 860,000 pairs or 14 MB, for a 28-minute game. That is small by nature, so
    # one partition contains them all and every crisis partition joins against it.
    return pairs.repartition(npartitions=1).map_partitions(
        _distinct_pairs, meta=_empty(_RESPONSE_DTYPES))


def _distinct_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    distinct = pairs.drop_duplicates().astype(_RESPONSE_DTYPES)
    return distinct.sort_values("frame", kind="stable").reset_index(drop=True)


def _attach_responses(crises: pd.DataFrame, responses: pd.DataFrame) -> pd.DataFrame:
    """Add time_to_response_frames: the first response at or after each crisis start."""
    if crises.empty:
        return _empty(_RESPONDED_DTYPES)
    candidates = responses.rename(columns={"team_id": "player_id",
                                           "frame": "response_frame"})
    # merge_asof needs the left side sorted by its key. Crises are sorted by
    # (crisis_start_frame, victim_unit_id) and keep that order.
    joined = pd.merge_asof(crises, candidates, left_on="crisis_start_frame",
                           right_on="response_frame", by="player_id",
                           direction="forward", allow_exact_matches=True)
    response = joined["response_frame"].to_numpy(dtype="float64", na_value=np.nan)
    start = joined["crisis_start_frame"].to_numpy(dtype=np.int64)
    waited = np.where(np.isnan(response), -1, response - start)
    result = joined.drop(columns="response_frame")
    result["time_to_response_frames"] = waited.astype(np.int64)
    return result.astype(_RESPONDED_DTYPES)


# --- 4. Survival -----------------------------------------------------------------------

def _finish(crises: pd.DataFrame, window: int) -> pd.DataFrame:
    destroyed = crises["destroyed_frame"].to_numpy(dtype="float64", na_value=np.nan)
    limit = crises["crisis_start_frame"].to_numpy(dtype=np.int64) + window
    # A unit never destroyed has NaN here, and NaN <= limit is false: it survived.
    result = crises.drop(columns="destroyed_frame")
    result["asset_survived"] = ~(destroyed <= limit)
    # The merge may reorder rows inside a partition. A broadcast join, which Dask picks
    # when the destroyed table has few partitions, keeps each partition to one range
    # of crisis_id, and then this sort puts the whole table in crisis_id order.
    result = result.sort_values("crisis_id")
    return result[list(CRISIS_DTYPES)].astype(CRISIS_DTYPES).reset_index(drop=True)


STATS = [
    Stat(
        name="crisis_response_index",
        description="Per crisis (a unit hit after a lull): time until its team responds "
                    "and whether the unit survived",
        aspects=("damage_log", "commands_log", "unit_events"),
        build=build_crisis_response,
        params={"lull_frames": 450, "survival_window_frames": 900,
                "response_commands": ["ATTACK", "FIGHT", "REPAIR", "RECLAIM", "GUARD",
                                      "MOVE"]},
    ),
]
