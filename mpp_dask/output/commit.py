"""Stage a replay's tables, then move them into place only when all succeeded.

Tables are written under ``<output-dir>/.staging/<replay_id>-<run token>/``, in the
same layout as the output. Only after every table of the replay was written in every
output format does :meth:`Staging.commit` move each one into place and write the
replay's manifest. Parquet tables go to ``<output-dir>/<table>/replay_id=<replay_id>/``
and the other formats to ``<output-dir>/_formats/<format>/<table>/replay_id=<replay_id>/``.
A failed run removes its staging folder and leaves the previous output of the replay
untouched.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import fsspec

from mpp_dask.errors import ConfigError, OutputError
from mpp_dask.output.formats import OUTPUT_FORMATS, PARQUET, format_folder

logger = logging.getLogger(__name__)

STAGING_FOLDER = ".staging"
MANIFEST_NAME = "_manifest.json"
MANIFESTS_FOLDER = "_manifests"
ERRORS_TABLE = "_errors"
FAILURE_NAME = "_last_failure.json"
CHUNKS_FOLDER = "_chunks"

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

    def table_path(self, table: str, output_format: str = PARQUET) -> str:
        """Return the staged folder of ``table`` in ``output_format``."""
        return posixpath.join(self.path, self._relative_folder(table, output_format))

    def table_urlpath(self, table: str, output_format: str = PARQUET) -> str:
        """Return the staged folder of ``table`` as a URL that workers can open."""
        return self.fs.unstrip_protocol(self.table_path(table, output_format))

    def chunk_urlpath(self, table: str) -> str:
        """Return the staged folder of the chunks that are joined into the files of ``table``."""
        return self.fs.unstrip_protocol(posixpath.join(self.path, CHUNKS_FOLDER, table))

    def final_path(self, table: str, output_format: str = PARQUET) -> str:
        """Return the committed folder of ``table`` in ``output_format``."""
        return posixpath.join(self.output_dir, self._relative_folder(table, output_format))

    def _relative_folder(self, table: str, output_format: str) -> str:
        return posixpath.join(format_folder(output_format), table, f"replay_id={self.replay_id}")

    def staged_files(self, tables: list[str], output_formats: Sequence[str]) -> dict:
        """Return the staged files of each format and table, as paths in the output folder."""
        files: dict[str, dict[str, list[str]]] = {}
        for output_format in output_formats:
            files[output_format] = {}
            for table in tables:
                folder = self.table_path(table, output_format)
                found = self.fs.find(folder) if self.fs.exists(folder) else []
                files[output_format][table] = sorted(posixpath.relpath(path, self.path)
                                                     for path in found)
        return files

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

    def commit(self, tables: list[str], manifest: dict,
               output_formats: Sequence[str] = (PARQUET,)) -> None:
        """Move every staged table in every format into place, then write the manifest.

        A table already committed for this replay is replaced. Tables and formats of
        the previous run of the replay that this run did not write (other stats, other
        formats, an old ``_errors`` table) are removed, so the replay's output is
        replaced as a whole. The manifest is written last, so a replay whose manifest
        has status ``complete`` has all its tables.

        Raises
        ------
        OutputError
            If a table cannot be moved.
        """
        manifest_path = self.manifest_path()
        written = {(output_format, table) for output_format in output_formats
                   for table in tables}
        previous = self._previous_outputs()
        try:
            for output_format, table in sorted(previous - written):
                stale = self.final_path(table, output_format)
                if self.fs.exists(stale):
                    self.fs.rm(stale, recursive=True)
            if self.fs.exists(manifest_path):
                # The previous manifest no longer describes the tables being replaced.
                self.fs.rm(manifest_path)
            for output_format, table in sorted(written):
                self._move_table(table, output_format)
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

    def _previous_outputs(self) -> set[tuple[str, str]]:
        """Return the (format, table) pairs that may be committed for this replay.

        These are the tables and formats of the previous manifest, whose formats
        default to Parquet, and the ``_errors`` table in every format, which the
        manifest does not list.
        """
        try:
            with self.fs.open(self.manifest_path(), "r") as stream:
                previous = json.load(stream)
            tables = set(previous.get("tables", []))
            output_formats = set(previous.get("formats", [PARQUET]))
        except (OSError, ValueError):
            tables, output_formats = set(), set()
        return ({(output_format, table) for output_format in output_formats for table in tables}
                | {(output_format, ERRORS_TABLE) for output_format in OUTPUT_FORMATS})

    def manifest_path(self) -> str:
        """Return where the replay's manifest is committed."""
        return posixpath.join(self.output_dir, MANIFESTS_FOLDER, self.replay_id, MANIFEST_NAME)

    def _move_table(self, table: str, output_format: str) -> None:
        staged = self.table_path(table, output_format)
        final = self.final_path(table, output_format)
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
        # The run and the report both read manifests, so the message names no action.
        logger.warning("manifest %s is unreadable (%s); the replay is treated as having "
                       "no output", path, exc)
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
