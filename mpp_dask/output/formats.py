"""Output formats besides Parquet: gzip JSON Lines, gzip MessagePack and CSV files.

Each table of a replay becomes one file per format, at
``<output-dir>/_formats/<format>/<table>/replay_id=<id>/<table><extension>``. The
separate ``_formats`` tree keeps the Parquet datasets at ``<output-dir>/<table>``
free of other files. The ``replay_id=<id>`` folders let hive-aware readers
(``pyarrow.dataset``, DuckDB, Spark) add the replay id as a column, as they do for
Parquet. Like the Parquet files, the rows themselves contain no ``replay_id``.

Every format writes values by the same rules:

- a null (pandas ``NA``, ``NaN``, ``None``) is JSON ``null``, MessagePack nil or an
  empty CSV field;
- a categorical value is its label;
- a float is written with enough digits to read back equal (``repr``), and an int64
  is written exactly;
- a list column is an array, which CSV writes as JSON array text such as ``[1,2]``.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import posixpath
import shutil
import uuid
from collections.abc import Iterable, Iterator
from typing import IO, Any

import dask.dataframe as dd
import fsspec
import msgpack
import numpy as np
import pandas as pd
import pyarrow as pa

from mpp_dask.errors import ConfigError

PARQUET = "parquet"
JSONL_GZIP = "jsonl-gzip"
MSGPACK_GZIP = "msgpack-gzip"
CSV = "csv"

FILE_EXTENSIONS = {JSONL_GZIP: ".jsonl.gz", MSGPACK_GZIP: ".msgpack.gz", CSV: ".csv"}
OUTPUT_FORMATS = (PARQUET, *FILE_EXTENSIONS)
FORMATS_FOLDER = "_formats"

_GZIP_FORMATS = (JSONL_GZIP, MSGPACK_GZIP)
# zlib's default level, which compresses faster than Python's default of 9.
_GZIP_LEVEL = 6
# Rows converted to Python objects at a time, which bounds the memory that a
# partition's encoding needs beyond the partition itself.
_BATCH_ROWS = 10_000
_COPY_BUFFER_BYTES = 1 << 20

_JOINED_META = pd.DataFrame({"format": pd.Series([], dtype=object),
                             "rows": pd.Series([], dtype="int64"),
                             "bytes": pd.Series([], dtype="int64")})


def resolve_output_formats(requested: str | Iterable[str]) -> list[str]:
    """Return the output formats named in ``requested``, without repeats, in request order.

    Raises
    ------
    ConfigError
        If no format is named or a name is not one of ``OUTPUT_FORMATS``.
    """
    names = [requested] if isinstance(requested, str) else list(requested or [])
    names = list(dict.fromkeys(names))
    if not names:
        raise ConfigError(f"no output format given; valid formats: {', '.join(OUTPUT_FORMATS)}")
    unknown = [name for name in names if name not in OUTPUT_FORMATS]
    if unknown:
        raise ConfigError(f"unknown output format {', '.join(map(repr, unknown))}; valid "
                          f"formats: {', '.join(OUTPUT_FORMATS)}")
    return names


def format_folder(output_format: str) -> str:
    """Return the folder, relative to the output folder, that contains a format's tables."""
    if output_format == PARQUET:
        return ""
    return posixpath.join(FORMATS_FOLDER, output_format)


def file_name(table: str, output_format: str) -> str:
    """Return the name of the one file of ``table`` per replay in a non-Parquet format."""
    return f"{table}{FILE_EXTENSIONS[output_format]}"


def column_type(dtype: Any) -> str:
    """Return the type name of a column in the MessagePack header.

    Names are ``int64`` (also for the nullable ``Int64``), ``float64``, ``bool``,
    ``string``, ``category`` (written as string labels) and ``list<...>`` of one of
    these, such as ``list<int64>``. Other dtypes are named by ``str(dtype)``.
    """
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if isinstance(dtype, pd.ArrowDtype):
        return _arrow_type_name(dtype.pyarrow_dtype)
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_numeric_dtype(dtype):
        return np.dtype(getattr(dtype, "numpy_dtype", dtype)).name
    if pd.api.types.is_string_dtype(dtype):
        return "string"
    return str(dtype)


def _arrow_type_name(arrow_type: pa.DataType) -> str:
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return f"list<{_arrow_type_name(arrow_type.value_type)}>"
    if pa.types.is_floating(arrow_type):
        return f"float{arrow_type.bit_width}"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    return str(arrow_type)


