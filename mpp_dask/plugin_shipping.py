"""Ship the stat modules of ``--plugin-dir`` folders to the workers.

The registry imports each plugin file as module ``mpp_dask_plugin_<stem>``, and
the task graph refers to the stat functions by that module name when it is
pickled. The scheduler unpickles the graph and the workers run it, but neither
has the folder. So :class:`SchedulerStatPlugins` and :class:`WorkerStatPlugins`
carry each file's source and import it under the same name on the scheduler and
on every worker, before any task is submitted and again on each worker that
joins later.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import types
from dataclasses import dataclass
from pathlib import Path

from distributed import Client
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from mpp_dask.errors import ClusterError
from mpp_dask.stats.registry import plugin_module_name

logger = logging.getLogger(__name__)

DIGEST_ATTRIBUTE = "__mpp_dask_source_digest__"


@dataclass(frozen=True)
class PluginSource:
    """The source of one plugin module, as the client imported it."""

    module_name: str
    filename: str
    source: str

    @property
    def digest(self) -> str:
        """SHA-256 of the source, to skip re-importing an unchanged module."""
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()


def loaded_plugin_sources() -> list[PluginSource]:
    """Return the plugin-folder modules that this process imported, by module name."""
    sources = []
    for name, module in sorted(sys.modules.items()):
        filename = getattr(module, "__file__", None)
        if filename is None or not name.startswith("mpp_dask_plugin_"):
            continue
        path = Path(filename)
        if plugin_module_name(path) != name or not path.is_file():
            continue
        plugin = PluginSource(name, str(path), path.read_text(encoding="utf-8"))
        # Marks the module as loaded, so that workers in this process skip it.
        setattr(module, DIGEST_ATTRIBUTE, plugin.digest)
        sources.append(plugin)
    return sources


def import_source(plugin: PluginSource) -> types.ModuleType:
    """Import ``plugin`` as module ``plugin.module_name`` unless the same source is loaded."""
    existing = sys.modules.get(plugin.module_name)
    if existing is not None and getattr(existing, DIGEST_ATTRIBUTE, None) == plugin.digest:
        return existing
    module = types.ModuleType(plugin.module_name)
    module.__file__ = plugin.filename
    setattr(module, DIGEST_ATTRIBUTE, plugin.digest)
    # Dataclasses and pickling look the module up by name while it executes.
    sys.modules[plugin.module_name] = module
    try:
        exec(compile(plugin.source, plugin.filename, "exec"), module.__dict__)
    except BaseException:
        del sys.modules[plugin.module_name]
        raise
    return module


def plugin_set_name(plugins: list[PluginSource]) -> str:
    """Return a name that identifies this set of sources.

    Registering the same set again replaces the earlier registration, and a
    client with other plugin folders registers under another name.
    """
    combined = hashlib.sha256("".join(p.module_name + p.digest for p in plugins)
                              .encode("utf-8")).hexdigest()
    return f"mpp-dask-stat-plugins-{combined[:16]}"


class SchedulerStatPlugins(SchedulerPlugin):
    """Import the client's plugin-folder stat modules on the scheduler."""

    def __init__(self, plugins: list[PluginSource]):
        self.plugins = list(plugins)
        self.name = plugin_set_name(self.plugins)

    async def start(self, scheduler) -> None:
        for plugin in self.plugins:
            import_source(plugin)


class WorkerStatPlugins(WorkerPlugin):
    """Import the client's plugin-folder stat modules on each worker."""

    def __init__(self, plugins: list[PluginSource]):
        self.plugins = list(plugins)
        self.name = plugin_set_name(self.plugins)

    def setup(self, worker) -> None:
        for plugin in self.plugins:
            import_source(plugin)


def ship_plugins(client: Client) -> None:
    """Register the loaded plugin-folder modules with the scheduler and workers of ``client``.

    Raises
    ------
    ClusterError
        If a plugin module fails to import on the scheduler or a worker, for
        example because a package it imports is missing there, or the scheduler
        rejects pickled plugins (``distributed.scheduler.pickle: false``).
    """
    plugins = loaded_plugin_sources()
    if not plugins:
        return
    names = ", ".join(p.filename for p in plugins)
    for where, plugin in (("the scheduler", SchedulerStatPlugins(plugins)),
                          ("a worker", WorkerStatPlugins(plugins))):
        try:
            client.register_plugin(plugin, name=plugin.name)
        except Exception as exc:  # any exception of the plugin code, raised remotely
            raise ClusterError(f"the stat plugins {names} failed to import on {where}: "
                               f"{type(exc).__name__}: {exc}") from exc
    logger.info("shipped %d plugin modules to the scheduler and workers: %s", len(plugins),
                ", ".join(p.module_name for p in plugins))
