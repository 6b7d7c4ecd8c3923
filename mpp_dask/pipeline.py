"""One run: from a replay folder to committed tables (Parquet and other formats) and a manifest.

Every requested stat and stream of a replay is built on the same lazy aspect frames
and computed in one call, so each aspect file is decoded once per run. Nothing here
depends on whether the cluster is local or remote, because the caller passes a
connected client.
"""

from __future__ import annotations

import logging
import platform
import posixpath
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import dask
import dask.dataframe as dd
from dask.utils import parse_bytes
import pandas as pd
import pyarrow as pa
from distributed import Client

import mpp_dask
from mpp_dask.errors import CacheEntryError, ConfigError, MppDaskError, SchemaError
from mpp_dask.output.commit import (Staging, read_manifest, validate_replay_id,
                                    write_failure_manifest)
from mpp_dask.output.errors_table import ERRORS_TABLE, write_errors_table
from mpp_dask.output.formats import PARQUET, file_name, format_writes
from mpp_dask.reading.cache import PartitionCache
from mpp_dask.reading.discover import AspectFile, ReplayFiles, discover_replay
from mpp_dask.reading.frames import AspectFrame, read_aspect, tally_from_frame
from mpp_dask.reading.partitions import FileTally
from mpp_dask.reading.ranges import plan_ranges
from mpp_dask.reading.replays import ReplaySource
from mpp_dask.schema import ASPECTS, SCHEMA_VERSION
from mpp_dask import settings
from mpp_dask.settings import stat_params
from mpp_dask.stats.registry import Registry, Stat

logger = logging.getLogger(__name__)

STREAM_ALL = "all"


@dataclass
class RunPlan:
    """Settings of a run that apply to every replay: which tables, and where to write them."""

    output_dir: str
    stats: list[str] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    blocksize: int = 64 * 2**20
    skip_on_error: bool = False
    compression: str = "zstd"
    storage_options: dict = field(default_factory=dict)
    fail_fast: bool = False
    force_reprocess: bool = False
    output_formats: list[str] = field(default_factory=lambda: [PARQUET])
    # Folder or URL of the partition cache; None reads every aspect file by decoding it.
    cache_dir: str | None = None


