"""calculate_player_apm_and_focus: actions per minute and the share of combat and economy orders."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd

from mpp_dask.stats._common import (
    AT_PARTITION_EDGE, FLOAT64, INT64, at_partition_edge, command_names, empty_frame,
    merge_edge_groups, minutes, reduce_groups, sort_in_one_partition,
)
from mpp_dask.stats.registry import Stat

DEFAULT_PARAMS = {
    "combat_commands": ["ATTACK", "FIGHT", "MANUAL_FIRE"],
    "economy_commands": ["BUILD", "RECLAIM", "REPAIR"],
}

OUTPUT_DTYPES = {
    "player_id": INT64,
    "minute": INT64,
    "actions_per_minute": INT64,
    "unit_commands": INT64,
    "combat_focus_pct": FLOAT64,
    "economy_focus_pct": FLOAT64,
}

_ACTION_DTYPES = {"team_id": INT64, "frame": INT64, "cmd_id": INT64, "combat": INT64,
                  "economy": INT64, "unit_commands": INT64, AT_PARTITION_EDGE: np.dtype(bool)}
_MINUTE_ACTION_DTYPES = {"team_id": INT64, "minute": INT64, "combat": INT64, "economy": INT64,
                         "unit_commands": INT64}


def _partition_actions(part: pd.DataFrame, *, combat: tuple[str, ...],
                       economy: tuple[str, ...]) -> pd.DataFrame:
    """Reduce one partition of commands_log to one row per action (team_id, frame, cmd_id)."""
    # A null cmd_name is in neither list, so its row marks neither category.
    names = part["cmd_name"]
    actions = reduce_groups(
        {"team_id": part["team_id"].to_numpy(dtype="int64"),
         "frame": part["frame"].to_numpy(dtype="int64"),
         "cmd_id": part["cmd_id"].to_numpy(dtype="int64")},
        {"combat": (np.maximum, names.isin(combat).to_numpy(dtype="int64")),
         "economy": (np.maximum, names.isin(economy).to_numpy(dtype="int64")),
         "unit_commands": (np.add, np.ones(len(part), dtype="int64"))},
    )
    actions[AT_PARTITION_EDGE] = at_partition_edge(actions["frame"])
    return actions


def _with_minute(actions: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "team_id": actions["team_id"],
        "minute": minutes(actions["frame"]),
        "combat": actions["combat"],
        "economy": actions["economy"],
        "unit_commands": actions["unit_commands"],
    })


def _focus_table(groups: pd.DataFrame) -> pd.DataFrame:
    actions = groups["actions"].to_numpy(dtype="int64")
    # 100 * count is an exact integer, so each percentage is one correctly rounded
    # division. Every group has at least one action.
    return pd.DataFrame({
        "player_id": groups.index.get_level_values("team_id").to_numpy(dtype="int64"),
        "minute": groups.index.get_level_values("minute").to_numpy(dtype="int64"),
        "actions_per_minute": actions,
        "unit_commands": groups["unit_commands"].to_numpy(dtype="int64"),
        "combat_focus_pct": 100 * groups["combat_actions"].to_numpy(dtype="int64") / actions,
        "economy_focus_pct": 100 * groups["economy_actions"].to_numpy(dtype="int64") / actions,
    })


def build(frames: Mapping[str, dd.DataFrame], params: Mapping[str, Any]) -> dd.DataFrame:
    """Build actions per minute, command rows and focus percentages per player and minute.

    An action is one distinct (team_id, frame, cmd_id): an order given to many
    units in one frame is one action, however the rows fall into partitions. An
    action is a combat action when any of its rows has a ``cmd_name`` in
    ``params["combat_commands"]``, and an economy action likewise with
    ``params["economy_commands"]``. An action whose names are all null counts in the
    total only, and one with names from both lists counts in both.
    """
    combat = command_names(params, "combat_commands")
    economy = command_names(params, "economy_commands")

    partials = frames["commands_log"].map_partitions(
        _partition_actions, combat=combat, economy=economy, meta=empty_frame(_ACTION_DTYPES))

    # The rows of one action fall into several partitions when its frame is at a
    # partition boundary. merge_edge_groups joins those parts into one action.
    actions = merge_edge_groups(partials, ["team_id", "frame", "cmd_id"],
                                {"combat": "max", "economy": "max", "unit_commands": "sum"})
    actions = actions.map_partitions(_with_minute, meta=empty_frame(_MINUTE_ACTION_DTYPES))

    # One output partition: there are only players x minutes groups.
    per_minute = actions.groupby(["team_id", "minute"]).agg(
        actions=("combat", "count"),
        combat_actions=("combat", "sum"),
        economy_actions=("economy", "sum"),
        unit_commands=("unit_commands", "sum"),
        split_out=1,
    )
    table = per_minute.map_partitions(_focus_table, meta=empty_frame(OUTPUT_DTYPES))
    return sort_in_one_partition(table, ["player_id", "minute"])


STATS = [
    Stat(
        name="calculate_player_apm_and_focus",
        description="Actions per minute of each player and the percentage of combat and "
                    "economy actions.",
        aspects=("commands_log",),
        build=build,
        params=DEFAULT_PARAMS,
    ),
]
