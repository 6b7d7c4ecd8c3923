"""Settings: the packaged defaults, registered with dask config under ``mpp-dask``.

A setting can come from five layers, and a higher layer wins over the ones below it:

1. the packaged defaults, ``configs/mpp-dask.yaml``;
2. dask's own YAML files (``~/.config/dask/``, ``/etc/dask/``, ``$DASK_CONFIG``);
3. environment variables in dask's convention, e.g. ``DASK_MPP_DASK__READING__BLOCKSIZE``
   for ``mpp-dask.reading.blocksize`` (dask reads only ``DASK_``-prefixed variables);
4. a user file passed with ``--config`` (:func:`load_user_file`);
5. command-line options (:func:`apply_command_line`).

Dask merges layers 1-3 when it is imported. :func:`source_of` and
:func:`effective_settings` name the layer that supplied each value.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.config
import yaml

from mpp_dask.errors import ConfigError

NAMESPACE = "mpp-dask"
DEFAULTS_PATH = Path(__file__).with_name("configs") / "mpp-dask.yaml"
ENVIRONMENT_PREFIX = "DASK_"
# Dask's own setting of the scheduler to connect to, which DASK_SCHEDULER_ADDRESS also sets.
DASK_SCHEDULER_ADDRESS_KEY = "scheduler-address"

COMMAND_LINE = "command line"
NOT_SET = "not set"
SET_IN_CODE = "set in code (dask.config.set)"

# Sections whose keys are free-form: parameters of plugin stats, and fsspec options.
FREE_FORM_SECTIONS = (f"{NAMESPACE}.stats", f"{NAMESPACE}.storage-options")
# Variables that dask sets or reads for its own use, which are not settings.
_DASK_INTERNAL_VARIABLES = {"DASK_INTERNAL_INHERIT_CONFIG", "DASK_CONFIG"}
_MISSING = object()


def _load_defaults() -> dict:
    with open(DEFAULTS_PATH, encoding="utf-8") as stream:
        return yaml.safe_load(stream)


DEFAULTS = _load_defaults()
dask.config.update_defaults(DEFAULTS)


@dataclass(frozen=True)
class Setting:
    """One effective setting: its full dotted key, value and the layer it came from."""

    key: str
    value: Any
    source: str


@dataclass
class _UserLayers:
    """The layers this process added on top of what dask loaded at import."""

    user_file: Path | None = None
    user_settings: dict | None = None
    command_line: dict[str, str] | None = None


_layers = _UserLayers()


def get(key: str, default: Any = None) -> Any:
    """Return the effective setting ``mpp-dask.<key>`` (dots separate levels)."""
    return dask.config.get(f"{NAMESPACE}.{key}", default=default)


def stat_params(stat_name: str) -> dict:
    """Return the configured parameters of a stat (empty when it has none)."""
    return dict(get(f"stats.{stat_name}", default={}) or {})


def load_user_file(path: str | Path | None) -> None:
    """Merge a YAML file of settings over the defaults, dask's files and the environment.

    Raises
    ------
    ConfigError
        If the file cannot be read, is not valid YAML or does not contain a mapping.
    """
    if path is None:
        return
    path = Path(path).resolve()
    try:
        with open(path, encoding="utf-8") as stream:
            loaded = yaml.safe_load(stream) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must contain a mapping of settings, "
                          f"found {type(loaded).__name__}")
    dask.config.update(dask.config.config, loaded, priority="new")
    _layers.user_file = path
    _layers.user_settings = loaded


def apply_command_line(values: Mapping[str, Any]) -> None:
    """Set settings from command-line options; None means that an option was not given.

    Keys are full dotted keys such as ``mpp-dask.cluster.n-workers``.
    """
    given = {key: value for key, value in values.items() if value is not None}
    if not given:
        return
    dask.config.set(given)
    if _layers.command_line is None:
        _layers.command_line = {}
    for key in given:
        _layers.command_line[_normalized(key)] = key


def reset_layers() -> None:
    """Forget the user file and command-line layers and reload dask's config.

    Dask collects its YAML files and the environment again, so this also picks up
    environment variables changed since import.
    """
    _layers.user_file = None
    _layers.user_settings = None
    _layers.command_line = None
    dask.config.refresh()


def _normalized(key: str) -> str:
    # Dask treats '-' and '_' in keys alike.
    return key.replace("_", "-")


def _lookup(tree: Any, key: str) -> Any:
    """Return the value at dotted ``key`` of a nested mapping, or ``_MISSING``."""
    node = tree
    for part in key.split("."):
        if not isinstance(node, Mapping):
            return _MISSING
        part = dask.config.canonical_name(part, node)
        if part not in node:
            return _MISSING
        node = node[part]
    return node


def _environment_layers() -> Iterator[tuple[str, dict]]:
    """Yield each ``DASK_`` variable with the nested settings dask makes of it."""
    for name, text in sorted(os.environ.items()):
        if name.startswith(ENVIRONMENT_PREFIX) and name not in _DASK_INTERNAL_VARIABLES:
            yield name, dask.config.collect_env({name: text})


def _dask_file_layers() -> list[tuple[Path, dict]]:
    """Return dask's YAML config files and their contents, lowest priority first."""
    return list(dask.config.collect_yaml(dask.config.paths, return_paths=True))