def encode_header(output_format: str, table: str, replay_id: str,
                  meta: pd.DataFrame) -> bytes:
    """Return the bytes that start a file of ``table``, before any row.

    MessagePack files start with a gzip member that contains one map: ``table``,
    ``replay_id``, ``columns`` (the names) and ``types`` (see :func:`column_type`).
    CSV files start with the header line. JSON Lines files have no header.
    """
    columns = [str(name) for name in meta.columns]
    if output_format == MSGPACK_GZIP:
        header = {"table": table, "replay_id": replay_id, "columns": columns,
                  "types": [column_type(dtype) for dtype in meta.dtypes]}
        return gzip.compress(msgpack.packb(header, use_bin_type=True),
                             compresslevel=_GZIP_LEVEL, mtime=0)
    if output_format == CSV:
        return _encode_csv([columns])
    return b""


def format_writes(frame: dd.DataFrame, *, table: str, replay_id: str,
                  output_formats: list[str], file_urlpaths: dict[str, str],
                  chunk_urlpath: str, storage_options: dict | None = None) -> dd.DataFrame:
    """Return the lazy write of ``frame`` as one file per format in ``output_formats``.

    Each partition encodes its rows into one chunk file per format under
    ``chunk_urlpath``, and then one task joins the chunks of each format, in partition
    order, after the header into the file at ``file_urlpaths[format]``. Concatenated
    gzip members form a valid gzip file, and CSV chunks without a header line join
    to one CSV file. The joining task removes the chunks.

    The result has one row per format: ``format``, ``rows`` and ``bytes`` (of the
    joined file).

    Like ``to_parquet``, this creates the output and chunk folders now, on the
    client, and the tasks never create folders. A task that still runs after a
    failed replay's staging folder was removed then fails on the missing folder
    instead of leaving files behind.
    """
    # Each partition's rows are encoded where the partition is, within the same
    # computation as the Parquet writes, so no table passes through the client and
    # every aspect is still decoded once. The cost is that each byte is written
    # twice (as a chunk, then in the joined file), and that the join of one file is
    # a sequential copy on one worker.
    # NOTE: object stores have no folders, so there such a late task can still
    # write a chunk or file into the removed staging prefix.
    for output_format in output_formats:
        for urlpath in (posixpath.join(chunk_urlpath, output_format),
                        posixpath.dirname(file_urlpaths[output_format])):
            fs, folder = fsspec.core.url_to_fs(urlpath, **(storage_options or {}))
            fs.makedirs(folder, exist_ok=True)

    headers = {output_format: encode_header(output_format, table, replay_id, frame._meta)
               for output_format in output_formats}
    return frame.reduction(
        _write_chunks, _join_chunks, meta=_JOINED_META, split_every=False,
        token="write-formats",
        chunk_kwargs={"output_formats": tuple(output_formats), "chunk_urlpath": chunk_urlpath,
                      "storage_options": storage_options or {}},
        aggregate_kwargs={"headers": headers, "file_urlpaths": dict(file_urlpaths),
                          "storage_options": storage_options or {}},
    )


