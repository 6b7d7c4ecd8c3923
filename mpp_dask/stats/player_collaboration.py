"""player_collaboration: resources each player sent to and received from allies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dask.dataframe as dd
import pandas as pd

from mpp_dask.stats._common import FLOAT64, INT64, divisor, empty_frame, final_team_rows, raw_integers
from mpp_dask.stats.registry import Stat

OUTPUT_DTYPES = {
    "player_id": INT64,
    "total_metal_sent": FLOAT64,
    "total_metal_received": FLOAT64,
    "total_energy_sent": FLOAT64,
    "total_energy_received": FLOAT64,
    "net_metal_contribution": FLOAT64,
    "net_energy_contribution": FLOAT64,
}


def _net_contribution(sent: pd.Series, received: pd.Series) -> object:
    # Subtracting the raw integers and dividing once gives the correctly rounded
    # difference (12.3 - 4.5 is 7.8, not 7.800000000000001).
    column_divisor = divisor("team_stats", sent.name)
    return (raw_integers(sent, column_divisor) - raw_integers(received, column_divisor)) / column_divisor


def _collaboration_table(final: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "player_id": final["team_id"],
        "total_metal_sent": final["metal_sent"],
        "total_metal_received": final["metal_received"],
        "total_energy_sent": final["energy_sent"],
        "total_energy_received": final["energy_received"],
        "net_metal_contribution": _net_contribution(final["metal_sent"], final["metal_received"]),
        "net_energy_contribution": _net_contribution(final["energy_sent"],
                                                     final["energy_received"]),
    })


def build(frames: Mapping[str, dd.DataFrame], params: Mapping[str, Any]) -> dd.DataFrame:
    """Build each player's sent, received and net resources from the final team_stats rows."""
    final = final_team_rows(frames["team_stats"], ["metal_sent", "metal_received",
                                                   "energy_sent", "energy_received"])
    return final.map_partitions(_collaboration_table, meta=empty_frame(OUTPUT_DTYPES))


STATS = [
    Stat(
        name="player_collaboration",
        description="Metal and energy each player sent to and received from allies, and the net.",
        aspects=("team_stats",),
        build=build,
    ),
]