@dataclass
class ReplayOutcome:
    """Outcome of one replay of a run: ``done``, ``skipped`` (already complete) or ``failed``."""

    replay_id: str
    status: str
    seconds: float = 0.0
    tables: list[str] = field(default_factory=list)
    skipped_tables: dict[str, str] = field(default_factory=dict)
    rows_per_aspect: dict[str, int] = field(default_factory=dict)
    dropped_rows: dict[str, dict[str, int]] = field(default_factory=dict)
    error: MppDaskError | None = None
    manifest: dict = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Clean rows decoded from all aspect files of the replay."""
        return sum(self.rows_per_aspect.values())


def resolve_streams(requested: list[str]) -> list[str]:
    """Return the aspect names of the requested streams (``all`` means every aspect).

    Raises
    ------
    ConfigError
        If a stream names no aspect.
    """
    if STREAM_ALL in requested:
        return list(ASPECTS)
    unknown = [name for name in requested if name not in ASPECTS]
    if unknown:
        raise ConfigError(f"unknown stream {', '.join(map(repr, unknown))}; valid streams: "
                          f"{STREAM_ALL}, {', '.join(ASPECTS)}")
    return list(dict.fromkeys(requested))


def _plan_tables(plan: RunPlan, registry: Registry,
                 replay: ReplayFiles) -> tuple[list[Stat], list[str], dict[str, str]]:
    """Return the stats and streams that can run on this replay, and why others cannot."""
    skipped: dict[str, str] = {}
    stats = []
    for stat in registry.select(plan.stats):
        missing = [a for a in stat.aspects if a not in replay.aspects]
        if missing:
            reason = f"missing aspect {', '.join(missing)}"
            warnings.warn(f"skipping stat {stat.name}: the replay has no {', '.join(missing)} "
                          "aspect file", UserWarning, stacklevel=2)
            skipped[stat.name] = reason
        else:
            stats.append(stat)

    streams = []
    for aspect_name in resolve_streams(plan.streams):
        if aspect_name in replay.aspects:
            streams.append(aspect_name)
        elif plan.streams != [STREAM_ALL]:
            warnings.warn(f"skipping stream {aspect_name}: the replay has no "
                          f"{aspect_name}.mpk", UserWarning, stacklevel=2)
            skipped[aspect_name] = f"missing aspect {aspect_name}"
    return stats, streams, skipped


def _check_result_columns(stat: Stat, result: Any) -> dd.DataFrame:
    if not isinstance(result, dd.DataFrame):
        raise SchemaError(f"stat {stat.name} ({stat.source}) returned {type(result).__name__}, "
                          "expected a dask DataFrame")
    if "replay_id" in result.columns:
        raise SchemaError(f"stat {stat.name} returned a replay_id column; the output adds it")
    return result


def _check_partition_counts(files: list[AspectFile], blocksize: int) -> None:
    limit = int(settings.get("reading.max-partitions-per-file", default=20_000))
    for file in files:
        count = 1 if file.compression else len(plan_ranges(file.size, blocksize))
        if count > limit:
            raise ConfigError(
                f"blocksize {blocksize} bytes would cut {file.urlpath} ({file.size} bytes) "
                f"into {count} partitions, more than the reading.max-partitions-per-file "
                f"setting ({limit}); use a larger --blocksize")


def build_tables(plan: RunPlan, registry: Registry, replay: ReplayFiles
                 ) -> tuple[dict[str, dd.DataFrame], dict[str, AspectFrame], dict[str, str]]:
    """Return the lazy output tables of a replay, the aspect frames they read and the skips."""
    stats, streams, skipped = _plan_tables(plan, registry, replay)

    needed = list(dict.fromkeys([a for s in stats for a in s.aspects] + streams))
    _check_partition_counts([replay.aspects[name] for name in needed], plan.blocksize)
    cache = None
    if plan.cache_dir is not None:
        cache = PartitionCache(plan.cache_dir, plan.storage_options,
                               rewrite=plan.force_reprocess)
    aspect_frames = {name: _read_aspect_file(plan, replay.aspects[name], cache)
                     for name in needed}
    frames = {name: aspect_frame.frame for name, aspect_frame in aspect_frames.items()}

    tables: dict[str, dd.DataFrame] = {}
    for stat in stats:
        params = {**stat.params, **stat_params(stat.name)}
        result = stat.build({a: frames[a] for a in stat.aspects}, params)
        tables[stat.name] = _check_result_columns(stat, result)
    for aspect_name in streams:
        tables[aspect_name] = frames[aspect_name]
    return tables, aspect_frames, skipped


def _read_aspect_file(plan: RunPlan, file: AspectFile,
                      cache: PartitionCache | None) -> AspectFrame:
    if cache is not None:
        return cache.read_aspect(file, blocksize=plan.blocksize,
                                 skip_on_error=plan.skip_on_error)
    return read_aspect(file.urlpath, file.aspect_name, file_size=file.size,
                       blocksize=plan.blocksize, file_token=file.token,
                       skip_on_error=plan.skip_on_error, storage_options=plan.storage_options,
                       compression=file.compression)


@dataclass
class _PreparedReplay:
    """Replay whose lazy tables are built and staged, waiting for its computation."""

    source: ReplaySource
    replay: ReplayFiles
    tables: dict[str, dd.DataFrame]
    aspect_frames: dict[str, AspectFrame]
    skipped: dict[str, str]
    staging: Staging
    fingerprint: dict
    started: float
    dask_settings: dict
    futures: list = field(default_factory=list)

    def collections(self, plan: RunPlan) -> list:
        """Return the writes of every table in every format, then the decode tallies.

        Everything is computed together, so each aspect is decoded once.
        """
        writes = []
        other_formats = [name for name in plan.output_formats if name != PARQUET]
        for name, frame in self.tables.items():
            if PARQUET in plan.output_formats:
                writes.append(self._parquet_write(plan, name, frame))
            if other_formats:
                writes.append(format_writes(
                    frame, table=name, replay_id=self.source.replay_id,
                    output_formats=other_formats,
                    file_urlpaths={
                        output_format: posixpath.join(
                            self.staging.table_urlpath(name, output_format),
                            file_name(name, output_format))
                        for output_format in other_formats},
                    chunk_urlpath=self.staging.chunk_urlpath(name),
                    storage_options=plan.storage_options))
        return [*writes, *(aspect_frame.tally for aspect_frame in self.aspect_frames.values())]

    def _parquet_write(self, plan: RunPlan, name: str, frame: dd.DataFrame) -> Any:
        frame, schema = parquet_ready(frame)
        return frame.to_parquet(
            self.staging.table_urlpath(name), write_index=False, compute=False,
            compression=plan.compression, storage_options=plan.storage_options,
            write_metadata_file=False, name_function=part_file_name, schema=schema)


def parquet_ready(frame: dd.DataFrame) -> tuple[dd.DataFrame, pa.Schema | str]:
    """Return the frame to write and the Parquet schema to write it with.

    List columns held as ``pd.ArrowDtype`` are written as object columns under an
    explicit ``list<...>`` schema. The pandas metadata of an ArrowDtype list column
    names a dtype that ``pandas.read_parquet`` (pandas 3.1) fails to parse, while
    an object column reads back as arrays.
    """
    list_columns = [name for name, dtype in frame.dtypes.items()
                    if isinstance(dtype, pd.ArrowDtype) and pa.types.is_list(dtype.pyarrow_dtype)]
    if not list_columns:
        return frame, "infer"
    schema = pa.Schema.from_pandas(frame._meta, preserve_index=False)
    return frame.astype({name: object for name in list_columns}), schema


def part_file_name(index: int) -> str:
    """Return the Parquet file name of partition ``index``; zero-padded so names sort."""
    return f"part.{index:06d}.parquet"


def run(sources: list[ReplaySource], plan: RunPlan, registry: Registry,
        client: Client | None = None,
        on_submit: Callable[[list], None] | None = None) -> list[ReplayOutcome]:
    """Compute every requested table of every replay and commit each replay atomically.

    All replays are submitted to the cluster at once, so small replays share the
    workers. A replay that fails is reported in its outcome and the others go on,
    unless ``plan.fail_fast`` is set. A replay whose committed manifest matches its
    current input files and settings is skipped unless ``plan.force_reprocess``.

    Parameters
    ----------
    sources : list of ReplaySource
        The replays and their ids.
    plan : RunPlan
        What to compute and where.
    registry : Registry
        The stats that can be requested.
    client : distributed.Client, optional
        Where to compute. Without one, replays are computed one after another with
        the current default scheduler.
    on_submit : callable, optional
        Called with the futures of all replays once they are submitted to
        ``client``, before waiting for any of them; the command line draws its
        progress bar from them. Not called without a client.

    Returns
    -------
    list of ReplayOutcome
        One per source, in the order of ``sources``.

    Raises
    ------
    MppDaskError
        With ``plan.fail_fast``, the first failure; nothing of the failed replay or of
        the replays not yet committed is left in the output.
    """
    outcomes: dict[str, ReplayOutcome] = {}
    prepared: list[_PreparedReplay] = []
    try:
        for source in sources:
            started = time.perf_counter()
            try:
                item = _prepare(source, plan, registry, started)
            except MppDaskError as exc:
                outcomes[source.replay_id] = _failed(source, exc, started, plan)
                if plan.fail_fast:
                    raise
                continue
            if item is None:
                outcomes[source.replay_id] = ReplayOutcome(source.replay_id, "skipped")
                continue
            prepared.append(item)
            if client is not None:
                # Submitting each replay as soon as it is built lets the workers start
                # while the client builds the graphs of the next replays.
                with dask.config.set(item.dask_settings):
                    item.futures = client.compute(item.collections(plan))

        if client is not None and on_submit is not None:
            on_submit([future for item in prepared for future in item.futures])

        for item in prepared:
            outcomes[item.source.replay_id] = _finish_rebuilding_cache(item, plan, registry,
                                                                       client)
    except BaseException:
        for item in prepared:
            if item.futures and client is not None:
                client.cancel(item.futures)
            item.staging.discard()
        raise

    return [outcomes[source.replay_id] for source in sources]


def _prepare(source: ReplaySource, plan: RunPlan, registry: Registry,
             started: float) -> _PreparedReplay | None:
    """Build a replay's lazy tables and staging, or return None when it is already done."""
    validate_replay_id(source.replay_id)
    replay = discover_replay(source.urlpath, plan.storage_options)
    if not replay.aspects:
        raise ConfigError(f"replay {source.replay_id}: no aspect files (<aspect>.mpk of a "
                          f"known aspect) in {source.urlpath}")

    dask_settings = {"dataframe.shuffle.method": _shuffle_method(replay)}
    with dask.config.set(dask_settings):
        tables, aspect_frames, skipped = build_tables(plan, registry, replay)
    fingerprint = _fingerprint(plan, replay, tables)
    if not plan.force_reprocess and _is_complete(plan, source.replay_id, fingerprint):
        logger.info("replay %s: already complete for these inputs and settings; skipped "
                    "(use --force-reprocess to compute it again)", source.replay_id)
        return None

    logger.info("replay %s: %d tables from %d aspect files (%d partitions, %d files read "
                "from the cache)", source.replay_id, len(tables), len(aspect_frames),
                sum(f.frame.npartitions for f in aspect_frames.values()),
                sum(f.from_cache for f in aspect_frames.values()))
    staging = Staging.create(plan.output_dir, source.replay_id, plan.storage_options)
    return _PreparedReplay(source, replay, tables, aspect_frames, skipped, staging,
                           fingerprint, started, dask_settings)