def write_file(frame: pd.DataFrame, *, output_format: str, table: str, replay_id: str,
               fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Write a whole pandas frame as the file of ``table`` in ``output_format``.

    This is for small tables built on the client, such as ``_errors``. The file
    is the same as one that :func:`format_writes` joins from a single partition.
    """
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as target:
        target.write(encode_header(output_format, table, replay_id, frame))
        _write_rows(frame, (output_format,), [target])


def _write_chunks(partition: pd.DataFrame, *, output_formats: tuple[str, ...],
                  chunk_urlpath: str, storage_options: dict) -> pd.DataFrame:
    """Write a partition's rows as one chunk file per format and return the chunks' URLs.

    The chunk name is random, so a task that runs again after a worker was lost
    writes new chunks. Only the chunks that its result names are joined, and the
    staging folder removes the others.
    """
    fs, folder = fsspec.core.url_to_fs(chunk_urlpath, **storage_options)
    name = uuid.uuid4().hex
    paths = [posixpath.join(folder, output_format, name) for output_format in output_formats]

    with contextlib.ExitStack() as stack:
        targets = [stack.enter_context(fs.open(path, "wb")) for path in paths]
        _write_rows(partition, output_formats, targets)

    return pd.DataFrame({"format": list(output_formats),
                         "chunk": [fs.unstrip_protocol(path) for path in paths],
                         "rows": np.full(len(paths), len(partition), dtype="int64")})


def _join_chunks(written: pd.DataFrame, *, headers: dict[str, bytes],
                 file_urlpaths: dict[str, str], storage_options: dict) -> pd.DataFrame:
    """Join each format's chunks, in the order of ``written``, into its file."""
    joined = []
    for output_format, urlpath in file_urlpaths.items():
        chunks = written.loc[written["format"] == output_format]
        fs, path = fsspec.core.url_to_fs(urlpath, **storage_options)
        with fs.open(path, "wb") as target:
            target.write(headers[output_format])
            for chunk in chunks["chunk"]:
                with fs.open(chunk, "rb") as source:
                    shutil.copyfileobj(source, target, _COPY_BUFFER_BYTES)

        # The chunks stay until the commit removes the staging folder: Dask runs this
        # task again when its worker dies, and it must find them then.
        joined.append({"format": output_format, "rows": int(chunks["rows"].sum()),
                       "bytes": int(fs.size(path))})
    return pd.DataFrame(joined, columns=list(_JOINED_META.columns)).astype(_JOINED_META.dtypes)


def _write_rows(frame: pd.DataFrame, output_formats: tuple[str, ...],
                targets: list[IO[bytes]]) -> None:
    """Append the rows of ``frame`` to each target in its format (gzip: one member)."""
    columns = [str(name) for name in frame.columns]

    with contextlib.ExitStack() as stack:
        streams = [
            stack.enter_context(gzip.GzipFile(fileobj=target, mode="wb", mtime=0,
                                              compresslevel=_GZIP_LEVEL))
            if output_format in _GZIP_FORMATS else target
            for output_format, target in zip(output_formats, targets)
        ]
        for rows in _row_batches(frame):
            for output_format, stream in zip(output_formats, streams):
                stream.write(_ENCODERS[output_format](columns, rows))


def _row_batches(frame: pd.DataFrame) -> Iterator[list[tuple]]:
    for start in range(0, len(frame), _BATCH_ROWS):
        batch = frame.iloc[start:start + _BATCH_ROWS]
        yield list(zip(*(_python_values(series) for _, series in batch.items())))


def _python_values(series: pd.Series) -> list:
    """Return the values of a column as Python objects, with None for every null."""
    if isinstance(series.dtype, pd.ArrowDtype):
        # Arrow lists become Python lists; astype(object) would give numpy arrays.
        values = series.tolist()
    else:
        # Categories become their labels, nullable ints Python ints.
        values = series.astype(object).tolist()
    for index in np.flatnonzero(series.isna().to_numpy()):
        values[index] = None
    return values


def _fallback_value(value: Any) -> Any:
    """Convert a value that ``json`` and ``msgpack`` cannot encode into one they can.

    A numpy scalar in an object column becomes its Python number. Other types, such
    as timestamps from a plugin stat, become their ``str()`` text.
    """
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _encode_json_lines(columns: list[str], rows: list[tuple]) -> bytes:
    # Python's json writes every float with repr, which reads back equal, but writes
    # infinities as the tokens Infinity and -Infinity, which strict JSON parsers reject.
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                               default=_fallback_value)
    return "".join(f"{encoder.encode(dict(zip(columns, row)))}\n" for row in rows).encode()


def _encode_msgpack(columns: list[str], rows: list[tuple]) -> bytes:
    packer = msgpack.Packer(use_bin_type=True, default=_fallback_value)
    return b"".join(packer.pack(row) for row in rows)


def _csv_field(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value, separators=(",", ":"), default=_fallback_value)
    return value


def _encode_csv_rows(columns: list[str], rows: list[tuple]) -> bytes:
    return _encode_csv(rows)


def _encode_csv(rows: Iterable[Iterable]) -> bytes:
    # csv writes floats with str(), which is repr and reads back equal. It quotes a
    # field that contains a character of the line terminator, so with CRLF (as in
    # RFC 4180) a lone carriage return in a string is quoted too.
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerows([_csv_field(value) for value in row] for row in rows)
    return text.getvalue().encode()


_ENCODERS = {
    JSONL_GZIP: _encode_json_lines,
    MSGPACK_GZIP: _encode_msgpack,
    CSV: _encode_csv_rows,
}
