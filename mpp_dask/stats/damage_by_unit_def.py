"""damage_by_unit_def: damage dealt and hits per attacking unit definition."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dask.dataframe as dd
import pandas as pd

from mpp_dask.stats._common import (
    FLOAT64, INT64, divisor, empty_frame, raw_integers, sort_in_one_partition,
)
from mpp_dask.stats.registry import Stat

DAMAGE_DIVISOR = divisor("damage_log", "damage")

OUTPUT_DTYPES = {"unit_def_id": INT64, "total_damage_dealt": FLOAT64, "hits": INT64}

_HIT_DTYPES = {"unit_def_id": INT64, "damage_raw": INT64}


def _hits_with_attacker_def(part: pd.DataFrame) -> pd.DataFrame:
    known = part[part["attacker_def_id"].notna()]
    return pd.DataFrame({
        "unit_def_id": known["attacker_def_id"].to_numpy(dtype="int64"),
        "damage_raw": raw_integers(known["damage"], DAMAGE_DIVISOR),
    })


def _damage_table(groups: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "unit_def_id": groups.index.to_numpy(dtype="int64"),
        "total_damage_dealt": groups["damage_raw"].to_numpy() / DAMAGE_DIVISOR,
        "hits": groups["hits"].to_numpy(dtype="int64"),
    })


def build(frames: Mapping[str, dd.DataFrame], params: Mapping[str, Any]) -> dd.DataFrame:
    """Build total damage and hit count per attacker unit def, largest damage first.

    Rows without an ``attacker_def_id`` are left out. Damage is summed as raw
    integers (tenths) and divided once, so the totals do not depend on partitioning.
    Ties in damage are ordered by ``unit_def_id``.
    """
    hits = frames["damage_log"].map_partitions(_hits_with_attacker_def,
                                               meta=empty_frame(_HIT_DTYPES))
    # One output partition: there are only as many groups as unit defs.
    groups = hits.groupby("unit_def_id").agg(damage_raw=("damage_raw", "sum"),
                                             hits=("damage_raw", "count"), split_out=1)
    table = groups.map_partitions(_damage_table, meta=empty_frame(OUTPUT_DTYPES))
    return sort_in_one_partition(table, ["total_damage_dealt", "unit_def_id"],
                                 ascending=[False, True])


STATS = [
    Stat(
        name="damage_by_unit_def",
        description="Total damage dealt and hits per attacking unit definition.",
        aspects=("damage_log",),
        build=build,
    ),
]