def _shuffle_method(replay: ReplayFiles) -> str:
    """Return the shuffle method for the stats of a replay.

    Dask's peer-to-peer shuffle keeps memory bounded on large data but costs a
    fixed set-up per shuffle that dominates small replays. The task-based shuffle
    is faster below the ``compute.p2p-shuffle-min-bytes`` setting.
    """
    method = settings.get("compute.shuffle-method", default="auto")
    if method != "auto":
        return method
    threshold = parse_bytes(settings.get("compute.p2p-shuffle-min-bytes", default="256 MiB"))
    total = sum(file.size for file in replay.aspects.values())
    return "p2p" if total >= threshold else "tasks"


def _finish_rebuilding_cache(item: _PreparedReplay, plan: RunPlan, registry: Registry,
                             client: Client | None) -> ReplayOutcome:
    """Finish a replay, and compute it again when a worker finds a cache entry corrupt.

    The client checks only the markers and file sizes of cache entries, so a
    partition file whose content is damaged is found only when a worker reads it.
    Its entry is then discarded and rebuilt by the new computation. Each entry is
    rebuilt at most once per replay, so a second error on it fails the replay.
    """
    rebuilt: set[str] = set()
    current = item
    try:
        while True:
            try:
                return _finish(current, plan, client)
            except CacheEntryError as exc:
                if exc.entry_urlpath in rebuilt:
                    return _finish_failed(current, exc, plan)
                rebuilt.add(exc.entry_urlpath)
                warnings.warn(f"replay {item.source.replay_id}: {exc}; decoding the aspect "
                              "file again and rewriting the entry. If this repeats, check the "
                              "storage of the cache folder", UserWarning, stacklevel=2)
                try:
                    PartitionCache(plan.cache_dir, plan.storage_options).discard_entry(
                        exc.entry_urlpath)
                    current = _prepare_again(current, plan, registry, client)
                except MppDaskError as retry_error:
                    return _finish_failed(item, retry_error, plan)
                if current is None:
                    return ReplayOutcome(item.source.replay_id, "skipped")
    except BaseException:
        # The caller cleans up only the first attempt.
        if current is not None and current is not item:
            if current.futures and client is not None:
                client.cancel(current.futures)
            current.staging.discard()
        raise


