"""The ``mpp-dask`` command line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from mpp_dask import __version__, settings
from mpp_dask.cli.config_command import config_command, warn_about_settings
from mpp_dask.cli.entry import EXIT_INTERRUPTED
from mpp_dask.cli.report_command import report_command
from mpp_dask.cli.run_on_cluster import (check_report_path, merge_storage_options,
                                         run_on_cluster, storage_options)
from mpp_dask.cluster import check_storage_reachable, choose_worker_kind, options_from_settings
from mpp_dask.errors import ConfigError, MppDaskError
from mpp_dask import pipeline
from mpp_dask.output.commit import validate_replay_id
from mpp_dask.output.formats import OUTPUT_FORMATS, resolve_output_formats
from mpp_dask.progress import should_draw_bar
from mpp_dask.reading.replays import aspect_bytes, resolve_replays
from mpp_dask.reading.ranges import normalize_blocksize
from mpp_dask.schema import ASPECTS
from mpp_dask.stats.registry import build_registry

logger = logging.getLogger("mpp_dask")

EXIT_SOME_FAILED = 1


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.captureWarnings(True)
    # Distributed logs every worker start and stop at INFO; keep that for DEBUG runs.
    if level.upper() != "DEBUG":
        logging.getLogger("distributed").setLevel(logging.WARNING)


def _absolute(urlpath: str) -> str:
    # Workers resolve relative paths against their own working folder.
    return urlpath if "://" in urlpath else os.path.abspath(urlpath)


def _check_output_outside_input(input_dir: str, output_dir: str) -> None:
    if "://" in input_dir or "://" in output_dir:
        return
    input_path = Path(input_dir).resolve()
    output_path = Path(output_dir).resolve()
    if output_path == input_path or input_path in output_path.parents:
        raise ConfigError(f"the output folder {output_dir} is inside the input folder "
                          f"{input_dir}; choose an output folder elsewhere")


def _fail(exc: MppDaskError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


@click.group()
@click.version_option(__version__, prog_name="mpp-dask")
def cli() -> None:
    """Turn replay telemetry (MessagePack aspect files) into clean Parquet tables and stats."""


@cli.command()
@click.argument("replay_id", required=False)
@click.option("--input-dir", "-i", required=True, type=str,
              help="A replay folder of <aspect>.mpk files, a folder of replay folders, a glob "
                   "of replay folders, or a text file listing replay folders (path or URL).")
@click.option("--output-dir", "-o", required=True, type=str,
              help="Output folder; each table is written to <output-dir>/<table>/replay_id=<id>/ "
                   "as Parquet, and to <output-dir>/_formats/<format>/<table>/replay_id=<id>/ "
                   "in the other formats.")
@click.option("--output-format", "output_formats", multiple=True,
              type=click.Choice(OUTPUT_FORMATS),
              help="Format to write every table in (repeatable). parquet: a hive-partitioned "
                   "dataset per table. jsonl-gzip, msgpack-gzip, csv: one <table>.jsonl.gz, "
                   "<table>.msgpack.gz or <table>.csv file per table and replay under "
                   "<output-dir>/_formats/<format>/.  [default: output.formats setting, "
                   "parquet]")
@click.option("--compute-stat", "-s", "stats", multiple=True,
              help="Stat to compute (repeatable). Default: every default stat.")
@click.option("--stream", "-u", "streams", multiple=True,
              help="Aspect to write as a clean table (repeatable); 'all' writes every aspect.")
@click.option("--blocksize", type=str, default=None,
              help="Bytes of an aspect file per partition, e.g. '64 MiB' or 4096.  "
                   "[default: reading.blocksize setting]")
@click.option("--skip-on-error", is_flag=True, default=None,
              help="Drop invalid rows and count them instead of failing.")
@click.option("--fail-fast", is_flag=True,
              help="Stop at the first replay that fails instead of going on with the others.")
@click.option("--force-reprocess", is_flag=True,
              help="Compute replays again even when their output is complete for the same "
                   "inputs and settings, and decode aspect files again instead of reading "
                   "them from the cache (the cache entries are rewritten).")
@click.option("--cache-dir", type=str, default=None,
              help="Folder or fsspec URL where decoded aspect partitions are kept as Parquet, "
                   "so that a later run on the same files skips decoding; every worker must "
                   "reach it.  [default: cache.dir setting, off when null]")
@click.option("--no-cache", is_flag=True,
              help="Neither read nor write the cache, even when the cache.dir setting is set.")
@click.option("--dry-run", is_flag=True,
              help="List the files, planned partitions and stats of each replay, and stop "
                   "without reading any data.")
@click.option("--plugin-dir", "plugin_dirs", multiple=True,
              type=click.Path(exists=True, file_okay=False),
              help="Folder of .py files declaring extra stats (repeatable).")
@click.option("--scheduler-address", type=str, default=None,
              help="Address of an existing Dask scheduler to run on, e.g. "
                   "tcp://127.0.0.1:8786.  [default: cluster.scheduler-address setting, then "
                   "dask's scheduler-address or DASK_SCHEDULER_ADDRESS, then a LocalCluster]")
@click.option("--local", is_flag=True,
              help="Start a new LocalCluster even when a scheduler address is set in the "
                   "settings or in DASK_SCHEDULER_ADDRESS.")
@click.option("--n-workers", type=click.IntRange(min=1), default=None,
              help="Workers of the local cluster.  [default: one per core]")
@click.option("--threads-per-worker", type=click.IntRange(min=1), default=None,
              help="Threads per worker of the local cluster.  [default: 1]")
@click.option("--memory-limit", type=str, default=None,
              help="Memory limit per worker of the local cluster, e.g. '4GiB'.  [default: auto]")
@click.option("--dashboard-address", type=str, default=None,
              help="Host:port of the dashboard of the local cluster; port 0 picks a free "
                   "port.  [default: 127.0.0.1:8787, or a free port when that one is busy]")
@click.option("--storage-options", type=str, default=None,
              help="JSON object of fsspec options for input and output URLs, e.g. "
                   "'{\"anon\": true}'; its keys override the storage-options setting.")
@click.option("--no-progress", is_flag=True,
              help="Do not draw the progress bar (it is drawn only when stderr is a terminal).")
@click.option("--performance-report", type=click.Path(dir_okay=False), default=None,
              help="Save Dask's performance report of the computation to this HTML file.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="YAML file of settings that override the defaults, dask's "
                                 "config files and the environment.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                               case_sensitive=False),
              default="INFO", show_default=True, help="Logging level.")
def run(replay_id: str | None, input_dir: str, output_dir: str, stats: tuple[str, ...],
        streams: tuple[str, ...], blocksize: str | None, skip_on_error: bool | None,
        output_formats: tuple[str, ...],
        fail_fast: bool, force_reprocess: bool, cache_dir: str | None, no_cache: bool,
        dry_run: bool, plugin_dirs: tuple[str, ...],
        scheduler_address: str | None, local: bool, n_workers: int | None,
        threads_per_worker: int | None, memory_limit: str | None,
        dashboard_address: str | None, storage_options: str | None, no_progress: bool,
        performance_report: str | None, config_file: str | None, log_level: str) -> None:
    """Compute stats and streams of one or many replays and write them in the output formats.

    REPLAY_ID names the output of a single replay folder; without it each replay is
    named after its folder.
    """
    _configure_logging(log_level)
    try:
        settings.load_user_file(config_file)
        settings.apply_command_line({
            "mpp-dask.cluster.scheduler-address": scheduler_address,
            "mpp-dask.cluster.n-workers": n_workers,
            "mpp-dask.cluster.threads-per-worker": threads_per_worker,
            "mpp-dask.cluster.memory-limit": memory_limit,
            "mpp-dask.cluster.dashboard-address": dashboard_address,
            "mpp-dask.storage-options": merge_storage_options(storage_options),
            "mpp-dask.cache.dir": cache_dir,
        })
        warn_about_settings()
        plan, sources, registry = _plan_run(replay_id, input_dir, output_dir, stats, streams,
                                            blocksize, skip_on_error, plugin_dirs, fail_fast,
                                            force_reprocess, _cache_dir(cache_dir, no_cache))
        plan.output_formats = _output_formats(output_formats)
        if dry_run:
            _print_dry_run(pipeline.describe_plan(sources, plan, registry))
            return
        options = options_from_settings(local=local,
                                        quiet_worker_logs=log_level.upper() != "DEBUG")
        options = choose_worker_kind(
            options, len(sources),
            lambda limit: aspect_bytes(sources, plan.storage_options, limit))
        check_storage_reachable([plan.output_dir, *(s.urlpath for s in sources),
                                 *([plan.cache_dir] if plan.cache_dir else [])], options)
        outcomes = run_on_cluster(sources, plan, registry, options,
                                  show_progress=should_draw_bar(no_progress),
                                  report_path=check_report_path(performance_report))
    except MppDaskError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        click.echo("interrupted; nothing of the unfinished replays was committed", err=True)
        sys.exit(EXIT_INTERRUPTED)

    _print_summary(outcomes, plan.output_dir)
    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    if failed:
        sys.exit(failed[0].error.exit_code if len(outcomes) == 1 else EXIT_SOME_FAILED)


def _print_dry_run(described: list[dict]) -> None:
    for replay in described:
        click.echo(f"replay {replay['replay_id']} ({replay['input_dir']})")
        for name, file in replay["aspect_files"].items():
            click.echo(f"  {name}: {file['size']} bytes, {file['partitions']} partitions")
        if replay["missing_aspects"]:
            click.echo(f"  missing aspects: {', '.join(replay['missing_aspects'])}")
        if replay["unknown_aspect_files"]:
            click.echo(f"  unknown aspect files (ignored): "
                       f"{', '.join(replay['unknown_aspect_files'])}")
        click.echo(f"  stats: {', '.join(replay['stats']) or 'none'}")
        click.echo(f"  streams: {', '.join(replay['streams']) or 'none'}")
        click.echo(f"  output formats: {', '.join(replay['output_formats'])}")
        for name, reason in replay["skipped"].items():
            click.echo(f"  would skip {name}: {reason}")


def _print_summary(outcomes: list[pipeline.ReplayOutcome], output_dir: str) -> None:
    if len(outcomes) == 1 and outcomes[0].status == "failed":
        click.echo(f"error: {outcomes[0].error}", err=True)
        return

    for outcome in outcomes:
        for name, reason in outcome.skipped_tables.items():
            click.echo(f"replay {outcome.replay_id}: skipped {name}: {reason}", err=True)

    counts = {status: sum(o.status == status for o in outcomes)
              for status in ("done", "skipped", "failed")}
    noun = "replay" if len(outcomes) == 1 else "replays"
    click.echo(f"{len(outcomes)} {noun}: {counts['done']} done, {counts['skipped']} skipped "
               f"(already complete), {counts['failed']} failed; output in {output_dir}")
    width = max(len("replay"), *(len(o.replay_id) for o in outcomes))
    click.echo(f"  {'replay':<{width}}  {'status':<7}  {'rows':>10}  {'seconds':>8}  error")
    for outcome in outcomes:
        error = str(outcome.error).splitlines()[0] if outcome.error else ""
        rows = str(outcome.rows) if outcome.status == "done" else "-"
        click.echo(f"  {outcome.replay_id:<{width}}  {outcome.status:<7}  {rows:>10}  "
                   f"{outcome.seconds:>8.1f}  {error}")

    if len(outcomes) == 1:
        for name, count in outcomes[0].rows_per_aspect.items():
            dropped = sum(outcomes[0].dropped_rows.get(name, {}).values())
            rows = "row" if dropped == 1 else "rows"
            note = f" ({dropped} invalid {rows} dropped)" if dropped else ""
            click.echo(f"  {name}: {count} rows{note}")


def _cache_dir(option: str | None, no_cache: bool) -> str | None:
    """Return the absolute cache folder of the run, or None when the cache is off."""
    if no_cache and option is not None:
        raise ConfigError("--cache-dir and --no-cache contradict each other; give one of them")
    value = settings.get("cache.dir")
    if no_cache or value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"invalid setting mpp-dask.cache.dir: {value!r} (from "
                          f"{settings.source_of('mpp-dask.cache.dir')}); expected a folder "
                          "path or URL, or null")
    cache_dir = _absolute(value)
    if "://" not in cache_dir and os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
        raise ConfigError(f"the cache folder {cache_dir} is an existing file; choose a folder")
    return cache_dir


def _plan_run(replay_id, input_dir, output_dir, stats, streams, blocksize, skip_on_error,
              plugin_dirs, fail_fast, force_reprocess, cache_dir=None):
    """Resolve options and settings into a run plan; every check happens before any work."""
    try:
        size = normalize_blocksize(blocksize or settings.get("reading.blocksize"))
    except ValueError as exc:
        raise ConfigError(f"invalid --blocksize: {exc}") from exc
    if skip_on_error is None:
        skip_on_error = bool(settings.get("reading.skip-on-error"))

    input_dir, output_dir = _absolute(input_dir), _absolute(output_dir)
    if replay_id is not None:
        validate_replay_id(replay_id)
    storage = storage_options()
    if not any(character in input_dir for character in "*?[") and os.path.isdir(input_dir):
        _check_output_outside_input(input_dir, output_dir)
    sources = resolve_replays(input_dir, replay_id, storage)
    for source in sources:
        _check_output_outside_input(source.urlpath, output_dir)
    if "://" not in output_dir and os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ConfigError(f"the output folder {output_dir} is an existing file; choose a "
                          "folder")

    all_plugin_dirs = [*settings.get("plugin-dirs", default=[]), *plugin_dirs]
    registry = build_registry(all_plugin_dirs)
    registry.select(stats)  # an unknown name fails here, before any work
    pipeline.resolve_streams(list(streams))

    plan = pipeline.RunPlan(output_dir=output_dir, stats=list(stats), streams=list(streams),
                            blocksize=size, skip_on_error=skip_on_error,
                            compression=settings.get("output.compression"),
                            storage_options=storage,
                            fail_fast=fail_fast, force_reprocess=force_reprocess,
                            cache_dir=cache_dir)
    return plan, sources, registry


def _output_formats(requested: tuple[str, ...]) -> list[str]:
    """Return the formats of ``--output-format``, or else of the output.formats setting."""
    if requested:
        return resolve_output_formats(requested)
    try:
        return resolve_output_formats(settings.get("output.formats", default=["parquet"]))
    except ConfigError as exc:
        raise ConfigError(f"invalid setting mpp-dask.output.formats (from "
                          f"{settings.source_of('mpp-dask.output.formats')}): {exc}") from exc


@cli.command("list-stats")
@click.option("--plugin-dir", "plugin_dirs", multiple=True,
              type=click.Path(exists=True, file_okay=False),
              help="Folder of .py files declaring extra stats (repeatable).")
def list_stats(plugin_dirs: tuple[str, ...]) -> None:
    """List the stats: name, default marker, needed aspects and description."""
    registry = build_registry([*settings.get("plugin-dirs", default=[]), *plugin_dirs])
    width = max(len(name) for name in registry.names())
    for stat in registry:
        marker = "*" if stat.default else " "
        click.echo(f"{marker} {stat.name:<{width}}  needs {', '.join(stat.aspects)}")
        click.echo(f"  {'':<{width}}  {stat.description}")
    click.echo("* runs by default")


@cli.command("list-aspects")
@click.option("--fields", is_flag=True, help="Also list each aspect's fields.")
def list_aspects(fields: bool) -> None:
    """List the aspects (the tables of a replay) and, with --fields, their columns."""
    for aspect in ASPECTS.values():
        click.echo(f"{aspect.name}: {aspect.description}")
        if fields:
            for fld in aspect.fields:
                click.echo(f"    {fld.name:<24} {str(fld.dtype):<10} {fld.describe()}")


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=10,
              show_default=True, help="Game length in minutes.")
@click.option("--teams", type=click.IntRange(min=2), default=4, show_default=True,
              help="Players (teams), not counting the Gaia team.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random seed.")
@click.option("--units-per-team", type=click.IntRange(min=1), default=None,
              help="Units each team creates over the match; more units make a larger "
                   "replay.  [default: 20 per game minute]")
def generate(out_dir: str, minutes: float, teams: int, seed: int,
             units_per_team: int | None) -> None:
    """Write a deterministic synthetic replay to OUT_DIR."""
    from mpp_dask.generate import generate_replay

    rows = generate_replay(out_dir, minutes=minutes, teams=teams, seed=seed,
                           units_per_team=units_per_team)
    click.echo(f"wrote a {minutes:g}-minute replay with {teams} teams to {out_dir}: "
               f"{sum(rows.values())} rows")


cli.add_command(config_command)
cli.add_command(report_command)
