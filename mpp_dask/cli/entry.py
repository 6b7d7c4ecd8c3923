"""Entry point of the ``mpp-dask`` command, safe against Ctrl-C during start-up."""

from __future__ import annotations

import sys

# The shell's exit status for a process ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130


def main() -> None:
    """Import the command line and run it.

    Importing dask, distributed and pandas takes a second or more. A Ctrl-C in
    that time would otherwise end the command with a traceback of the import.
    """
    try:
        from mpp_dask.cli.main import cli
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)

    cli()
