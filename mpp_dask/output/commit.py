"""Stage a replay's tables, then move them into place only when all succeeded.

Tables are written under ``<output-dir>/.staging/<replay_id>-<run token>/<table>/``.
Only after every table of the replay was written does :func:`commit_replay` move
each one to ``<output-dir>/<table>/replay_id=<replay_id>/`` and write the replay's
manifest. A failed run removes its staging folder and leaves the previous output
of the replay untouched.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import uuid
from dataclasses import dataclass

import fsspec

from mpp_dask.errors import ConfigError, OutputError

logger = logging.getLogger(__name__)

STAGING_FOLDER = ".staging"
MANIFEST_NAME = "_manifest.json"
MANIFESTS_FOLDER = "_manifests"
ERRORS_TABLE = "_errors"
FAILURE_NAME = "_last_failure.json"

_INVALID_ID = re.compile(r"[/\\\x00]")


def validate_replay_id(replay_id: str) -> str:
    """Return ``replay_id`` if it can name a folder safely.

    Raises
    ------
    ConfigError
        If it is empty, contains a path separator or is ``.`` or ``..``.
    """
    if not replay_id or replay_id.strip() != replay_id:
        raise ConfigError(f"invalid replay id {replay_id!r}: it must be a non-empty name "
                          "without leading or trailing spaces")
    if _INVALID_ID.search(replay_id) or replay_id in (".", "..") or ".." in replay_id:
        raise ConfigError(f"invalid replay id {replay_id!r}: it may not contain path "
                          "separators or '..'")
    if "=" in replay_id:
        raise ConfigError(f"invalid replay id {replay_id!r}: '=' would break the "
                          "replay_id=<id> folder names")
    return replay_id


@dataclass
class Staging:
    """Staging folder of one replay's tables, written before the commit."""

    fs: fsspec.AbstractFileSystem
    output_dir: str
    replay_id: str
    path: str

    @classmethod
    def create(cls, output_urlpath: str, replay_id: str,
               storage_options: dict | None = None) -> Staging:
        """Return a fresh staging folder for ``replay_id`` under ``output_urlpath``."""
        fs, output_dir = fsspec.core.url_to_fs(output_urlpath, **(storage_options or {}))
        token = uuid.uuid4().hex[:12]
        path = posixpath.join(output_dir, STAGING_FOLDER, f"{replay_id}-{token}")
        fs.makedirs(path, exist_ok=True)
        return cls(fs, output_dir, replay_id, path)

    def table_path(self, table: str) -> str:
        """Return the staged folder of ``table``."""
        return posixpath.join(self.path, table, f"replay_id={self.replay_id}")

    def table_urlpath(self, table: str) -> str:
        """Return the staged folder of ``table`` as a URL that workers can open."""
        return self.fs.unstrip_protocol(self.table_path(table))

    def final_path(self, table: str) -> str:
        """Return the committed folder of ``table``."""
        return posixpath.join(self.output_dir, table, f"replay_id={self.replay_id}")

    def discard(self) -> None:
        """Remove the staging folder and everything in it."""
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)
        self._remove_empty_staging_root()

    def _remove_empty_staging_root(self) -> None:
        root = posixpath.join(self.output_dir, STAGING_FOLDER)
        try:
            if self.fs.exists(root) and not self.fs.ls(root):
                self.fs.rmdir(root)
        except OSError:
            pass  # another run is staging in it at the same time

    def commit(self, tables: list[str], manifest: dict) -> None:
        """Move every staged table into place, then write the manifest.

        A table already committed for this replay is replaced. Tables of the previous
        run of the replay that this run did not write (other stats, an old ``_errors``
        table) are removed, so the replay's output is replaced as a whole.
        The manifest is written last, so a replay whose manifest has status ``complete`` has
        all its tables.

        Raises
        ------
        OutputError
            If a table cannot be moved.
        """
        manifest_path = self.manifest_path()
        previous_tables = self._previous_tables() | {ERRORS_TABLE}
        try:
            for table in sorted(previous_tables - set(tables)):
                stale = self.final_path(table)
                if self.fs.exists(stale):
                    self.fs.rm(stale, recursive=True)
            if self.fs.exists(manifest_path):
                # The previous manifest no longer describes the tables being replaced.
                self.fs.rm(manifest_path)
            for table in tables:
                self._move_table(table)
            self.fs.makedirs(posixpath.dirname(manifest_path), exist_ok=True)
            failure_path = posixpath.join(posixpath.dirname(manifest_path), FAILURE_NAME)
            if self.fs.exists(failure_path):
                self.fs.rm(failure_path)
            with self.fs.open(manifest_path, "w") as stream:
                json.dump(manifest, stream, indent=2, sort_keys=False, default=str)
        except OSError as exc:
            raise OutputError(f"committing replay {self.replay_id} to {self.output_dir} "
                              f"failed: {exc}") from exc
        finally:
            self.discard()

    def _previous_tables(self) -> set[str]:
        try:
            with self.fs.open(self.manifest_path(), "r") as stream:
                return set(json.load(stream).get("tables", []))
        except (OSError, ValueError):
            return set()

    def manifest_path(self) -> str:
        """Return where the replay's manifest is committed."""
        return posixpath.join(self.output_dir, MANIFESTS_FOLDER, self.replay_id, MANIFEST_NAME)

    def _move_table(self, table: str) -> None:
        staged = self.table_path(table)
        final = self.final_path(table)
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        if self.fs.exists(final):
            retired = f"{staged}.previous"
            self.fs.mv(final, retired, recursive=True)
        self.fs.mv(staged, final, recursive=True)
        logger.debug("committed %s", final)


def _manifest_location(output_urlpath: str, replay_id: str,
                       storage_options: dict | None) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, output_dir = fsspec.core.url_to_fs(output_urlpath, **(storage_options or {}))
    return fs, posixpath.join(output_dir, MANIFESTS_FOLDER, replay_id)


def read_manifest(output_urlpath: str, replay_id: str,
                  storage_options: dict | None = None) -> dict | None:
    """Return the committed manifest of a replay, or None if there is none or it is unreadable."""
    fs, folder = _manifest_location(output_urlpath, replay_id, storage_options)
    path = posixpath.join(folder, MANIFEST_NAME)
    try:
        with fs.open(path, "r") as stream:
            return json.load(stream)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("manifest %s is unreadable (%s); the replay will be computed again",
                       path, exc)
        return None


def write_failure_manifest(output_urlpath: str, replay_id: str, manifest: dict,
                           storage_options: dict | None = None) -> str:
    """Record a failed run of a replay and return the path of the record.

    The failure becomes the replay's manifest unless a complete output of the replay
    exists. In that case it is written beside it as ``_last_failure.json``, and the
    good output and its manifest stay as they are.
    """
    fs, folder = _manifest_location(output_urlpath, replay_id, storage_options)
    previous = read_manifest(output_urlpath, replay_id, storage_options)
    name = FAILURE_NAME if previous and previous.get("status") == "complete" else MANIFEST_NAME
    path = posixpath.join(folder, name)
    fs.makedirs(folder, exist_ok=True)
    with fs.open(path, "w") as stream:
        json.dump(manifest, stream, indent=2, default=str)
    return path