def _prepare_again(item: _PreparedReplay, plan: RunPlan, registry: Registry,
                   client: Client | None) -> _PreparedReplay | None:
    """Build and submit a replay again, keeping the start time of its first attempt."""
    again = _prepare(item.source, plan, registry, item.started)
    if again is not None and client is not None:
        with dask.config.set(again.dask_settings):
            again.futures = client.compute(again.collections(plan))
    return again


def _finish_failed(item: _PreparedReplay, exc: MppDaskError, plan: RunPlan) -> ReplayOutcome:
    item.staging.discard()
    outcome = _failed(item.source, exc, item.started, plan)
    if plan.fail_fast:
        raise exc
    return outcome


def _finish(item: _PreparedReplay, plan: RunPlan, client: Client | None) -> ReplayOutcome:
    """Wait for a replay's computation, then commit it or record why it failed.

    Raises
    ------
    CacheEntryError
        If a worker found a cache entry corrupt; the staging is discarded first.
    """
    replay_id = item.source.replay_id
    try:
        try:
            if client is not None:
                results = client.gather(item.futures)
            else:
                with warnings.catch_warnings(), dask.config.set(item.dask_settings):
                    warnings.filterwarnings("ignore", message=".*Computing mixed collections.*")
                    results = dask.compute(*item.collections(plan))
        except MppDaskError:
            raise
        except Exception as exc:
            raise MppDaskError(f"replay {replay_id}: computing its tables failed: "
                               f"{type(exc).__name__}: {exc}") from exc

        # The tallies are the last results, after the writes of every table and format.
        tally_results = results[len(results) - len(item.aspect_frames):]
        tallies = {name: tally_from_frame(frame) for name, frame
                   in zip(item.aspect_frames, tally_results)}
        tables = list(item.tables)
        if write_errors_table(item.staging, tallies, plan.output_formats):
            tables.append(ERRORS_TABLE)
        manifest = _manifest(plan, item, tallies)
        manifest["files"] = item.staging.staged_files(tables, plan.output_formats)
        item.staging.commit(tables, manifest, plan.output_formats)
    except MppDaskError as exc:
        if client is not None:
            # Tasks of the replay that have not started yet would only write into
            # the staging folder that is removed next.
            client.cancel(item.futures)
        if isinstance(exc, CacheEntryError):
            item.staging.discard()
            raise
        return _finish_failed(item, exc, plan)

    _log_tallies(replay_id, tallies)
    logger.info("replay %s: committed %d tables in %.1f s", replay_id, len(item.tables),
                manifest["seconds"])
    return ReplayOutcome(
        replay_id=replay_id, status="done", seconds=manifest["seconds"],
        tables=list(item.tables), skipped_tables=item.skipped,
        rows_per_aspect=manifest["rows_per_aspect"], dropped_rows=manifest["dropped_rows"],
        manifest=manifest,
    )


