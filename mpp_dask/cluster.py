"""Start a LocalCluster or connect to an existing Dask scheduler, and prepare its workers.

Where a run computes is decided by the first of these that is set:

1. ``--scheduler-address`` on the command line;
2. ``--local``: a fresh LocalCluster, even when a scheduler address is set;
3. the setting ``mpp-dask.cluster.scheduler-address`` (user file, environment, dask's files);
4. dask's own setting ``scheduler-address``, which ``DASK_SCHEDULER_ADDRESS`` also sets;
5. otherwise a fresh LocalCluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dask.config
from dask.system import CPU_COUNT
from dask.utils import parse_bytes, parse_timedelta
from distributed import Client, LocalCluster
from distributed.comm import connect as connect_comm
from distributed.security import Security
from distributed.utils import format_dashboard_link

from mpp_dask import preflight, settings
from mpp_dask.errors import ClusterError, ConfigError
from mpp_dask.local_workers import LocalWorkerSetup
from mpp_dask.plugin_shipping import ship_plugins

logger = logging.getLogger(__name__)

ADDRESS_KEY = "mpp-dask.cluster.scheduler-address"
PRE_SPAWN_ENVIRON_KEY = "distributed.nanny.pre-spawn-environ"
DASHBOARD_KEY = "mpp-dask.cluster.dashboard-address"
# Protocols of fsspec whose files exist only inside the process that wrote them.
IN_PROCESS_PROTOCOLS = ("memory",)


@dataclass
class ClusterOptions:
    """How to reach or start the cluster of a run."""

    scheduler_address: str | None = None
    # Where the address came from, for log lines and error messages.
    address_source: str = "no scheduler address set"
    n_workers: int | None = None
    threads_per_worker: int | None = 1
    memory_limit: str | int | float | None = "auto"
    dashboard_address: str | None = "127.0.0.1:8787"
    dashboard_port_explicit: bool = False
    # None: decided by the size of the input, see choose_worker_kind.
    processes: bool | None = True
    process_workers_min_bytes: int = 64 * 2**20
    connect_timeout: float = 10.0
    preflight: bool = True
    quiet_worker_logs: bool = True

    @property
    def is_remote(self) -> bool:
        """Whether the run goes to an existing scheduler rather than a new LocalCluster."""
        return bool(self.scheduler_address)


def resolve_scheduler_address(local: bool = False) -> tuple[str | None, str]:
    """Return the scheduler address of the run (None for a LocalCluster) and its source.

    Raises
    ------
    ConfigError
        If ``--local`` is combined with ``--scheduler-address``.
    """
    address = settings.get("cluster.scheduler-address")
    source = settings.source_of(ADDRESS_KEY)
    if address and source == settings.COMMAND_LINE:
        if local:
            raise ConfigError("--local and --scheduler-address cannot be combined, so pass "
                              "only one of them")
        return address, "--scheduler-address"
    if local:
        return None, "--local"
    if address:
        return address, f"setting mpp-dask.cluster.scheduler-address from {source}"
    dask_address = dask.config.get(settings.DASK_SCHEDULER_ADDRESS_KEY, default=None)
    if dask_address:
        dask_source = settings.source_of(settings.DASK_SCHEDULER_ADDRESS_KEY)
        return dask_address, f"dask setting scheduler-address from {dask_source}"
    return None, "no scheduler address set"


def _positive_int_or_none(key: str) -> int | None:
    value = settings.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"invalid setting mpp-dask.{key}: {value!r} (from "
                          f"{settings.source_of(f'mpp-dask.{key}')}); expected a positive "
                          "integer or null")
    return value


def _memory_limit() -> str | int | float | None:
    value = settings.get("cluster.memory-limit")
    if value is None or value == "auto" or isinstance(value, (int, float)):
        return value
    try:
        parse_bytes(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid memory limit {value!r} (from "
                          f"{settings.source_of('mpp-dask.cluster.memory-limit')}): expected "
                          "bytes such as '4GiB', a fraction of the machine's memory such as "
                          "0.5, or 'auto'") from exc
    return value


def _seconds(key: str) -> float:
    value = settings.get(key)
    try:
        seconds = parse_timedelta(value, default="s")
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"invalid setting mpp-dask.{key}: {value!r}, expected a duration "
                          "such as '10s' or a number of seconds") from exc
    if seconds is None or seconds <= 0:
        raise ConfigError(f"invalid setting mpp-dask.{key}: {value!r} is not positive")
    return seconds


def _processes() -> bool | None:
    value = settings.get("cluster.processes", default="auto")
    if value == "auto":
        return None
    if not isinstance(value, bool):
        raise ConfigError(f"invalid setting mpp-dask.cluster.processes: {value!r} (from "
                          f"{settings.source_of('mpp-dask.cluster.processes')}); expected "
                          "true, false or auto")
    return value


def _bytes(key: str) -> int:
    value = settings.get(key)
    try:
        return parse_bytes(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid setting mpp-dask.{key}: {value!r}, expected bytes such "
                          "as '64 MiB'") from exc


def options_from_settings(local: bool = False, quiet_worker_logs: bool = True
                          ) -> ClusterOptions:
    """Return the cluster options of a run from the effective settings.

    Raises
    ------
    ConfigError
        If a cluster setting has an invalid value.
    """
    address, address_source = resolve_scheduler_address(local)
    dashboard_source = settings.source_of(DASHBOARD_KEY)
    return ClusterOptions(
        scheduler_address=address,
        address_source=address_source,
        n_workers=_positive_int_or_none("cluster.n-workers"),
        threads_per_worker=_positive_int_or_none("cluster.threads-per-worker"),
        memory_limit=_memory_limit(),
        dashboard_address=settings.get("cluster.dashboard-address") or None,
        dashboard_port_explicit=not dashboard_source.startswith("default file"),
        processes=_processes(),
        process_workers_min_bytes=_bytes("cluster.process-workers-min-bytes"),
        connect_timeout=_seconds("cluster.connect-timeout"),
        preflight=bool(settings.get("cluster.preflight", default=True)),
        quiet_worker_logs=quiet_worker_logs,
    )


def choose_worker_kind(options: ClusterOptions, replay_count: int,
                       input_bytes: Callable[[int], int]) -> ClusterOptions:
    """Return ``options`` with the kind of LocalCluster workers decided.

    With ``processes`` left to the input (``None``), a LocalCluster runs its
    workers as threads of the run's process for a single replay whose aspect
    files total less than ``process_workers_min_bytes``. Starting and stopping
    worker processes costs about two seconds, more than the work of a small
    replay, and a small replay's data fits in one process. Several replays get
    worker processes however small they are. The client builds the graphs of
    later replays while the workers compute earlier ones, and thread workers
    would share one interpreter lock with it: 60 two-minute replays took 74 s
    on thread workers and 49 s on worker processes.

    Parameters
    ----------
    options : ClusterOptions
        The options from the settings.
    replay_count : int
        How many replays the run computes.
    input_bytes : callable
        Called with a limit, returns the input's aspect bytes, or any number at
        least that limit once the total reaches it (so a corpus need not be
        listed to its end).
    """
    if options.processes is not None:
        return options
    if options.is_remote or replay_count > 1:
        return dataclasses.replace(options, processes=True)

    limit = options.process_workers_min_bytes
    small = input_bytes(limit) < limit
    logger.debug("input is %s than %d bytes: %s", "smaller" if small else "not smaller",
                 limit, "thread workers" if small else "worker processes")
    return dataclasses.replace(options, processes=not small)


def check_storage_reachable(urlpaths: list[str], options: ClusterOptions) -> None:
    """Reject in-process storage, such as ``memory://``, on a cluster of other processes.

    Raises
    ------
    ConfigError
        If a URL uses an in-process protocol while workers run in other processes.
    """
    if not options.is_remote and not options.processes:
        return
    for urlpath in urlpaths:
        protocol = urlpath.split("://", 1)[0] if "://" in urlpath else "file"
        if protocol in IN_PROCESS_PROTOCOLS:
            raise ConfigError(
                f"{urlpath}: {protocol}:// files exist only in this process, so workers in "
                "other processes cannot open them; use a shared file system or object "
                "store, or a LocalCluster of threads (setting mpp-dask.cluster.processes: "
                "false)")


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Like tornado, which serves the dashboard, so a port in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def resolve_dashboard_address(address: str | None, explicit: bool) -> str | None:
    """Return the dashboard address to use; None turns the dashboard off.

    A busy default port falls back to any free port on the same host, but a busy
    port that the user requested is an error.

    Raises
    ------
    ClusterError
        If an explicitly requested port is already in use.
    ConfigError
        If the address is not ``host:port`` or ``:port``.
    """
    if not address:
        return None
    host, _, port_text = str(address).rpartition(":")
    host = host or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"invalid dashboard address {address!r}: expected host:port, "
                          "for example 127.0.0.1:8787, or port 0 for any free port") from None
    if port == 0 or _port_is_free(host, port):
        return f"{host}:{port}"
    if explicit:
        raise ClusterError(f"dashboard address {address} is already in use. Choose another "
                           "port with --dashboard-address, or use port 0 for any free port")
    logger.info("dashboard port %d is in use, so the dashboard listens on a free port", port)
    return f"{host}:0"


def dashboard_link(client: Client, options: ClusterOptions) -> str | None:
    """Return the URL of the scheduler's dashboard, or None when it serves none."""
    if options.is_remote:
        try:
            return client.dashboard_link
        except KeyError:  # the scheduler runs without the dashboard service
            return None
    if not options.dashboard_address:
        return None
    # distributed builds the link from the scheduler's host, which for thread workers
    # is the machine's address rather than the host the dashboard listens on.
    port = client.scheduler_info(n_workers=0)["services"].get("dashboard")
    host = str(options.dashboard_address).rpartition(":")[0] or "127.0.0.1"
    return format_dashboard_link(host, port) if port else None


