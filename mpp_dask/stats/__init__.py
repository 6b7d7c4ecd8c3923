"""Stats: one module per stat, discovered by :mod:`mpp_dask.stats.registry`."""

from mpp_dask.stats.registry import Registry, Stat, build_registry

__all__ = ["Registry", "Stat", "build_registry"]
