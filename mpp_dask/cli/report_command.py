"""The ``mpp-dask report`` command: write the HTML report of one replay."""

from __future__ import annotations

import logging
import sys

import click

from mpp_dask import settings
from mpp_dask.cli.run_on_cluster import merge_storage_options, storage_options
from mpp_dask.errors import MppDaskError


@click.command("report")
@click.argument("output_dir", type=str)
@click.option("--replay-id", "-r", required=True,
              help="Replay to report on, as named in <output_dir>/_manifests/.")
@click.option("--output", "-o", "report_path", type=str, default=None,
              help="HTML file to write.  [default: <output_dir>/_reports/<replay-id>.html]")
@click.option("--storage-options", "storage_options_text", type=str, default=None,
              help="JSON object of fsspec options for URLs, e.g. '{\"anon\": true}'; its "
                   "keys override the storage-options setting.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="YAML file of settings that override the defaults.")
def report_command(output_dir: str, replay_id: str, report_path: str | None,
                   storage_options_text: str | None, config_file: str | None) -> None:
    """Write a self-contained HTML report of one replay from the output of a run.

    OUTPUT_DIR is the folder given as -o to 'mpp-dask run'. The page shows the
    stats and streams that the run wrote, and a note in place of each plot whose
    table is not there. It opens in a browser without a network connection.
    """
    # Bokeh is imported only when a report is written, so other commands start faster.
    from mpp_dask.report.page import SECTIONS, write_report

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        settings.load_user_file(config_file)
        options = merge_storage_options(storage_options_text) or storage_options()
        target, inputs = write_report(output_dir, replay_id, report_path, options)
    except MppDaskError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)

    if inputs.last_failure is not None:
        click.echo(f"note: the last run of replay {replay_id} failed ({inputs.last_failure}); "
                   "the report shows the output of the run before it", err=True)
    for section in SECTIONS:
        reason = inputs.absent.get(section.table)
        if reason is not None:
            click.echo(f"note: {section.table} is not in the output ({reason}); the report "
                       f"shows a note in place of '{section.title}'", err=True)
    click.echo(f"wrote the report of replay {replay_id} to {target}")
