"""Settings: the packaged defaults, registered with dask config under ``mpp-dask``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.config
import yaml

NAMESPACE = "mpp-dask"
DEFAULTS_PATH = Path(__file__).with_name("configs") / "mpp-dask.yaml"


def _load_defaults() -> dict:
    with open(DEFAULTS_PATH, encoding="utf-8") as stream:
        return yaml.safe_load(stream)


DEFAULTS = _load_defaults()
dask.config.update_defaults(DEFAULTS)


def get(key: str, default: Any = None) -> Any:
    """Return the effective setting ``mpp-dask.<key>`` (dots separate levels)."""
    return dask.config.get(f"{NAMESPACE}.{key}", default=default)


def stat_params(stat_name: str) -> dict:
    """Return the configured parameters of a stat (empty when it has none)."""
    return dict(get(f"stats.{stat_name}", default={}) or {})
