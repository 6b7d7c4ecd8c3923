"""One run: from a replay folder to committed Parquet tables and a manifest.

Every requested stat and stream of a replay is built on the same lazy aspect frames
and computed in one call, so each aspect file is decoded once per run. Nothing here
knows whether the cluster is local or remote: the caller passes a connected client.
"""

from __future__ import annotations

import logging
import platform
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.dataframe as dd
from distributed import Client

import mpp_dask
from mpp_dask.errors import ConfigError, SchemaError
from mpp_dask.output.commit import Staging, validate_replay_id
from mpp_dask.reading.discover import ReplayFiles, discover_replay
from mpp_dask.reading.frames import AspectFrame, read_aspect, tally_from_frame
from mpp_dask.reading.partitions import FileTally
from mpp_dask.schema import ASPECTS, SCHEMA_VERSION
from mpp_dask.settings import stat_params
from mpp_dask.stats.registry import Registry, Stat

logger = logging.getLogger(__name__)

STREAM_ALL = "all"


@dataclass
class RunPlan:
    """Everything one run of one replay needs, resolved from options and settings."""

    replay_id: str
    input_dir: str
    output_dir: str
    stats: list[str] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    blocksize: int = 64 * 2**20
    skip_on_error: bool = False
    compression: str = "zstd"
    storage_options: dict = field(default_factory=dict)


@dataclass
class RunResult:
    """What a finished run computed and where it is."""

    replay_id: str
    output_dir: str
    tables: list[str]
    skipped_stats: dict[str, str]
    rows_per_aspect: dict[str, int]
    dropped_rows: dict[str, dict[str, int]]
    seconds: float
    manifest: dict


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


def build_tables(plan: RunPlan, registry: Registry, replay: ReplayFiles
                 ) -> tuple[dict[str, dd.DataFrame], dict[str, AspectFrame], dict[str, str]]:
    """Return the lazy output tables of a replay, the aspect frames they read and the skips."""
    stats, streams, skipped = _plan_tables(plan, registry, replay)

    needed = list(dict.fromkeys([a for s in stats for a in s.aspects] + streams))
    aspect_frames = {
        name: read_aspect(file.urlpath, name, file_size=file.size, blocksize=plan.blocksize,
                          file_token=file.token, skip_on_error=plan.skip_on_error,
                          storage_options=plan.storage_options)
        for name in needed
        for file in [replay.aspects[name]]
    }
    frames = {name: aspect_frame.frame for name, aspect_frame in aspect_frames.items()}

    tables: dict[str, dd.DataFrame] = {}
    for stat in stats:
        params = {**stat.params, **stat_params(stat.name)}
        result = stat.build({a: frames[a] for a in stat.aspects}, params)
        tables[stat.name] = _check_result_columns(stat, result)
    for aspect_name in streams:
        tables[aspect_name] = frames[aspect_name]
    return tables, aspect_frames, skipped


def run_replay(plan: RunPlan, registry: Registry, client: Client | None = None) -> RunResult:
    """Compute every requested table of one replay and commit them atomically.

    Parameters
    ----------
    plan : RunPlan
        The replay, the output and what to compute.
    registry : Registry
        The stats that can be requested.
    client : distributed.Client, optional
        Where to compute; the current default scheduler when not given.

    Returns
    -------
    RunResult

    Raises
    ------
    MppDaskError
        On invalid input, settings or output; nothing of this run is left in the output.
    """
    started = time.perf_counter()
    validate_replay_id(plan.replay_id)
    replay = discover_replay(plan.input_dir, plan.storage_options)
    if not replay.aspects:
        raise ConfigError(f"no aspect files (*.mpk of a known aspect) in {plan.input_dir}")

    tables, aspect_frames, skipped = build_tables(plan, registry, replay)
    logger.info("replay %s: %d tables from %d aspect files (%d partitions)", plan.replay_id,
                len(tables), len(aspect_frames),
                sum(f.frame.npartitions for f in aspect_frames.values()))

    staging = Staging.create(plan.output_dir, plan.replay_id, plan.storage_options)
    try:
        tallies = _compute_and_stage(tables, aspect_frames, staging, plan, client)
        manifest = _manifest(plan, replay, tables, skipped, tallies, started)
        staging.commit(list(tables), manifest)
    except BaseException:
        staging.discard()
        raise

    return RunResult(
        replay_id=plan.replay_id, output_dir=plan.output_dir, tables=list(tables),
        skipped_stats=skipped, rows_per_aspect=manifest["rows_per_aspect"],
        dropped_rows=manifest["dropped_rows"], seconds=time.perf_counter() - started,
        manifest=manifest,
    )


def part_file_name(index: int) -> str:
    """Return the Parquet file name of partition ``index``; zero-padded so names sort."""
    return f"part.{index:06d}.parquet"


def _compute_and_stage(tables: dict[str, dd.DataFrame], aspect_frames: dict[str, AspectFrame],
                       staging: Staging, plan: RunPlan,
                       client: Client | None) -> dict[str, FileTally]:
    writes = [
        frame.to_parquet(staging.table_urlpath(name), write_index=False, compute=False,
                         compression=plan.compression, storage_options=plan.storage_options,
                         write_metadata_file=False, name_function=part_file_name)
        for name, frame in tables.items()
    ]
    tally_frames = [aspect_frame.tally for aspect_frame in aspect_frames.values()]

    compute_started = time.perf_counter()
    with warnings.catch_warnings():
        # The output folder of each table is new, so dask's overwrite check is moot.
        warnings.filterwarnings("ignore", message=".*Computing mixed collections.*")
        if client is not None:
            results = client.compute([*writes, *tally_frames], sync=True)
        else:
            results = dask.compute(*writes, *tally_frames)
    logger.info("replay %s: computed and staged %d tables in %.1f s", plan.replay_id,
                len(tables), time.perf_counter() - compute_started)

    computed_tallies = results[len(writes):]
    return {name: tally_from_frame(frame)
            for name, frame in zip(aspect_frames, computed_tallies)}


def _manifest(plan: RunPlan, replay: ReplayFiles, tables: dict[str, dd.DataFrame],
              skipped: dict[str, str], tallies: dict[str, FileTally],
              started: float) -> dict:
    from importlib.metadata import version

    return {
        "status": "complete",
        "replay_id": plan.replay_id,
        "mpp_dask_version": mpp_dask.__version__,
        "schema_version": SCHEMA_VERSION,
        "versions": {name: version(name) for name in ("dask", "distributed", "pandas",
                                                      "pyarrow", "msgpack")},
        "python": platform.python_version(),
        "input_dir": plan.input_dir,
        "input_files": {
            name: {"path": file.urlpath, "size": file.size, "token": file.token}
            for name, file in replay.aspects.items()
        },
        "tables": list(tables),
        "skipped": skipped,
        "rows_per_aspect": {name: tally.rows_kept for name, tally in tallies.items()},
        "dropped_rows": {name: dict(tally.dropped) for name, tally in tallies.items()
                         if tally.dropped},
        "unknown_enum_codes": {name: tally.unknown_enum_codes for name, tally in tallies.items()
                               if tally.unknown_enum_codes},
        "settings": {
            "blocksize": plan.blocksize,
            "skip_on_error": plan.skip_on_error,
            "stats": plan.stats,
            "streams": plan.streams,
            "compression": plan.compression,
        },
        "seconds": round(time.perf_counter() - started, 3),
    }
