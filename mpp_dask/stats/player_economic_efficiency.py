"""player_economic_efficiency: damage each player dealt per unit of resource spent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd

from mpp_dask.stats._common import FLOAT64, INT64, divisor, empty_frame, final_team_rows, raw_integers
from mpp_dask.stats.registry import Stat

OUTPUT_DTYPES = {
    "player_id": INT64,
    "total_metal_spent": FLOAT64,
    "total_energy_spent": FLOAT64,
    "total_damage_output": FLOAT64,
    "damage_per_resource_unit": FLOAT64,
}


def _damage_per_resource_unit(final: pd.DataFrame) -> np.ndarray:
    # damage_dealt, metal_used and energy_used share the divisor 10, which cancels,
    # so the ratio of raw integers is one correctly rounded division.
    damage = raw_integers(final["damage_dealt"], divisor("team_stats", "damage_dealt"))
    spent = (raw_integers(final["metal_used"], divisor("team_stats", "metal_used"))
             + raw_integers(final["energy_used"], divisor("team_stats", "energy_used")))
    ratio = np.full(len(final), np.nan, dtype=FLOAT64)
    np.divide(damage, spent, out=ratio, where=spent != 0)
    return ratio


def _efficiency_table(final: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "player_id": final["team_id"],
        "total_metal_spent": final["metal_used"],
        "total_energy_spent": final["energy_used"],
        "total_damage_output": final["damage_dealt"],
        "damage_per_resource_unit": _damage_per_resource_unit(final),
    })


def build(frames: Mapping[str, dd.DataFrame], params: Mapping[str, Any]) -> dd.DataFrame:
    """Build each player's spending, damage and damage per resource unit from final rows.

    ``damage_per_resource_unit`` is NaN (null) when metal_used + energy_used is 0.
    """
    final = final_team_rows(frames["team_stats"], ["metal_used", "energy_used", "damage_dealt"])
    return final.map_partitions(_efficiency_table, meta=empty_frame(OUTPUT_DTYPES))


STATS = [
    Stat(
        name="player_economic_efficiency",
        description="Metal and energy each player spent, damage dealt, and damage per resource unit.",
        aspects=("team_stats",),
        build=build,
    ),
]
