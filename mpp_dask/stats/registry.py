"""The stat registry: built-in stats, entry-point plugins and plugin folders.

A stat is declared by a module-level ``STATS`` list (or a single ``STAT``) of
:class:`Stat` objects. Built-in stats live in the modules of this package; other
packages add stats through the ``mpp_dask.stats`` entry point group (the entry
point names a module or a :class:`Stat`), and a plain folder of ``.py`` files can
be loaded with :func:`load_plugin_dir`. A plugin that fails to load is named in a
warning and the others still load.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import pkgutil
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import dask.dataframe as dd

from mpp_dask.errors import ConfigError
from mpp_dask.schema import ASPECTS

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mpp_dask.stats"

StatFunction = Callable[[Mapping[str, dd.DataFrame], Mapping[str, Any]], dd.DataFrame]


class PluginWarning(UserWarning):
    """A stat plugin could not be loaded; the other stats are still available."""


@dataclass(frozen=True)
class Stat:
    """A named statistic computed from aspect frames.

    Parameters
    ----------
    name : str
        Name of the stat and of its output table; snake_case.
    description : str
        One line shown by ``mpp-dask list-stats``.
    aspects : tuple of str
        Aspects the stat reads. A stat whose aspect is missing from a replay is
        skipped with a warning.
    build : callable
        ``build(frames, params) -> dask.dataframe.DataFrame``: builds the lazy
        result from the clean aspect frames (a mapping from aspect name to Dask
        DataFrame, partitions in file order) and the stat's parameters. It must not
        call ``.compute()``.
    default : bool
        Whether the stat runs when the user names none.
    params : dict
        Default parameters; the ``mpp-dask.stats.<name>`` settings override them.
    source : str
        Where the stat was found (filled in by the registry).
    """

    name: str
    description: str
    aspects: tuple[str, ...]
    build: StatFunction
    default: bool = True
    params: dict = field(default_factory=dict)
    source: str = "mpp_dask"

    def __post_init__(self) -> None:
        unknown = [a for a in self.aspects if a not in ASPECTS]
        if unknown:
            raise ConfigError(f"stat {self.name!r} needs unknown aspects: {', '.join(unknown)}")
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise ConfigError(f"stat name {self.name!r} is not a snake_case identifier")
        if self.name.startswith("_"):
            # The output folder uses such names itself: _errors, _manifests, _formats.
            raise ConfigError(f"stat name {self.name!r} starts with '_', which is reserved "
                              "for the output's own folders; rename the stat")


def _stats_of_module(module: ModuleType) -> list[Stat]:
    stats = list(getattr(module, "STATS", []))
    single = getattr(module, "STAT", None)
    if single is not None:
        stats.append(single)
    bad = [s for s in stats if not isinstance(s, Stat)]
    if bad:
        raise ConfigError(f"module {module.__name__} declares objects that are not Stat: {bad!r}")
    return stats


def _with_source(stats: Iterable[Stat], source: str) -> list[Stat]:
    return [replace(stat, source=source) for stat in stats]


class Registry:
    """Stats by name, in the order they were registered."""

    def __init__(self) -> None:
        self._stats: dict[str, Stat] = {}

    def add(self, stat: Stat) -> None:
        """Register ``stat``; a later stat with the same name replaces the earlier one."""
        if stat.name in self._stats:
            logger.warning("stat %s from %s replaces the one from %s", stat.name, stat.source,
                           self._stats[stat.name].source)
        self._stats[stat.name] = stat

    def __contains__(self, name: str) -> bool:
        return name in self._stats

    def __getitem__(self, name: str) -> Stat:
        return self._stats[name]

    def __iter__(self):
        return iter(self._stats.values())

    def names(self) -> list[str]:
        """Return the registered stat names in registration order."""
        return list(self._stats)

    def defaults(self) -> list[Stat]:
        """Return the stats that run when none are named."""
        return [stat for stat in self._stats.values() if stat.default]

    def select(self, names: Iterable[str]) -> list[Stat]:
        """Return the named stats, or the defaults when ``names`` is empty.

        Raises
        ------
        ConfigError
            If a name is not registered; the message lists the valid names.
        """
        names = list(dict.fromkeys(names))
        if not names:
            return self.defaults()
        unknown = [name for name in names if name not in self._stats]
        if unknown:
            raise ConfigError(
                f"unknown stat {', '.join(map(repr, unknown))}; "
                f"valid stats: {', '.join(self.names())}")
        return [self._stats[name] for name in names]

    def load_builtin(self) -> None:
        """Register the stats of the modules in this package."""
        package = importlib.import_module("mpp_dask.stats")
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("_") or info.name == "registry":
                continue
            module = importlib.import_module(f"mpp_dask.stats.{info.name}")
            for stat in _with_source(_stats_of_module(module), "mpp_dask"):
                self.add(stat)

    def load_entry_points(self) -> None:
        """Register the stats of installed packages (entry point group ``mpp_dask.stats``)."""
        for entry_point in entry_points(group=ENTRY_POINT_GROUP):
            source = f"entry point {entry_point.name} ({entry_point.value})"
            try:
                loaded = entry_point.load()
                if isinstance(loaded, Stat):
                    stats = [loaded]
                elif isinstance(loaded, ModuleType):
                    stats = _stats_of_module(loaded)
                else:
                    stats = list(loaded)
            except Exception as exc:  # a broken plugin must not take the others down
                warnings.warn(f"stat plugin {source} failed to load and is skipped: {exc!r}",
                              PluginWarning, stacklevel=2)
                continue
            for stat in _with_source(stats, source):
                self.add(stat)

    def load_plugin_dir(self, directory: str | Path) -> list[Path]:
        """Register the stats of every ``.py`` file in ``directory``.

        Returns
        -------
        list of pathlib.Path
            The files that loaded.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise ConfigError(f"plugin folder {directory} does not exist or is not a folder")
        loaded = []
        for path in sorted(directory.glob("*.py")):
            try:
                module = load_plugin_module(path)
                stats = _stats_of_module(module)
            except Exception as exc:  # a broken plugin must not take the others down
                warnings.warn(f"stat plugin {path} failed to load and is skipped: {exc!r}",
                              PluginWarning, stacklevel=2)
                continue
            for stat in _with_source(stats, str(path)):
                self.add(stat)
            loaded.append(path)
        return loaded


def plugin_module_name(path: Path) -> str:
    """Return the module name under which a plugin file is imported."""
    return f"mpp_dask_plugin_{path.stem}"


def load_plugin_module(path: Path) -> ModuleType:
    """Import a plugin file as module :func:`plugin_module_name` (``sys.modules`` keeps it)."""
    name = plugin_module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def build_registry(plugin_dirs: Iterable[str | Path] = ()) -> Registry:
    """Return a registry with the built-in stats, entry-point plugins and plugin folders."""
    registry = Registry()
    registry.load_builtin()
    registry.load_entry_points()
    for directory in plugin_dirs:
        registry.load_plugin_dir(directory)
    return registry