def _log_tallies(replay_id: str, tallies: dict[str, FileTally]) -> None:
    for name, tally in tallies.items():
        if tally.unknown_enum_codes:
            logger.warning("replay %s: %s has %d unknown enum codes, stored as null",
                           replay_id, name, tally.unknown_enum_codes)
        if tally.dropped:
            reasons = ", ".join(f"{count} {reason}" for reason, count in tally.dropped.items())
            logger.warning("replay %s: %s: dropped invalid rows: %s", replay_id, name, reasons)


def _failed(source: ReplaySource, exc: MppDaskError, started: float,
            plan: RunPlan) -> ReplayOutcome:
    logger.error("replay %s failed: %s", source.replay_id, exc)
    seconds = time.perf_counter() - started
    manifest = {"status": "failed", "replay_id": source.replay_id, "input_dir": source.urlpath,
                "error": str(exc), "error_type": type(exc).__name__,
                "mpp_dask_version": mpp_dask.__version__, "seconds": round(seconds, 3)}
    try:
        # An invalid id must not become a path, so its failure is only reported.
        validate_replay_id(source.replay_id)
        write_failure_manifest(plan.output_dir, source.replay_id, manifest,
                               plan.storage_options)
    except (OSError, MppDaskError) as write_error:
        logger.warning("replay %s: the failure could not be recorded in its manifest: %s",
                       source.replay_id, write_error)
    return ReplayOutcome(source.replay_id, "failed", seconds=seconds, error=exc,
                         manifest=manifest)


