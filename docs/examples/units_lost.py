"""Example stat plugin: units each player lost per minute.

Drop this file into a folder and pass the folder with ``--plugin-dir``; see
docs/writing-a-stat.md.
"""

import pandas as pd

from mpp_dask.schema import FRAMES_PER_MINUTE
from mpp_dask.stats import Stat


def _count_losses(partition: pd.DataFrame) -> pd.DataFrame:
    destroyed = partition[(partition["event_type"] == "DESTROYED")
                          & partition["unit_team_id"].notna()]
    return pd.DataFrame({
        "player_id": destroyed["unit_team_id"].astype("int64"),
        "minute": destroyed["frame"] // FRAMES_PER_MINUTE,
        "units_lost": 1,
    })


def build_units_lost(frames, params):
    losses = frames["unit_events"].map_partitions(
        _count_losses,
        meta={"player_id": "int64", "minute": "int64", "units_lost": "int64"},
    )
    counted = losses.groupby(["player_id", "minute"]).units_lost.sum().reset_index()
    # One row per player and minute is small, so sorting it in one partition is cheap.
    return counted.repartition(npartitions=1).map_partitions(
        lambda frame: frame.sort_values(["player_id", "minute"]).reset_index(drop=True))


STATS = [
    Stat(
        name="units_lost",
        description="Units each player lost per minute (DESTROYED unit events).",
        aspects=("unit_events",),
        build=build_units_lost,
        default=False,
    ),
]
