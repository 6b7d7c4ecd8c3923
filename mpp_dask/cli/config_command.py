"""The ``mpp-dask config`` command: print the effective settings and their sources."""

from __future__ import annotations

import sys
from typing import Any

import click
import yaml

from mpp_dask import settings
from mpp_dask.errors import ConfigError


def parse_assignments(assignments: tuple[str, ...]) -> dict[str, Any]:
    """Return ``{key: value}`` from ``KEY=VALUE`` strings; values are parsed as YAML.

    Raises
    ------
    ConfigError
        If an assignment has no ``=``, an empty key, or a value that is not YAML.
    """
    values: dict[str, Any] = {}
    for assignment in assignments:
        key, separator, text = assignment.partition("=")
        key = key.strip()
        if not separator or not key:
            raise ConfigError(f"invalid --set {assignment!r}: expected KEY=VALUE, for "
                              "example --set mpp-dask.reading.blocksize='16 MiB'")
        try:
            values[key] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid value in --set {assignment!r}: {exc}") from exc
    return values


def format_value(value: Any) -> str:
    """Return ``value`` as one line of YAML, as it would be written in a config file."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def warn_about_settings() -> None:
    """Print a warning for misspelled keys and for variables that dask does not read."""
    for key in settings.unknown_keys():
        click.echo(f"warning: {key} is not a known setting ({settings.source_of(key)})",
                   err=True)
    for name in settings.misnamed_environment_variables():
        click.echo(f"warning: the environment variable {name} is ignored, because dask "
                   f"reads only DASK_-prefixed variables; use DASK_{name} instead", err=True)


@click.command("config")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="YAML file of settings, as passed to 'mpp-dask run --config'.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Set a setting by its full key, e.g. mpp-dask.cluster.n-workers=2 "
                   "(repeatable); VALUE is YAML.")
def config_command(config_file: str | None, assignments: tuple[str, ...]) -> None:
    """Print each effective setting, its value and where it came from.

    A setting comes from the default file, a dask config file, the environment
    (DASK_MPP_DASK__<SECTION>__<KEY>), the --config file or the command line; each
    of these wins over the ones before it.
    """
    try:
        settings.load_user_file(config_file)
        settings.apply_command_line(parse_assignments(assignments))
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)

    rows = settings.effective_settings()
    values = [format_value(row.value) for row in rows]
    key_width = max(len(row.key) for row in rows)
    # Long values (lists of commands) push their source right instead of widening every row.
    value_width = min(max(len(value) for value in values), 24)
    click.echo(f"{'setting':<{key_width}}  {'value':<{value_width}}  source")
    for row, value in zip(rows, values):
        click.echo(f"{row.key:<{key_width}}  {value:<{value_width}}  {row.source}")
    warn_about_settings()
