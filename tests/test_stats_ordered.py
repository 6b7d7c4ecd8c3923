"""Tests of the frame-order helpers that the time-ordered stats share."""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from mpp_dask.stats._ordered import FILE_ORDER, add_file_order, map_partitions_with_carry


def _frame_from_parts(parts: list[pd.DataFrame]) -> dd.DataFrame:
    """Return a Dask frame whose partitions are exactly ``parts`` (some may be empty)."""
    return dd.from_delayed([dask.delayed(part) for part in parts], meta=parts[0].iloc[0:0],
                           verify_meta=False)


def _parts(*sizes: int) -> list[pd.DataFrame]:
    parts, start = [], 0
    for size in sizes:
        parts.append(pd.DataFrame({"value": np.arange(start, start + size, dtype=np.int64)}))
        start += size
    return parts


def _running_total_summary(partition: pd.DataFrame) -> int:
    return int(partition["value"].sum())


def _running_total_scan(summaries: list[int]) -> list[int]:
    carries, total = [], 0
    for summary in summaries:
        carries.append(total)
        total += summary
    return carries


def _running_total_apply(partition: pd.DataFrame, carry: int) -> pd.DataFrame:
    return partition.assign(total=carry + partition["value"].cumsum())


def test_carry_running_total_with_empty_partitions():
    frame = _frame_from_parts(_parts(3, 0, 2, 0, 0, 4))
    meta = pd.DataFrame({"value": pd.Series([], dtype="int64"),
                         "total": pd.Series([], dtype="int64")})
    result = map_partitions_with_carry(frame, summarize=_running_total_summary,
                                       scan=_running_total_scan,
                                       apply=_running_total_apply, meta=meta)

    assert result.npartitions == 6
    computed = result.compute(scheduler="sync").reset_index(drop=True)
    expected = pd.DataFrame({"value": np.arange(9, dtype=np.int64),
                             "total": np.cumsum(np.arange(9, dtype=np.int64))})
    pd.testing.assert_frame_equal(computed, expected, check_dtype=True)


def test_carry_keeps_partition_sizes():
    frame = _frame_from_parts(_parts(3, 0, 2))
    meta = pd.DataFrame({"value": pd.Series([], dtype="int64"),
                         "total": pd.Series([], dtype="int64")})
    result = map_partitions_with_carry(frame, summarize=_running_total_summary,
                                       scan=_running_total_scan,
                                       apply=_running_total_apply, meta=meta)

    sizes = result.map_partitions(len).compute(scheduler="sync").tolist()
    assert sizes == [3, 0, 2]


def test_carry_graph_grows_linearly():
    meta = pd.DataFrame({"value": pd.Series([], dtype="int64"),
                         "total": pd.Series([], dtype="int64")})
    task_counts = {}
    for partitions in (10, 40):
        frame = _frame_from_parts(_parts(*([2] * partitions)))
        result = map_partitions_with_carry(frame, summarize=_running_total_summary,
                                           scan=_running_total_scan,
                                           apply=_running_total_apply, meta=meta)
        task_counts[partitions] = len(result.__dask_graph__())

    # Four times the partitions gives at most about four times the tasks.
    assert task_counts[40] <= 4 * task_counts[10] + 10


def _wrong_length_scan(summaries: list) -> list:
    return summaries[:-1]


def test_carry_rejects_wrong_carry_count():
    frame = _frame_from_parts(_parts(1, 1))
    result = map_partitions_with_carry(frame, summarize=len, scan=_wrong_length_scan,
                                       apply=lambda partition, carry: partition,
                                       meta=frame._meta)

    with pytest.raises(RuntimeError, match="scan returned 1 carries for 2 partitions"):
        result.compute(scheduler="sync")


def test_file_order_sorts_like_file():
    frame = _frame_from_parts(_parts(2, 0, 3))
    ordered = add_file_order(frame).compute(scheduler="sync")

    assert ordered[FILE_ORDER].dtype == np.dtype("int64")
    assert ordered[FILE_ORDER].is_monotonic_increasing
    assert ordered[FILE_ORDER].is_unique
    shuffled = ordered.sample(frac=1.0, random_state=0)
    restored = shuffled.sort_values(FILE_ORDER)["value"].tolist()
    assert restored == list(range(5))
