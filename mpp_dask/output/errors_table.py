"""The ``_errors`` table: the rows dropped by ``--skip-on-error``, with where and why."""

from __future__ import annotations

import posixpath

import pyarrow as pa
import pyarrow.parquet as pq

from mpp_dask.output.commit import ERRORS_TABLE, Staging
from mpp_dask.reading.partitions import FileTally

ERRORS_SCHEMA = pa.schema([
    ("aspect", pa.string()),
    ("file", pa.string()),
    ("offset", pa.int64()),
    ("row", pa.int64()),
    ("reason", pa.string()),
    ("field", pa.string()),
    ("expected", pa.string()),
    ("found", pa.string()),
])


def write_errors_table(staging: Staging, tallies: dict[str, FileTally]) -> bool:
    """Stage the ``_errors`` table of a replay; return False when no row was dropped.

    Each file keeps at most ``MAX_KEPT_PROBLEMS`` problems (see
    :mod:`mpp_dask.reading.partitions`); the manifest has the full counts per reason.
    """
    records = [
        {"aspect": aspect_name, "file": tally.urlpath, "offset": problem.offset,
         "row": problem.row, "reason": problem.reason, "field": problem.field,
         "expected": problem.expected, "found": problem.found}
        for aspect_name, tally in tallies.items()
        for problem in tally.problems
    ]
    if not records:
        return False

    folder = staging.table_path(ERRORS_TABLE)
    staging.fs.makedirs(folder, exist_ok=True)
    table = pa.Table.from_pylist(records, schema=ERRORS_SCHEMA)
    pq.write_table(table, posixpath.join(folder, "part.000000.parquet"),
                   filesystem=staging.fs)
    return True