async def _handshake(address: str, timeout: float) -> None:
    # distributed 2026.8 bounds the TCP connect by its timeout but then waits for the
    # scheduler's handshake without one, so a peer that accepts and stays silent
    # would hang Client() forever.
    comm = await asyncio.wait_for(
        connect_comm(address, timeout=timeout, **Security().get_connection_args("client")),
        timeout)
    await comm.close()


def _connect_remote(options: ClusterOptions) -> Client:
    address = options.scheduler_address
    logger.info("connecting to the Dask scheduler at %s (%s)", address, options.address_source)
    try:
        asyncio.run(_handshake(address, options.connect_timeout))
        return Client(address, timeout=options.connect_timeout)
    except ValueError as exc:
        raise ClusterError(f"invalid scheduler address {address!r} "
                           f"({options.address_source}): {exc}") from exc
    except (OSError, TimeoutError) as exc:
        detail = str(exc) or "no answer"
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} ({options.address_source}) within "
            f"{options.connect_timeout:g} s ({detail}). Check that the scheduler runs and the "
            "address is right, or run with --local to start a local cluster") from exc


def _wait_for_workers(client: Client, options: ClusterOptions) -> None:
    try:
        client.wait_for_workers(1, timeout=options.connect_timeout)
    except TimeoutError as exc:
        raise ClusterError(
            f"the Dask scheduler at {options.scheduler_address} has no workers after "
            f"{options.connect_timeout:g} s. Start workers with: "
            f"dask worker {options.scheduler_address}") from exc


