"""Start a LocalCluster or connect to an existing Dask scheduler."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from distributed import Client, LocalCluster

from mpp_dask.errors import ClusterError

logger = logging.getLogger(__name__)


@dataclass
class ClusterOptions:
    """How to reach or start the cluster of a run."""

    scheduler_address: str | None = None
    n_workers: int | None = None
    threads_per_worker: int | None = 1
    memory_limit: str | int | None = "auto"
    dashboard_address: str | None = "127.0.0.1:8787"
    dashboard_port_explicit: bool = False
    connect_timeout: float = 10.0


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def resolve_dashboard_address(address: str | None, explicit: bool) -> str | None:
    """Return the dashboard address to use.

    A busy default port falls back to any free port on the same host; a busy port the
    user asked for is an error.

    Raises
    ------
    ClusterError
        If an explicitly requested port is already in use.
    """
    if not address:
        return None
    host, _, port_text = address.rpartition(":")
    host = host or "127.0.0.1"
    port = int(port_text)
    if port == 0 or _port_is_free(host, port):
        return f"{host}:{port}"
    if explicit:
        raise ClusterError(f"dashboard address {address} is already in use; choose another "
                           "port with --dashboard-address or use port 0 for any free port")
    logger.info("dashboard port %d is in use; using a free port instead", port)
    return f"{host}:0"


@contextlib.contextmanager
def connect(options: ClusterOptions) -> Iterator[Client]:
    """Yield a client of the requested cluster and close what was started on exit.

    Raises
    ------
    ClusterError
        If the scheduler cannot be reached within ``connect_timeout`` seconds or the
        LocalCluster cannot start.
    """
    if options.scheduler_address:
        try:
            client = Client(options.scheduler_address, timeout=options.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {options.scheduler_address} within "
                f"{options.connect_timeout:g} s: {exc}. Check the address, or run without "
                "--scheduler-address to use a local cluster") from exc
        logger.info("connected to scheduler %s; dashboard: %s", options.scheduler_address,
                    client.dashboard_link)
        try:
            yield client
        finally:
            client.close()
        return

    dashboard = resolve_dashboard_address(options.dashboard_address,
                                          options.dashboard_port_explicit)
    try:
        cluster = LocalCluster(
            n_workers=options.n_workers,
            threads_per_worker=options.threads_per_worker,
            memory_limit=options.memory_limit,
            dashboard_address=dashboard,
            host="127.0.0.1",
            processes=True,
        )
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"the local Dask cluster failed to start: {exc}") from exc

    client = Client(cluster)
    logger.info("local cluster with %d workers; dashboard: %s", len(cluster.workers),
                client.dashboard_link if dashboard else "off")
    try:
        yield client
    finally:
        client.close()
        cluster.close()
