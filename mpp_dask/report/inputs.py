"""Load what a report shows: a replay's manifest, its committed tables and its replay files.

Tables come from the output of ``mpp-dask run``. The unit names (``defs.csv``), the
match metadata (``game_meta.json``) and, when its stream was not written, the
``start_pos`` aspect file are read from the replay folder that the manifest records
as ``input_dir``. None of these is required. What cannot be read is listed in
``ReportInputs.notes`` and the report falls back to ids.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import posixpath
from dataclasses import dataclass, field

import fsspec
import pandas as pd

from mpp_dask.errors import ConfigError, MppDaskError
from mpp_dask.output.commit import (FAILURE_NAME, MANIFEST_NAME, MANIFESTS_FOLDER,
                                    read_manifest, validate_replay_id)
from mpp_dask.output.formats import PARQUET
from mpp_dask.reading.decode import decode_range
from mpp_dask.reading.discover import COMPRESSED_SUFFIXES

logger = logging.getLogger(__name__)

DEFS_FILE = "defs.csv"
GAME_META_FILE = "game_meta.json"


@dataclass
class ReportInputs:
    """Tables and replay files of one replay, and notes on what could not be read.

    ``tables`` maps a table name to its rows (without the ``replay_id`` column) for
    every requested table that the replay's run committed. ``absent`` maps every
    other requested table to the reason it is missing. ``unit_names`` maps a unit
    def id to a display name and is empty when ``defs.csv`` was not read.
    ``last_failure`` is the error of a run that failed after the run whose output
    the report shows, or None.
    """

    replay_id: str
    output_dir: str
    manifest: dict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    absent: dict[str, str] = field(default_factory=dict)
    unit_names: dict[int, str] = field(default_factory=dict)
    game_meta: dict | None = None
    start_pos: pd.DataFrame | None = None
    start_pos_source: str | None = None
    last_failure: str | None = None
    notes: list[str] = field(default_factory=list)


def load_inputs(output_urlpath: str, replay_id: str, columns: dict[str, list[str]],
                storage_options: dict | None = None) -> ReportInputs:
    """Read the manifest, the requested tables and the replay files of one replay.

    Parameters
    ----------
    output_urlpath : str
        Output folder of ``mpp-dask run`` (a path or an fsspec URL).
    replay_id : str
        The replay, as named in ``<output>/_manifests/<replay_id>/``.
    columns : dict of str to list of str
        Tables to read and the columns to read of each.
    storage_options : dict, optional
        fsspec options for the output folder and the replay folder.

    Returns
    -------
    ReportInputs

    Raises
    ------
    ConfigError
        If the output folder does not exist, the replay has no manifest in it, the
        replay's last run failed before any output was committed, or its output has
        no Parquet tables.
    MppDaskError
        If a table that the manifest lists cannot be read.
    """
    validate_replay_id(replay_id)
    fs, output_dir = fsspec.core.url_to_fs(output_urlpath, **(storage_options or {}))
    if not fs.isdir(output_dir):
        raise ConfigError(f"output folder {output_urlpath} not found or not a folder; pass "
                          "the folder given as -o to 'mpp-dask run'")

    manifest = _complete_manifest(fs, output_urlpath, output_dir, replay_id, storage_options)
    inputs = ReportInputs(replay_id, output_urlpath, manifest)
    inputs.last_failure = _last_failure(fs, output_dir, replay_id)
    if inputs.last_failure is not None:
        inputs.notes.append(f"The last run of this replay failed ({inputs.last_failure}), "
                            "so this page shows the output of the run before it.")
    _read_tables(inputs, fs, output_dir, columns)

    input_dir = manifest.get("input_dir")
    if input_dir is None:
        inputs.notes.append("The manifest records no replay folder, so unit and player "
                            "names are shown as ids.")
        return inputs
    replay_fs, replay_dir = fsspec.core.url_to_fs(input_dir, **(storage_options or {}))
    inputs.unit_names = _read_unit_names(replay_fs, replay_dir, inputs.notes)
    inputs.game_meta = _read_game_meta(replay_fs, replay_dir, inputs.notes)
    if "start_pos" in inputs.tables:
        inputs.start_pos = inputs.tables["start_pos"]
        inputs.start_pos_source = "the start_pos stream"
    else:
        inputs.start_pos = _decode_start_pos(manifest, storage_options, inputs.notes)
        if inputs.start_pos is not None:
            inputs.start_pos_source = "the replay's start_pos aspect file"
    return inputs


def _complete_manifest(fs: fsspec.AbstractFileSystem, output_urlpath: str, output_dir: str,
                       replay_id: str, storage_options: dict | None) -> dict:
    manifest = read_manifest(output_urlpath, replay_id, storage_options)
    if manifest is None:
        known = sorted(posixpath.basename(path.rstrip("/")) for path in
                       _ls_folders(fs, posixpath.join(output_dir, MANIFESTS_FOLDER)))
        listing = ", ".join(known) if known else "none"
        raise ConfigError(f"replay {replay_id!r} not found in {output_urlpath}: there is no "
                          f"readable {MANIFESTS_FOLDER}/{replay_id}/{MANIFEST_NAME}; "
                          f"replays with a manifest: {listing}")
    if manifest.get("status") != "complete":
        raise ConfigError(f"replay {replay_id} has no complete output in {output_urlpath}: "
                          f"its last run failed ({manifest.get('error', 'no error recorded')}); "
                          "run it again with 'mpp-dask run'")
    return manifest


def _last_failure(fs: fsspec.AbstractFileSystem, output_dir: str, replay_id: str) -> str | None:
    """Return the error of a failed run recorded beside a complete output, if any."""
    path = posixpath.join(output_dir, MANIFESTS_FOLDER, replay_id, FAILURE_NAME)
    try:
        record = json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"its record {path} is unreadable: {type(exc).__name__}: {exc}"
    if not isinstance(record, dict):
        return f"its record {path} is not a JSON object"
    return str(record.get("error") or "no error recorded")


def _ls_folders(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    try:
        return [entry["name"] for entry in fs.ls(path, detail=True)
                if entry["type"] == "directory"]
    except FileNotFoundError:
        return []


def _read_tables(inputs: ReportInputs, fs: fsspec.AbstractFileSystem, output_dir: str,
                 columns: dict[str, list[str]]) -> None:
    # Manifests written before the other formats existed have no "formats" key, and
    # their runs wrote Parquet only.
    output_formats = inputs.manifest.get("formats", [PARQUET])
    if PARQUET not in output_formats:
        # TODO: read the msgpack-gzip or jsonl-gzip files instead. Until then such an
        # output cannot be drawn, because the report reads only Parquet tables.
        raise ConfigError(
            f"replay {inputs.replay_id} in {inputs.output_dir} has no Parquet tables "
            f"(its run wrote only {', '.join(output_formats)}), and the report reads "
            "Parquet; run the replay again with '--output-format parquet' added to its "
            "other --output-format options")
    committed = set(inputs.manifest.get("tables", []))
    skipped = inputs.manifest.get("skipped", {})
    for table, table_columns in columns.items():
        if table not in committed:
            inputs.absent[table] = (f"skipped by the run: {skipped[table]}" if table in skipped
                                    else "not requested in the run")
            continue
        path = posixpath.join(output_dir, table, f"replay_id={inputs.replay_id}")
        try:
            inputs.tables[table] = pd.read_parquet(path, columns=table_columns, filesystem=fs)
        except (OSError, ValueError, KeyError) as exc:
            raise MppDaskError(f"reading table {table} of replay {inputs.replay_id} from "
                               f"{path} failed: {type(exc).__name__}: {exc}; run the replay "
                               "again with 'mpp-dask run --force-reprocess'") from exc


def _read_unit_names(fs: fsspec.AbstractFileSystem, replay_dir: str,
                     notes: list[str]) -> dict[int, str]:
    """Return ``{unit def id: "Human name (name)"}`` from ``defs.csv``, or {} with a note."""
    path = posixpath.join(replay_dir, DEFS_FILE)
    try:
        text = fs.cat_file(path).decode("utf-8")
        names = {}
        for row in csv.DictReader(io.StringIO(text)):
            human = (row.get("translatedHumanName") or "").strip()
            name = (row.get("name") or "").strip()
            names[int(row["id"])] = f"{human} ({name})" if human and name else human or name
    except (OSError, UnicodeDecodeError, KeyError, ValueError, csv.Error) as exc:
        logger.warning("unit names are shown as ids: %s is unreadable: %s", path, exc)
        notes.append(f"Unit types are shown as ids because {path} could not be read "
                     f"({type(exc).__name__}: {exc}).")
        return {}
    return names


def _read_game_meta(fs: fsspec.AbstractFileSystem, replay_dir: str,
                    notes: list[str]) -> dict | None:
    path = posixpath.join(replay_dir, GAME_META_FILE)
    try:
        meta = json.loads(fs.cat_file(path))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        logger.warning("ally teams are unknown: %s is unreadable: %s", path, exc)
        notes.append(f"Ally teams are unknown because {path} could not be read "
                     f"({type(exc).__name__}: {exc}).")
        return None
    if not isinstance(meta, dict):
        notes.append(f"Ally teams are unknown because {path} is not a JSON object.")
        return None
    return meta


def _decode_start_pos(manifest: dict, storage_options: dict | None,
                      notes: list[str]) -> pd.DataFrame | None:
    """Decode the replay's start_pos aspect file, which contains one short row per player."""
    file = manifest.get("fingerprint", {}).get("input_files", {}).get("start_pos")
    if file is None:
        notes.append("The replay has no start_pos aspect file, so player names come from "
                     "game_meta.json where it lists them.")
        return None

    path = file["path"]
    compression = next((name for suffix, name in COMPRESSED_SUFFIXES.items()
                        if path.endswith(suffix)), None)
    try:
        decoded = decode_range(path, aspect_name="start_pos", offset=0, stop=file["size"],
                               file_size=file["size"], storage_options=storage_options,
                               compression=compression)
    except (OSError, MppDaskError) as exc:
        logger.warning("player names from start_pos are unavailable: %s: %s", path, exc)
        notes.append(f"Player names come from game_meta.json where it lists them, because "
                     f"{path} could not be read ({type(exc).__name__}: {exc}).")
        return None
    if decoded.problems:
        notes.append(f"Player names come from game_meta.json where it lists them, because "
                     f"{path} has invalid rows: {decoded.problems[0].describe()}.")
        return None
    return decoded.frame