def _fingerprint(plan: RunPlan, replay: ReplayFiles, tables: dict[str, dd.DataFrame]) -> dict:
    """Return what decides whether committed output is still valid for this run."""
    return {
        "mpp_dask_version": mpp_dask.__version__,
        "schema_version": SCHEMA_VERSION,
        "input_files": {name: {"path": file.urlpath, "size": file.size, "token": file.token}
                        for name, file in replay.aspects.items()},
        "tables": list(tables),
        "stat_params": {name: stat_params(name) for name in tables if name not in ASPECTS},
        "blocksize": plan.blocksize,
        "skip_on_error": plan.skip_on_error,
        "compression": plan.compression,
        "output_formats": sorted(plan.output_formats),
    }


def _is_complete(plan: RunPlan, replay_id: str, fingerprint: dict) -> bool:
    manifest = read_manifest(plan.output_dir, replay_id, plan.storage_options)
    return (manifest is not None and manifest.get("status") == "complete"
            and manifest.get("fingerprint") == fingerprint)


def _manifest(plan: RunPlan, item: _PreparedReplay, tallies: dict[str, FileTally]) -> dict:
    return {
        "status": "complete",
        "replay_id": item.source.replay_id,
        "mpp_dask_version": mpp_dask.__version__,
        "schema_version": SCHEMA_VERSION,
        "versions": {name: version(name) for name in ("dask", "distributed", "pandas",
                                                      "pyarrow", "msgpack")},
        "python": platform.python_version(),
        "input_dir": item.source.urlpath,
        "tables": list(item.tables),
        "computed_stats": [name for name in item.tables if name not in ASPECTS],
        "formats": list(plan.output_formats),
        "skipped": item.skipped,
        "rows_per_aspect": {name: tally.rows_kept for name, tally in tallies.items()},
        "dropped_rows": {name: dict(tally.dropped) for name, tally in tallies.items()
                         if tally.dropped},
        "unknown_enum_codes": {name: tally.unknown_enum_codes for name, tally in tallies.items()
                               if tally.unknown_enum_codes},
        "settings": {
            "blocksize": plan.blocksize,
            "skip_on_error": plan.skip_on_error,
            # As asked on the command line; [] means the default stats.
            "stats": plan.stats,
            "streams": plan.streams,
            "compression": plan.compression,
            "output_formats": plan.output_formats,
        },
        "fingerprint": item.fingerprint,
        "seconds": round(time.perf_counter() - item.started, 3),
    }


def describe_plan(sources: list[ReplaySource], plan: RunPlan, registry: Registry) -> list[dict]:
    """Return what a run would do for each replay, without reading any data.

    Only file listings and sizes are read: per replay, the aspect files with their
    sizes and planned partitions, unknown and ignored files, and the stats and
    streams that would run or be skipped (with why).
    """
    described = []
    for source in sources:
        replay = discover_replay(source.urlpath, plan.storage_options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats, streams, skipped = _plan_tables(plan, registry, replay)
        described.append({
            "replay_id": source.replay_id,
            "input_dir": source.urlpath,
            "aspect_files": {
                name: {"size": file.size, "compression": file.compression,
                       "partitions": 1 if file.compression
                       else len(plan_ranges(file.size, plan.blocksize))}
                for name, file in replay.aspects.items()
            },
            "missing_aspects": replay.missing_aspects,
            "unknown_aspect_files": replay.unknown_aspect_files,
            "ignored_files": replay.ignored_files,
            "stats": [stat.name for stat in stats],
            "streams": streams,
            "output_formats": plan.output_formats,
            "skipped": skipped,
        })
    return described
