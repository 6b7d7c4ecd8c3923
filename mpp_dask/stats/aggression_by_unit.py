"""aggression_by_unit: how far and how fast each unit moves away from its first position.

For each unit_positions sample, t = (frame - first frame) / 30 seconds and d is the
distance in the map plane (x, z) from the unit's first sample. The unit's score is
the sum of d / (t + time_offset_seconds) over its samples. The first sample is the
unit's row with the smallest frame, the first in file order on ties.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Real
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd

from mpp_dask.errors import ConfigError
from mpp_dask.schema import FRAMES_PER_SECOND
from mpp_dask.stats._ordered import FILE_ORDER, add_file_order
from mpp_dask.stats.registry import Stat

_INT64 = np.dtype("int64")

AGGRESSION_DTYPES: dict[str, object] = {
    "unit_id": _INT64,
    "team_id": _INT64,
    "unit_def_id": _INT64,
    "samples": _INT64,
    "aggression_score": np.dtype("float64"),
}


def _empty(dtypes: Mapping[str, object]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in dtypes.items()})


def _time_offset(params: Mapping[str, Any]) -> float:
    offset = params.get("time_offset_seconds")
    if isinstance(offset, bool) or not isinstance(offset, Real) or not offset > 0:
        raise ConfigError("aggression_by_unit parameter time_offset_seconds must be a "
                          f"positive number of seconds, got {offset!r}")
    return float(offset)


def build_aggression(frames: Mapping[str, dd.DataFrame], params: Mapping[str, Any]
                     ) -> dd.DataFrame:
    """Build the per-unit aggression table, sorted by aggression_score descending."""
    time_offset = _time_offset(params)
    positions = frames["unit_positions"][["frame", "unit_id", "unit_def_id", "team_id",
                                          "x", "z"]]

    # The shuffle brings every sample of a unit into one partition. Sorting them there
    # by file order finds the first sample and fixes the order in which the impulses
    # are added, so the float sum does not depend on the partitioning.
    positions = add_file_order(positions).shuffle(on="unit_id")
    scores = positions.map_partitions(_score_units, time_offset=time_offset,
                                      meta=_empty(AGGRESSION_DTYPES))

    # One row per unit is small by nature, so a single task sorts the whole table.
    return scores.repartition(npartitions=1).map_partitions(
        _sort_scores, meta=_empty(AGGRESSION_DTYPES))


def _score_units(positions: pd.DataFrame, time_offset: float) -> pd.DataFrame:
    if positions.empty:
        return _empty(AGGRESSION_DTYPES)
    positions = positions.sort_values(["unit_id", FILE_ORDER]).reset_index(drop=True)
    units = positions["unit_id"].to_numpy()
    is_first = np.ones(len(positions), dtype=bool)
    is_first[1:] = units[1:] != units[:-1]
    # Index of each row's first sample: rows are grouped by unit, each group starting
    # with its first sample.
    first = np.maximum.accumulate(np.where(is_first, np.arange(len(positions)), 0))

    frames = positions["frame"].to_numpy()
    x = positions["x"].to_numpy()
    z = positions["z"].to_numpy()
    dx = x - x[first]
    dz = z - z[first]
    seconds = (frames - frames[first]) / FRAMES_PER_SECOND
    # The squared distance is an exact integer, so only the square root rounds.
    distance = np.sqrt((dx * dx + dz * dz).astype(np.float64))
    impulses = pd.Series(distance / (seconds + time_offset))

    firsts = positions[is_first]
    grouped = impulses.groupby(units, sort=False)
    return pd.DataFrame({
        "unit_id": firsts["unit_id"].to_numpy(),
        "team_id": firsts["team_id"].to_numpy(),
        "unit_def_id": firsts["unit_def_id"].to_numpy(),
        "samples": grouped.size().to_numpy(),
        "aggression_score": grouped.sum().to_numpy(),
    }).astype(AGGRESSION_DTYPES)


def _sort_scores(scores: pd.DataFrame) -> pd.DataFrame:
    # unit_id breaks ties, so equal scores come out in the same order every run.
    ordered = scores.sort_values(["aggression_score", "unit_id"], ascending=[False, True])
    return ordered.reset_index(drop=True)


STATS = [
    Stat(
        name="aggression_by_unit",
        description="Per unit: distance moved from its first position, weighted by how "
                    "soon",
        aspects=("unit_positions",),
        build=build_aggression,
        params={"time_offset_seconds": 0.1},
    ),
]
