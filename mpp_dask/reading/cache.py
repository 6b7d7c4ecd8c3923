"""Cache of decoded aspect partitions, kept as Parquet so that a later run skips decoding.

Each aspect file version and each set of read settings has one entry folder::

    <cache-dir>/<aspect>-<key>/part.000000.parquet
    <cache-dir>/<aspect>-<key>/part.000001.parquet
    ...
    <cache-dir>/<aspect>-<key>/_complete.json

``<key>`` is a SHA-256 digest of the entry's identity (see :func:`entry_identity`).
The workers write the partitions, each under a temporary name that is then renamed.
A last task writes ``_complete.json``, which lists the file name, size and row count
of every partition and stores the tally of the decode. An entry without that marker
is never read, so a failed or interrupted run leaves nothing that a later run takes
as valid. The client reads only markers and the listing of entry folders, and the
workers read and write the partitions themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import posixpath
import uuid
import warnings
from collections import Counter
from dataclasses import asdict
from functools import partial
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dask.base import tokenize

import mpp_dask
from mpp_dask import schema
from mpp_dask.errors import CacheEntryError, MppDaskError, OutputError, RowProblem
from mpp_dask.reading.discover import AspectFile
from mpp_dask.reading.frames import (AspectFrame, build_decode_graph, frames_from_graph,
                                     tally_to_frame)
from mpp_dask.reading.partitions import FileTally
from mpp_dask.reading.ranges import plan_ranges

logger = logging.getLogger(__name__)

# Version of the entry layout. A change of the layout or of the marker's fields must
# increase it, so that old entries get new keys instead of being misread.
CACHE_FORMAT = 1
MARKER_NAME = "_complete.json"

# The content fingerprint hashes SAMPLE_COUNT blocks of SAMPLE_BYTES, spread evenly
# from the start to the end of the file, so the client reads at most 256 KiB per file.
SAMPLE_BYTES = 64 * 1024
SAMPLE_COUNT = 4


def sample_offsets(size: int, sample_bytes: int = SAMPLE_BYTES,
                   count: int = SAMPLE_COUNT) -> list[int]:
    """Return the start offsets of the blocks that the content fingerprint hashes.

    A file of at most ``count * sample_bytes`` bytes is covered whole. A larger file
    gets ``count`` blocks of ``sample_bytes``: the first starts at 0 and the last
    ends at ``size``.

    Examples
    --------
    >>> sample_offsets(10, sample_bytes=4, count=4)
    [0, 4, 8]
    >>> sample_offsets(100, sample_bytes=4, count=3)
    [0, 48, 96]
    """
    if size <= sample_bytes * count:
        return list(range(0, size, sample_bytes))
    last = size - sample_bytes
    return [last * index // (count - 1) for index in range(count)]


def content_fingerprint(file: AspectFile, storage_options: dict | None = None) -> str:
    """Return a SHA-256 digest of the size and of sampled blocks of an aspect file.

    The blocks are the raw bytes (compressed files are not decompressed).

    NOTE: a change that keeps the size and the modification time and lies outside
    the sampled blocks goes unnoticed. Such a file must be rewritten with a new
    modification time, or the run given ``--force-reprocess``.

    Raises
    ------
    MppDaskError
        If the file cannot be read.
    """
    fs, path = fsspec.core.url_to_fs(file.urlpath, **(storage_options or {}))
    digest = hashlib.sha256(str(file.size).encode())
    try:
        for start in sample_offsets(file.size):
            digest.update(fs.cat_file(path, start=start,
                                      end=min(start + SAMPLE_BYTES, file.size)))
    except OSError as exc:
        raise MppDaskError(f"reading {file.urlpath} to compute its cache key failed: {exc}; "
                           "check the file, or run with --no-cache") from exc
    return digest.hexdigest()


def entry_identity(file: AspectFile, fingerprint: str, *, blocksize: int,
                   skip_on_error: bool) -> dict:
    """Return everything that decides whether a cache entry fits this file and run.

    Storage options are left out because they may contain credentials.
    """
    return {
        "format": CACHE_FORMAT,
        "aspect": file.aspect_name,
        "path": file.urlpath,
        "size": file.size,
        # Size and modification time as the file system lists them.
        "token": file.token,
        "content_sha256": fingerprint,
        "compression": file.compression,
        # A compressed file is one partition, whatever the blocksize.
        "blocksize": None if file.compression else blocksize,
        "skip_on_error": skip_on_error,
        "schema_version": schema.SCHEMA_VERSION,
        "mpp_dask_version": mpp_dask.__version__,
    }


def entry_name(identity: dict) -> str:
    """Return the entry folder name of an identity: the aspect and a digest of the rest."""
    text = json.dumps(identity, sort_keys=True)
    return f"{identity['aspect']}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


# TODO: entries are never removed, so those of changed files and of older versions
# stay until the folder is deleted. Choosing which entries are unused would need a
# record of their last use, which this cache does not keep.
class PartitionCache:
    """The entries of one cache folder, as seen from the client.

    Parameters
    ----------
    urlpath : str
        Path or fsspec URL of the cache folder; the workers must reach it under the
        same path or URL.
    storage_options : dict, optional
        Passed to fsspec, for the cache folder and for the aspect files.
    rewrite : bool
        Ignore existing entries and write them again (``--force-reprocess``).
    """

    def __init__(self, urlpath: str, storage_options: dict | None = None,
                 rewrite: bool = False):
        self.urlpath = urlpath.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.rewrite = rewrite
        self.fs, self.path = fsspec.core.url_to_fs(self.urlpath, **self.storage_options)

    def read_aspect(self, file: AspectFile, *, blocksize: int,
                    skip_on_error: bool) -> AspectFrame:
        """Return the clean table of an aspect file, read from its cache entry if complete.

        Without a complete entry, the file is decoded as by
        :func:`~mpp_dask.reading.frames.read_aspect`, and computing the returned
        ``tally`` also writes the entry.

        Raises
        ------
        MppDaskError
            If the aspect file cannot be read to compute its cache key.
        OutputError
            If the cache folder cannot be read, or an invalid entry cannot be
            discarded, for example for lack of permission.
        """
        identity = entry_identity(file, content_fingerprint(file, self.storage_options),
                                  blocksize=blocksize, skip_on_error=skip_on_error)
        name = entry_name(identity)
        entry_urlpath = f"{self.urlpath}/{name}"
        entry_path = posixpath.join(self.path, name)

        if not self.rewrite:
            loaded = self._load_entry(entry_path, entry_urlpath, file, identity,
                                      expected_partitions=_partition_count(file, blocksize))
            if loaded is not None:
                logger.debug("%s: reading %d partitions from the cache entry %s",
                             file.urlpath, len(loaded[0]), entry_urlpath)
                return self._cached_frame(file, entry_urlpath, *loaded)

        self.discard_entry(entry_urlpath)
        return self._decoded_frame(file, entry_urlpath, identity, blocksize=blocksize,
                                   skip_on_error=skip_on_error)

    def discard_entry(self, entry_urlpath: str) -> None:
        """Remove the marker of an entry, so that no run reads the entry before it is rewritten.

        Raises
        ------
        OutputError
            If the marker exists but cannot be removed.
        """
        marker = posixpath.join(self.path, posixpath.basename(entry_urlpath), MARKER_NAME)
        try:
            self.fs.rm_file(marker)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise OutputError(f"removing the cache marker {entry_urlpath}/{MARKER_NAME} "
                              f"failed: {exc}; check the cache folder, or run with "
                              "--no-cache") from exc

    def _load_entry(self, entry_path: str, entry_urlpath: str, file: AspectFile,
                    identity: dict, expected_partitions: int
                    ) -> tuple[list[dict], FileTally] | None:
        """Return the partitions and tally of a complete entry, or None to rebuild it.

        A missing marker means that the entry was never completed. Any other problem
        is reported with a warning.
        """
        marker_path = posixpath.join(entry_path, MARKER_NAME)
        try:
            text = self.fs.cat_file(marker_path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise OutputError(f"reading the cache marker {entry_urlpath}/{MARKER_NAME} "
                              f"failed: {exc}; check the cache folder, or run with "
                              "--no-cache") from exc

        try:
            partitions, tally = _parse_marker(text, identity, expected_partitions)
            problem = self._listing_problem(entry_path, partitions)
        except (ValueError, KeyError, TypeError) as exc:
            problem = f"its {MARKER_NAME} is invalid ({exc})"
        if problem is not None:
            warnings.warn(f"cache entry {entry_urlpath} is corrupt: {problem}; decoding "
                          f"{file.urlpath} again and rewriting the entry. If this repeats, "
                          "check the storage of the cache folder", UserWarning, stacklevel=2)
            return None
        return partitions, tally

    def _listing_problem(self, entry_path: str, partitions: list[dict]) -> str | None:
        """Return what is missing or truncated among the partition files, or None.

        Raises
        ------
        OutputError
            If the entry folder cannot be listed.
        """
        try:
            infos = self.fs.ls(entry_path, detail=True)
        except OSError as exc:
            raise OutputError(f"listing the cache entry {entry_path} failed: {exc}; check "
                              "the cache folder, or run with --no-cache") from exc
        listing = {posixpath.basename(info["name"]): info["size"] for info in infos}
        for partition in partitions:
            size = listing.get(partition["file"])
            if size is None:
                return f"{partition['file']} is missing"
            if size != partition["bytes"]:
                return (f"{partition['file']} has {size} bytes, expected "
                        f"{partition['bytes']}")
        return None

    def _cached_frame(self, file: AspectFile, entry_urlpath: str, partitions: list[dict],
                      tally: FileTally) -> AspectFrame:
        token = _fresh_token(entry_urlpath)
        graph: dict = {}
        partition_keys = []
        for index, partition in enumerate(partitions):
            key = (f"cached-{file.aspect_name}-{token}", index)
            graph[key] = (partial(read_cached_partition, entry_urlpath=entry_urlpath,
                                  file_name=partition["file"], rows=partition["rows"],
                                  aspect_name=file.aspect_name,
                                  storage_options=self.storage_options),)
            partition_keys.append(key)

        aspect_frame = frames_from_graph(file.urlpath, file.aspect_name, file.size, graph,
                                         partition_keys, (partial(tally_to_frame, tally),))
        aspect_frame.from_cache = True
        return aspect_frame

    def _decoded_frame(self, file: AspectFile, entry_urlpath: str, identity: dict, *,
                       blocksize: int, skip_on_error: bool) -> AspectFrame:
        """Return the decoded table, with tasks that write each partition and then the marker."""
        graph, partition_keys, tally_key = build_decode_graph(
            file.urlpath, file.aspect_name, file_size=file.size, blocksize=blocksize,
            file_token=file.token, skip_on_error=skip_on_error,
            storage_options=self.storage_options, compression=file.compression)

        token = _fresh_token(entry_urlpath)
        write_keys = []
        for index, partition_key in enumerate(partition_keys):
            write_key = (f"cache-write-{file.aspect_name}-{token}", index)
            graph[write_key] = (partial(write_cached_partition, entry_urlpath=entry_urlpath,
                                        index=index, storage_options=self.storage_options),
                                partition_key)
            write_keys.append(write_key)

        # The marker task depends on every write, so the marker is written last.
        commit = partial(commit_entry, entry_urlpath=entry_urlpath, identity=identity,
                         storage_options=self.storage_options)
        return frames_from_graph(file.urlpath, file.aspect_name, file.size, graph,
                                 partition_keys, (commit, tally_key, *write_keys))


def _fresh_token(entry_urlpath: str) -> str:
    # Task keys that are new in every graph. A cluster keeps the state of a key as long
    # as a client references its future, so a reused key could return the error of a
    # corrupt entry read earlier, or skip writing an entry that is being rebuilt.
    return tokenize(entry_urlpath, uuid.uuid4().hex)


def _partition_count(file: AspectFile, blocksize: int) -> int:
    return 1 if file.compression else len(plan_ranges(file.size, blocksize))


def _parse_marker(text: bytes, identity: dict,
                  expected_partitions: int) -> tuple[list[dict], FileTally]:
    """Return the partitions and tally of a marker.

    Raises
    ------
    ValueError, KeyError, TypeError
        If the marker is not valid JSON, belongs to another identity or lacks fields.
    """
    marker = json.loads(text)
    if marker["identity"] != identity:
        raise ValueError("it was written for another file version or settings")
    partitions = [{"file": str(p["file"]), "bytes": int(p["bytes"]), "rows": int(p["rows"])}
                  for p in marker["partitions"]]
    if len(partitions) != expected_partitions:
        raise ValueError(f"it lists {len(partitions)} partitions, expected "
                         f"{expected_partitions}")
    return partitions, tally_from_json(marker["tally"])


def _part_name(index: int) -> str:
    return f"part.{index:06d}.parquet"


def _write_atomically(entry_urlpath: str, name: str, data: bytes | pa.Buffer,
                      storage_options: dict) -> None:
    """Write ``data`` to ``<entry>/<name>`` under a temporary name, then rename it.

    Raises
    ------
    OutputError
        If the file cannot be written.
    """
    fs, folder = fsspec.core.url_to_fs(entry_urlpath, **storage_options)
    final = posixpath.join(folder, name)
    temporary = f"{final}.{uuid.uuid4().hex}.tmp"
    try:
        fs.makedirs(folder, exist_ok=True)
        with fs.open(temporary, "wb") as stream:
            stream.write(data)
        fs.mv(temporary, final)
    except OSError as exc:
        # The write already failed, and a temporary name is never read, so a
        # failed removal only leaves a stray file.
        with contextlib.suppress(OSError):
            fs.rm_file(temporary)
        raise OutputError(f"writing the cache file {entry_urlpath}/{name} failed: {exc}; "
                          "check that every worker can write to the cache folder, or run "
                          "with --no-cache") from exc


def write_cached_partition(frame: pd.DataFrame, *, entry_urlpath: str, index: int,
                           storage_options: dict) -> dict:
    """Write one clean partition into a cache entry and return its marker record.

    Parameters
    ----------
    frame : pandas.DataFrame
        The confirmed clean partition ``index`` of the aspect file.
    entry_urlpath : str
        The entry folder.
    index : int
        The partition number, from 0 in file order.
    storage_options : dict
        Passed to fsspec.

    Returns
    -------
    dict
        ``file`` (the file name), ``bytes`` (its size) and ``rows``.

    Raises
    ------
    OutputError
        If the file cannot be written.
    """
    # A RangeIndex is stored as metadata and any other index as a column, so the
    # partition reads back with the index it had.
    table = pa.Table.from_pandas(frame)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_page_checksum=True)
    data = sink.getvalue()

    name = _part_name(index)
    _write_atomically(entry_urlpath, name, data, storage_options)
    return {"file": name, "bytes": data.size, "rows": len(frame)}


def commit_entry(tally: FileTally, *partitions: dict, entry_urlpath: str, identity: dict,
                 storage_options: dict) -> pd.DataFrame:
    """Write the marker of a cache entry and return the tally frame of the aspect file.

    ``partitions`` are the records of :func:`write_cached_partition` in partition
    order. Call this only after every partition is written.

    Raises
    ------
    OutputError
        If the marker cannot be written.
    """
    marker = {"identity": identity, "partitions": list(partitions),
              "tally": tally_to_json(tally)}
    text = json.dumps(marker, default=_json_scalar)
    _write_atomically(entry_urlpath, MARKER_NAME, text.encode(), storage_options)
    return tally_to_frame(tally)


def read_cached_partition(*, entry_urlpath: str, file_name: str, rows: int, aspect_name: str,
                          storage_options: dict) -> pd.DataFrame:
    """Read one clean partition of a cache entry, with the aspect's dtypes.

    Raises
    ------
    CacheEntryError
        If the file is missing, is not valid Parquet, fails its page checksums, or
        has other rows or columns than the marker and the schema expect.
    """
    fs, folder = fsspec.core.url_to_fs(entry_urlpath, **storage_options)
    try:
        with fs.open(posixpath.join(folder, file_name), "rb") as stream:
            table = pq.read_table(stream, page_checksum_verification=True)
        frame = table.to_pandas()
    except (OSError, pa.ArrowException) as exc:
        raise CacheEntryError(entry_urlpath, f"{file_name} cannot be read: {exc}") from exc

    aspect = schema.get_aspect(aspect_name)
    if list(frame.columns) != aspect.columns:
        raise CacheEntryError(entry_urlpath, f"{file_name} has the columns "
                                             f"{list(frame.columns)}, expected {aspect.columns}")
    if len(frame) != rows:
        raise CacheEntryError(entry_urlpath, f"{file_name} has {len(frame)} rows, "
                                             f"expected {rows}")
    # Parquet keeps only the categories that occur, so the full categorical dtypes
    # of the schema are set again.
    return frame.astype(aspect.dtypes)


def tally_to_json(tally: FileTally) -> dict:
    """Return the fields of a FileTally as JSON-ready values."""
    return {
        "urlpath": tally.urlpath,
        "next_start": tally.next_start,
        "next_search": tally.next_search,
        "rows_before": tally.rows_before,
        "rows_kept": tally.rows_kept,
        "last_frame": tally.last_frame,
        "dropped": dict(tally.dropped),
        "unknown_enum_codes": tally.unknown_enum_codes,
        "problems": [asdict(problem) for problem in tally.problems],
        "redecoded_ranges": tally.redecoded_ranges,
        "problem_count": tally.problem_count,
    }


def tally_from_json(data: dict) -> FileTally:
    """Return the FileTally stored by :func:`tally_to_json`.

    Raises
    ------
    KeyError, TypeError
        If a field is missing or has the wrong shape.
    """
    fields = dict(data)
    fields["dropped"] = Counter(fields["dropped"])
    fields["problems"] = [RowProblem(**problem) for problem in fields["problems"]]
    return FileTally(**fields)


def _json_scalar(value: Any) -> Any:
    # Counts and frames can be NumPy integers.
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
