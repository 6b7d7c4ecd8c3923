"""force_composition_timeline: units each player created per minute, by unit def."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dask.dataframe as dd
import pandas as pd

from mpp_dask.stats._common import INT64, empty_frame, minutes, sort_in_one_partition
from mpp_dask.stats.registry import Stat

OUTPUT_DTYPES = {"player_id": INT64, "minute": INT64, "unit_def_id": INT64,
                 "units_produced": INT64}

_KEYS = ["player_id", "minute", "unit_def_id"]
_CREATED_DTYPES = {"player_id": INT64, "minute": INT64, "unit_def_id": INT64}


def _created_units(part: pd.DataFrame) -> pd.DataFrame:
    created = part[(part["event_type"] == "CREATED")
                   & part["unit_team_id"].notna()
                   & part["unit_def_id"].notna()]
    return pd.DataFrame({
        "player_id": created["unit_team_id"].to_numpy(dtype="int64"),
        "minute": minutes(created["frame"]),
        "unit_def_id": created["unit_def_id"].to_numpy(dtype="int64"),
    })


def _composition_table(groups: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "player_id": groups.index.get_level_values("player_id").to_numpy(dtype="int64"),
        "minute": groups.index.get_level_values("minute").to_numpy(dtype="int64"),
        "unit_def_id": groups.index.get_level_values("unit_def_id").to_numpy(dtype="int64"),
        "units_produced": groups["units_produced"].to_numpy(dtype="int64"),
    })


def build(frames: Mapping[str, dd.DataFrame], params: Mapping[str, Any]) -> dd.DataFrame:
    """Build the count of CREATED events per (player, minute, unit def), in long format.

    Events with a null ``unit_team_id`` or ``unit_def_id`` are left out.
    """
    created = frames["unit_events"].map_partitions(_created_units,
                                                   meta=empty_frame(_CREATED_DTYPES))
    # One output partition: at most players x minutes x unit defs groups.
    groups = created.groupby(_KEYS).agg(units_produced=("minute", "count"), split_out=1)
    table = groups.map_partitions(_composition_table, meta=empty_frame(OUTPUT_DTYPES))
    return sort_in_one_partition(table, _KEYS)


STATS = [
    Stat(
        name="force_composition_timeline",
        description="Units created by each player per minute, one row per unit def.",
        aspects=("unit_events",),
        build=build,
    ),
]