def _set_on_command_line(key: str) -> bool:
    """Return whether a command-line option set ``key`` or a mapping that contains it."""
    normalized = _normalized(key)
    return any(normalized == given or normalized.startswith(f"{given}.")
               for given in _layers.command_line or {})


def _layered_source(key: str) -> tuple[str, Any]:
    """Return the highest layer that sets ``key`` and the value it sets."""
    if _set_on_command_line(key):
        return COMMAND_LINE, _lookup(dask.config.config, key)
    if _layers.user_settings is not None:
        value = _lookup(_layers.user_settings, key)
        if value is not _MISSING:
            return f"user file {_layers.user_file}", value
    for name, tree in reversed(list(_environment_layers())):
        value = _lookup(tree, key)
        if value is not _MISSING:
            return f"environment {name}", value
    for path, tree in reversed(_dask_file_layers()):
        value = _lookup(tree, key)
        if value is not _MISSING:
            return f"dask config file {path}", value
    value = _lookup(DEFAULTS, key)
    if value is not _MISSING:
        return f"default file {DEFAULTS_PATH}", value
    return NOT_SET, _MISSING


def source_of(key: str) -> str:
    """Return where the effective value of the full dotted ``key`` came from.

    The result is one of ``default file <path>``, ``dask config file <path>``,
    ``environment <variable>``, ``user file <path>``, ``command line``, ``not set``,
    or ``set in code (dask.config.set)`` when no layer explains the effective value.
    """
    effective = _lookup(dask.config.config, key)
    source, layer_value = _layered_source(key)
    if effective is _MISSING:
        return NOT_SET
    if source == NOT_SET or layer_value != effective:
        return SET_IN_CODE
    return source


def _leaves(tree: Mapping, prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        full_key = f"{prefix}.{key}"
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, full_key)
        else:
            yield full_key, value


def effective_settings() -> list[Setting]:
    """Return every ``mpp-dask`` setting, and dask's ``scheduler-address``, with its source.

    Keys are spelled and ordered as in the default file; keys that it lacks follow.
    """
    default_keys = {_normalized(key): key for key, _ in _leaves(DEFAULTS[NAMESPACE], NAMESPACE)}
    order = {key: index for index, key in enumerate(default_keys)}
    leaves = sorted(_leaves(dask.config.get(NAMESPACE), NAMESPACE),
                    key=lambda leaf: order.get(_normalized(leaf[0]), len(order)))
    rows = [Setting(default_keys.get(_normalized(key), key), value, source_of(key))
            for key, value in leaves]
    address = dask.config.get(DASK_SCHEDULER_ADDRESS_KEY, default=None)
    rows.append(Setting(DASK_SCHEDULER_ADDRESS_KEY, address,
                        source_of(DASK_SCHEDULER_ADDRESS_KEY)))
    return rows


def unknown_keys() -> list[str]:
    """Return effective ``mpp-dask`` keys that no default declares, such as misspellings.

    Keys in ``FREE_FORM_SECTIONS`` are not checked, because plugin stats take
    parameters that the default file does not list, and fsspec options vary by
    file system.
    """
    known = {_normalized(key) for key, _ in _leaves(DEFAULTS[NAMESPACE], NAMESPACE)}
    free_form = tuple(f"{_normalized(section)}." for section in FREE_FORM_SECTIONS)
    return [key for key, _ in _leaves(dask.config.get(NAMESPACE), NAMESPACE)
            if _normalized(key) not in known and not _normalized(key).startswith(free_form)]


def misnamed_environment_variables() -> list[str]:
    """Return ``MPP_DASK...`` variables, which dask ignores because they lack ``DASK_``."""
    return sorted(name for name in os.environ if name.upper().startswith("MPP_DASK"))
