"""Computations that follow the frame order of an aspect's partitions.

The reader returns every time-series aspect with its partitions in file order, which
is frame order: every frame of partition ``i`` is at most every frame of partition
``i + 1``, and the rows inside a partition are in file order. Divisions are unknown.

:func:`map_partitions_with_carry` lets a stat carry state across partition
boundaries without gathering rows. Each partition is summarized in parallel, one task
scans the small summaries in partition order, and every partition is then mapped in
parallel with the carry that the scan computed for it. The graph has a few tasks per
partition plus the scan, so its size grows linearly with the number of partitions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd

FILE_ORDER = "file_order"

# A partition is one byte range of a file, so its rows stay far below 2**32 and the
# partition number and the row number fit in one int64 key.
_ROW_BITS = 32

_SUMMARY_META = pd.DataFrame({"partition": pd.Series([], dtype="int64"),
                              "summary": pd.Series([], dtype=object)})
_CARRY_META = pd.DataFrame({"carry": pd.Series([], dtype=object)})


def add_file_order(frame: dd.DataFrame, column: str = FILE_ORDER) -> dd.DataFrame:
    """Add an int64 column whose ascending order is the file order of the rows.

    The value is ``(partition number << 32) + row number in the partition``. It changes
    with the partitioning, but its order does not, so sorting by it after a shuffle
    restores the file order of the rows that a task receives.
    """
    meta = frame._meta.assign(**{column: pd.Series([], dtype="int64")})
    return frame.map_partitions(_add_file_order, column=column, meta=meta)


def _add_file_order(partition: pd.DataFrame, column: str,
                    partition_info: dict | None = None) -> pd.DataFrame:
    number = _partition_number(partition_info)
    if len(partition) >= 1 << _ROW_BITS:
        raise ValueError(f"partition {number} has {len(partition)} rows, too many for the "
                         "file order key; use a smaller blocksize")
    positions = np.arange(len(partition), dtype=np.int64)
    return partition.assign(**{column: (np.int64(number) << _ROW_BITS) + positions})


def map_partitions_with_carry(
    frame: dd.DataFrame,
    *,
    summarize: Callable[[pd.DataFrame], Any],
    scan: Callable[[list], list],
    apply: Callable[[pd.DataFrame, Any], pd.DataFrame],
    meta: pd.DataFrame,
) -> dd.DataFrame:
    """Map every partition of a frame-ordered frame with state from the other partitions.

    Parameters
    ----------
    frame : dask.dataframe.DataFrame
        Partitions in frame order, as the reader returns them. Partitions may be empty.
    summarize : callable
        ``summarize(partition) -> object``: a small picklable summary of one partition,
        such as its first and last rows. It is also called on empty partitions.
    scan : callable
        ``scan(summaries) -> carries``: takes the summaries in partition order and
        returns one carry per partition, in the same order. It runs in a single task,
        so the summaries and carries must stay small.
    apply : callable
        ``apply(partition, carry) -> pandas.DataFrame`` matching ``meta``.
    meta : pandas.DataFrame
        Empty frame with the columns and dtypes of the result.

    Returns
    -------
    dask.dataframe.DataFrame
        One output partition per input partition, in the same order.
    """
    summaries = frame.map_partitions(_summary_frame, summarize, meta=_SUMMARY_META,
                                     enforce_metadata=False)
    # Dask broadcasts a one-partition argument of map_partitions to every partition,
    # so each apply task reads the carries that the single scan task produced.
    carries = summaries.repartition(npartitions=1).map_partitions(
        _carry_frame, scan, meta=_CARRY_META, enforce_metadata=False)
    return frame.map_partitions(_apply_with_carry, carries, apply, meta=meta,
                                enforce_metadata=False)


def _partition_number(partition_info: dict | None) -> int:
    # Dask passes partition_info to every task of a function that accepts it.
    if partition_info is None:
        raise RuntimeError("the partition number is missing: call this through map_partitions")
    return partition_info["number"]


def _object_column(values: list) -> np.ndarray:
    # Filling an object array element by element keeps lists, tuples and frames whole.
    column = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        column[index] = value
    return column


def _summary_frame(partition: pd.DataFrame, summarize: Callable,
                   partition_info: dict | None = None) -> pd.DataFrame:
    number = _partition_number(partition_info)
    return pd.DataFrame({"partition": np.array([number], dtype=np.int64),
                         "summary": _object_column([summarize(partition)])})


def _carry_frame(summaries: pd.DataFrame, scan: Callable) -> pd.DataFrame:
    summaries = summaries.sort_values("partition", kind="stable")
    expected = np.arange(len(summaries), dtype=np.int64)
    if not np.array_equal(summaries["partition"].to_numpy(), expected):
        raise RuntimeError("partition summaries are incomplete: got partitions "
                           f"{summaries['partition'].tolist()}")
    carries = list(scan(list(summaries["summary"])))
    if len(carries) != len(summaries):
        raise RuntimeError(f"scan returned {len(carries)} carries for "
                           f"{len(summaries)} partitions")
    return pd.DataFrame({"carry": _object_column(carries)})


def _apply_with_carry(partition: pd.DataFrame, carries: pd.DataFrame, apply: Callable,
                      partition_info: dict | None = None) -> pd.DataFrame:
    number = _partition_number(partition_info)
    return apply(partition, carries["carry"].iat[number])
