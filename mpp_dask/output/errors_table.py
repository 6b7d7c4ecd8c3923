"""The ``_errors`` table: the rows dropped by ``--skip-on-error``, with where and why."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mpp_dask.output.commit import ERRORS_TABLE, Staging
from mpp_dask.output.formats import PARQUET, file_name, write_file
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


def write_errors_table(staging: Staging, tallies: dict[str, FileTally],
                       output_formats: Sequence[str] = (PARQUET,)) -> bool:
    """Stage the ``_errors`` table of a replay in each format, or return False if no row was dropped.

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

    table = pa.Table.from_pylist(records, schema=ERRORS_SCHEMA)
    for output_format in output_formats:
        folder = staging.table_path(ERRORS_TABLE, output_format)
        if output_format == PARQUET:
            staging.fs.makedirs(folder, exist_ok=True)
            pq.write_table(table, posixpath.join(folder, "part.000000.parquet"),
                           filesystem=staging.fs)
        else:
            # Nullable Int64 keeps offsets and row numbers as ints when some are null.
            frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
            write_file(frame, output_format=output_format, table=ERRORS_TABLE,
                       replay_id=staging.replay_id, fs=staging.fs,
                       path=posixpath.join(folder, file_name(ERRORS_TABLE, output_format)))
    return True
