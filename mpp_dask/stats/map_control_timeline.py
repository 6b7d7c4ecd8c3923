"""map_control_timeline: how much of the map each player's units covered, per minute."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd

from mpp_dask.stats._common import (
    AT_PARTITION_EDGE, FLOAT64, INT64, at_partition_edge, empty_frame, merge_edge_groups, minutes,
    reduce_groups, sort_in_one_partition,
)
from mpp_dask.stats.registry import Stat

OUTPUT_DTYPES = {
    "player_id": INT64,
    "minute": INT64,
    "bounding_box_area": FLOAT64,
    "dispersion_x": FLOAT64,
    "dispersion_z": FLOAT64,
    "samples": INT64,
    "units": INT64,
}

INT64_MAX = 2**63 - 1

_MOMENT_AGGREGATIONS = {
    "samples": "sum",
    "x_min": "min", "x_max": "max", "x_sum": "sum", "x_squared_sum": "sum",
    "z_min": "min", "z_max": "max", "z_sum": "sum", "z_squared_sum": "sum",
}
_UNIT_MINUTE_DTYPES = {"team_id": INT64, "minute": INT64, "unit_id": INT64,
                       **{column: INT64 for column in _MOMENT_AGGREGATIONS},
                       AT_PARTITION_EDGE: np.dtype(bool)}


def _unit_minute_moments(part: pd.DataFrame) -> pd.DataFrame:
    """Reduce one partition of unit_positions to integer moments per (team, minute, unit)."""
    x = part["x"].to_numpy(dtype="int64")
    z = part["z"].to_numpy(dtype="int64")
    groups = reduce_groups(
        {"team_id": part["team_id"].to_numpy(dtype="int64"),
         "minute": minutes(part["frame"]),
         "unit_id": part["unit_id"].to_numpy(dtype="int64")},
        {"samples": (np.add, np.ones(len(part), dtype="int64")),
         "x_min": (np.minimum, x),
         "x_max": (np.maximum, x),
         "x_sum": (np.add, x),
         "x_squared_sum": (np.add, x * x),
         "z_min": (np.minimum, z),
         "z_max": (np.maximum, z),
         "z_sum": (np.add, z),
         "z_squared_sum": (np.add, z * z)},
    )
    groups[AT_PARTITION_EDGE] = at_partition_edge(groups["minute"])
    return groups


def _sample_std(samples: int, low: int, high: int, total: int, total_squares: int,
                where: str) -> float:
    """Return the sample standard deviation (ddof 1) from exact integer moments.

    Returns NaN (null) for a single sample. The numerator and denominator are
    Python ints, so the variance is one correctly rounded division.

    Raises
    ------
    ValueError
        If the int64 sums behind ``total`` and ``total_squares`` may have
        overflowed. They are exact while samples * max(|v|, v**2) fits in int64,
        and map coordinates are far below that bound.
    """
    if samples < 2:
        return math.nan
    largest = max(abs(low), abs(high))
    if samples * max(largest, largest * largest) > INT64_MAX:
        raise ValueError(
            f"map_control_timeline: coordinates up to {largest} over {samples} samples "
            f"({where}) are too large for exact int64 moments. Check the x and z values "
            "of unit_positions.")
    numerator = samples * total_squares - total * total
    return math.sqrt(numerator / (samples * (samples - 1)))


def _timeline_table(groups: pd.DataFrame) -> pd.DataFrame:
    records = []
    # A Python loop over the (team, minute) groups is cheap because the table is
    # small, and Python ints keep the area and the moments free of overflow.
    for row in groups.to_dict("records"):
        samples = int(row["samples"])
        where = f"team {row['team_id']}, minute {row['minute']}"
        x_low, x_high = int(row["x_min"]), int(row["x_max"])
        z_low, z_high = int(row["z_min"]), int(row["z_max"])
        records.append((
            int(row["team_id"]),
            int(row["minute"]),
            float((x_high - x_low) * (z_high - z_low)),
            _sample_std(samples, x_low, x_high, int(row["x_sum"]), int(row["x_squared_sum"]),
                        where),
            _sample_std(samples, z_low, z_high, int(row["z_sum"]), int(row["z_squared_sum"]),
                        where),
            samples,
            int(row["units"]),
        ))
    table = pd.DataFrame.from_records(records, columns=list(OUTPUT_DTYPES))
    return table.astype(OUTPUT_DTYPES)


def build(frames: Mapping[str, dd.DataFrame], params: Mapping[str, Any]) -> dd.DataFrame:
    """Build bounding box area, dispersion, samples and distinct units per player and minute.

    Positions are first reduced per (team, minute, unit), which also counts the
    distinct units, then per (team, minute). Sums are int64 over the raw integer
    coordinates, so the result does not depend on partitioning.
    """
    partials = frames["unit_positions"].map_partitions(
        _unit_minute_moments, meta=empty_frame(_UNIT_MINUTE_DTYPES))
    per_unit = merge_edge_groups(partials, ["team_id", "minute", "unit_id"],
                                 _MOMENT_AGGREGATIONS)

    # One output partition: there are only players x minutes groups.
    per_minute = per_unit.groupby(["team_id", "minute"]).agg(
        units=("unit_id", "count"),
        **{column: (column, how) for column, how in _MOMENT_AGGREGATIONS.items()},
        split_out=1,
    )
    per_minute = per_minute.reset_index()
    table = per_minute.map_partitions(_timeline_table, meta=empty_frame(OUTPUT_DTYPES))
    return sort_in_one_partition(table, ["player_id", "minute"])


STATS = [
    Stat(
        name="map_control_timeline",
        description="Bounding box area, dispersion, samples and distinct units of each "
                    "player's positions per minute.",
        aspects=("unit_positions",),
        build=build,
    ),
]