class _DeferredInterrupt:
    """Hold back SIGINT (Ctrl-C) inside the block and remember whether it came.

    An interrupt in the middle of ``LocalCluster()`` leaves a half-started cluster
    that distributed fails to close at exit, with a traceback. Only the main thread
    can handle signals, so elsewhere this does nothing.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self._previous = None

    def _remember(self, signum, frame) -> None:
        self.interrupted = True

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._remember)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def worker_environment() -> dict:
    """Return the environment variables that the nannies of a LocalCluster set in its workers.

    These are distributed's ``distributed.nanny.pre-spawn-environ`` setting, plus
    ``ARROW_DEFAULT_MEMORY_POOL=system`` unless that setting names the variable.
    As with every variable of that setting, a value in this process's own
    environment wins.

    pyarrow's default allocator (mimalloc in the pyarrow 26 wheels) keeps memory
    that arrow buffers freed, such as the P2P shuffle's shards. In a run of all
    default stats on a 3.5 GB replay with 2 workers of 3 GB each, the resident
    memory beyond malloc's bytes in use grew to 1.7 GB in one worker. That worker
    was then restarted for passing 95% of its limit. With the system allocator it stayed
    below 0.42 GB (psutil and glibc's mallinfo2, sampled every 2 s). glibc
    returns freed memory to the system because distributed sets
    ``MALLOC_TRIM_THRESHOLD_`` in the same setting.
    """
    environment = dict(dask.config.get(PRE_SPAWN_ENVIRON_KEY, default={}) or {})
    environment.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    return environment


def _start_local(options: ClusterOptions) -> tuple[LocalCluster, Client]:
    dashboard = resolve_dashboard_address(options.dashboard_address,
                                          options.dashboard_port_explicit)
    processes = options.processes is not False
    n_workers = options.n_workers
    # NOTE: each thread worker compares its memory limit (the machine's memory over
    # the workers, with "auto") with the memory of the whole process, which all of
    # them share, so thread workers may pause early. They run only small inputs.
    if n_workers is None and not processes:
        # As many thread workers as LocalCluster would start processes; on its own it
        # starts a single thread worker.
        n_workers = max(1, CPU_COUNT // (options.threads_per_worker or 1))
    # Worker processes talk over TCP on the loopback interface. Thread workers use
    # distributed's in-process transport, whose addresses take no host.
    cluster_kwargs: dict = {"host": "127.0.0.1"} if processes else {}
    if dashboard is None:
        # Without a dashboard the scheduler still serves health and metrics pages,
        # by default on port 8787 of the scheduler's host. A free loopback port keeps
        # them off other interfaces and out of the way of other clusters.
        cluster_kwargs["scheduler_kwargs"] = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}
    deferred = _DeferredInterrupt()
    try:
        with deferred, dask.config.set({PRE_SPAWN_ENVIRON_KEY: worker_environment()}):
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=options.threads_per_worker,
                memory_limit=options.memory_limit,
                dashboard_address=dashboard,
                processes=processes,
                **cluster_kwargs,
            )
    except (OSError, TimeoutError, ValueError, RuntimeError) as exc:
        root = exc
        while root.__cause__ is not None:
            root = root.__cause__
        detail = f" ({type(root).__name__}: {root})" if root is not exc else ""
        raise ClusterError(f"the local Dask cluster failed to start: {exc}{detail}") from exc
    try:
        if deferred.interrupted:
            raise KeyboardInterrupt
        client = Client(cluster)
        client.register_plugin(LocalWorkerSetup(quiet=options.quiet_worker_logs))
    except BaseException:
        cluster.close()
        raise
    return cluster, client


@contextlib.contextmanager
def connect(options: ClusterOptions) -> Iterator[Client]:
    """Yield a client of the requested cluster, with its workers ready for a run.

    On a remote cluster, waits for at least one worker and checks the package
    versions of the scheduler and workers (:func:`mpp_dask.preflight.check_workers`).
    The workers of a new LocalCluster ignore SIGINT and get quieter loggers
    (:mod:`mpp_dask.local_workers`). On any cluster, ships the plugin-folder stat
    modules to the scheduler and workers. On exit, closes the client and the
    LocalCluster it started.

    Raises
    ------
    ClusterError
        If the scheduler cannot be reached or has no worker within
        ``connect_timeout`` seconds, the workers fail the preflight check, a plugin
        fails to import on a worker, or the LocalCluster cannot start.
    """
    cluster = None
    if options.is_remote:
        client = _connect_remote(options)
    else:
        cluster, client = _start_local(options)
    try:
        if options.is_remote:
            _wait_for_workers(client, options)
            if options.preflight:
                preflight.check_workers(client)
        ship_plugins(client)

        workers = len(client.scheduler_info(n_workers=-1)["workers"])
        if cluster is None:
            logger.info("connected to the Dask scheduler at %s with %d workers; dashboard: %s",
                        options.scheduler_address, workers,
                        dashboard_link(client, options) or "off")
        else:
            logger.info("started a local cluster with %d workers; dashboard: %s", workers,
                        dashboard_link(client, options) or "off")
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
