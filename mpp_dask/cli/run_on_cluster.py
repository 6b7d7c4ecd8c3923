"""The cluster side of ``mpp-dask run``: connect, show progress, run the pipeline, report."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator

import click
from distributed import Client, performance_report

from mpp_dask import pipeline, settings
from mpp_dask.cluster import ClusterOptions, connect, dashboard_link
from mpp_dask.errors import ConfigError
from mpp_dask.progress import TerminalProgressBar, log_rows
from mpp_dask.quiet_logs import quiet_this_process
from mpp_dask.reading.replays import ReplaySource
from mpp_dask.stats.registry import Registry

logger = logging.getLogger("mpp_dask")


def merge_storage_options(text: str | None) -> dict | None:
    """Return the storage-options setting updated with the keys of the JSON ``text``.

    Returns None when ``text`` is None, so the setting stays as it is.

    Raises
    ------
    ConfigError
        If ``text`` is not a JSON object, or the setting is not a mapping.
    """
    if text is None:
        return None
    try:
        given = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid --storage-options {text!r}: not JSON ({exc})") from exc
    if not isinstance(given, dict):
        raise ConfigError(f"invalid --storage-options {text!r}: expected a JSON object, "
                          'for example \'{"anon": true}\'')
    return {**storage_options(), **given}


def storage_options() -> dict:
    """Return the effective storage-options setting.

    Raises
    ------
    ConfigError
        If the setting is not a mapping.
    """
    value = settings.get("storage-options") or {}
    if not isinstance(value, dict):
        raise ConfigError(f"invalid setting mpp-dask.storage-options: {value!r} (from "
                          f"{settings.source_of('mpp-dask.storage-options')}); expected a "
                          "mapping of fsspec options")
    return dict(value)


def check_report_path(path: str | None) -> str | None:
    """Return the performance report path made absolute, after checking its folder exists.

    Raises
    ------
    ConfigError
        If the folder of ``path`` does not exist, so that a run does not compute
        everything and then fail to save the report.
    """
    if path is None:
        return None
    path = os.path.abspath(path)
    if not os.path.isdir(os.path.dirname(path)):
        raise ConfigError(f"cannot write the performance report {path}: its folder "
                          "does not exist")
    return path


@contextlib.contextmanager
def _performance_report(path: str | None) -> Iterator[None]:
    """Record Dask's performance report of the body and save it unless Ctrl-C stopped it."""
    if path is None:
        yield
        return
    report = performance_report(filename=path)
    report.__enter__()
    try:
        yield
    except KeyboardInterrupt:
        # Fetching the report can take seconds, and an interrupted run must exit at once.
        raise
    except BaseException as exc:
        report.__exit__(type(exc), exc, exc.__traceback__)
        raise
    report.__exit__(None, None, None)
    logger.info("wrote the Dask performance report to %s", path)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _worker_count(client: Client) -> int:
    return len(client.scheduler_info(n_workers=-1)["workers"])


def run_on_cluster(sources: list[ReplaySource], plan: pipeline.RunPlan, registry: Registry,
                   options: ClusterOptions, show_progress: bool,
                   report_path: str | None = None) -> list[pipeline.ReplayOutcome]:
    """Run the pipeline on the cluster of ``options`` and log the time of each stage.

    The stages are: starting or connecting to the cluster, building the task graphs
    of all replays, computing and committing them, and shutting the cluster down.
    The dashboard link goes to stderr as well as to the log, so that it shows at
    any log level.
    """
    if options.quiet_worker_logs:
        quiet_this_process()
    bar: TerminalProgressBar | None = None
    with contextlib.ExitStack() as stack:
        started = time.perf_counter()
        client = stack.enter_context(connect(options))
        logger.info("stage cluster: %s with %d %s ready in %.1f s",
                    "remote scheduler" if options.is_remote else "local cluster",
                    _worker_count(client),
                    "thread workers" if options.processes is False else "workers",
                    time.perf_counter() - started)
        link = dashboard_link(client, options)
        if link:
            click.echo(f"Dask dashboard: {link}", err=True)

        stack.enter_context(_performance_report(report_path))
        started = time.perf_counter()
        submitted_at = started

        def on_submit(futures: list) -> None:
            nonlocal bar, submitted_at
            submitted_at = time.perf_counter()
            logger.info("stage build graphs: %s submitted as %d collections in %.1f s",
                        _count(len(sources), "replay"), len(futures), submitted_at - started)
            if show_progress and futures:
                bar = TerminalProgressBar(futures, client)
                bar.start()

        try:
            outcomes = pipeline.run(sources, plan, registry, client, on_submit=on_submit)
        finally:
            if bar is not None:
                bar.stop()
        done = [outcome for outcome in outcomes if outcome.status == "done"]
        logger.info("stage compute and commit: %s done, %d rows decoded, %s written in %.1f s",
                    _count(len(done), "replay"), sum(o.rows for o in done),
                    _count(sum(len(o.tables) for o in done), "table"),
                    time.perf_counter() - submitted_at)
        log_rows(outcomes)
        closing = time.perf_counter()
    logger.info("stage shutdown: %.1f s", time.perf_counter() - closing)
    return outcomes
