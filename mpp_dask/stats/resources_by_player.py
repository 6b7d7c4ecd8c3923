"""resources_by_player: metal and energy each player produced and used in the game."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dask.dataframe as dd

from mpp_dask.stats._common import final_team_rows
from mpp_dask.stats.registry import Stat

# team_stats counter of the final row -> output column.
OUTPUT_COLUMNS = {
    "metal_produced": "total_metal_produced",
    "metal_used": "total_metal_used",
    "energy_produced": "total_energy_produced",
    "energy_used": "total_energy_used",
}


def build(frames: Mapping[str, dd.DataFrame], params: Mapping[str, Any]) -> dd.DataFrame:
    """Build the per-player resource totals from each team's final team_stats row."""
    final = final_team_rows(frames["team_stats"], list(OUTPUT_COLUMNS))
    table = final.rename(columns={"team_id": "player_id", **OUTPUT_COLUMNS})
    return table[["player_id", *OUTPUT_COLUMNS.values()]]


STATS = [
    Stat(
        name="resources_by_player",
        description="Metal and energy produced and used by each player over the game.",
        aspects=("team_stats",),
        build=build,
    ),
]
