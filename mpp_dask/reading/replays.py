"""Resolve the ``--input-dir`` of a run into replay folders and their ids."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import fsspec
from fsspec.implementations.local import LocalFileSystem

from mpp_dask.errors import ConfigError
from mpp_dask.reading.discover import ASPECT_SUFFIX, COMPRESSED_SUFFIXES

GLOB_CHARACTERS = "*?["


@dataclass(frozen=True)
class ReplaySource:
    """One replay folder and the id its output is written under."""

    replay_id: str
    urlpath: str


def _holds_aspect_files(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    suffixes = (ASPECT_SUFFIX, *(ASPECT_SUFFIX + s for s in COMPRESSED_SUFFIXES))
    return any(name.endswith(suffixes) for name in fs.ls(path, detail=False))


def _urlpath(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def _folder_name(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def _from_list_file(fs: fsspec.AbstractFileSystem, path: str,
                    storage_options: dict) -> list[ReplaySource]:
    """Read a text file of replay folders: one per line, optionally ``<folder>\\t<id>``."""
    sources = []
    base = posixpath.dirname(path)
    with fs.open(path, "r") as stream:
        for number, line in enumerate(stream, start=1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            folder, _, replay_id = line.partition("\t")
            folder = folder.strip()
            if "://" not in folder and not posixpath.isabs(folder):
                folder = posixpath.join(base, folder)
            folder_fs, folder_path = fsspec.core.url_to_fs(folder, **storage_options)
            if not folder_fs.isdir(folder_path):
                raise ConfigError(f"{path}, line {number}: replay folder {folder} does not exist")
            sources.append(ReplaySource(replay_id.strip() or _folder_name(folder_path),
                                        _urlpath(folder_fs, folder_path)))
    return sources


def resolve_replays(urlpath: str, replay_id: str | None = None,
                    storage_options: dict | None = None) -> list[ReplaySource]:
    """Return the replays named by ``urlpath``.

    ``urlpath`` is one of: a replay folder (it contains ``.mpk`` files); a parent folder
    whose sub-folders are replays; a glob matching replay folders; or a text file
    listing replay folders, one per line, optionally followed by a tab and the id.
    The replay id is the folder name unless given.

    Parameters
    ----------
    urlpath : str
        Path or fsspec URL.
    replay_id : str, optional
        Id of a single replay; only valid when ``urlpath`` is one replay folder.
    storage_options : dict, optional
        Passed to fsspec.

    Raises
    ------
    ConfigError
        If nothing matches, or ``replay_id`` is given for more than one replay.
    """
    storage_options = storage_options or {}
    fs, path = fsspec.core.url_to_fs(urlpath, **storage_options)

    if any(character in path for character in GLOB_CHARACTERS):
        folders = [p for p in sorted(fs.glob(path)) if fs.isdir(p)]
        sources = [ReplaySource(_folder_name(p), _urlpath(fs, p)) for p in folders]
    elif fs.isfile(path):
        sources = _from_list_file(fs, path, storage_options)
    elif fs.isdir(path):
        if _holds_aspect_files(fs, path):
            sources = [ReplaySource(replay_id or _folder_name(path), _urlpath(fs, path))]
        else:
            # Only sub-folders with aspect files are replays, so an output folder or
            # notes beside the replays are not mistaken for empty replays.
            folders = [p for p in sorted(fs.ls(path, detail=False)) if fs.isdir(p)
                       and not _folder_name(p).startswith((".", "_"))
                       and _holds_aspect_files(fs, p)]
            sources = [ReplaySource(_folder_name(p), _urlpath(fs, p)) for p in folders]
    else:
        raise ConfigError(f"input {urlpath} does not exist")

    if not sources:
        raise ConfigError(f"no replay folders found at {urlpath}: expected a folder of .mpk "
                          "aspect files, a folder of such folders, a glob or a list file")
    if replay_id is not None and len(sources) > 1:
        raise ConfigError(f"REPLAY_ID {replay_id!r} was given, but {urlpath} contains "
                          f"{len(sources)} replays; leave it out to use the folder names")
    if replay_id is not None:
        sources = [ReplaySource(replay_id, sources[0].urlpath)]

    ids = [source.replay_id for source in sources]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"replay ids are not unique: {', '.join(duplicates)}")
    return sources


def aspect_bytes(sources: list[ReplaySource], storage_options: dict | None, limit: int) -> int:
    """Return the total size of the aspect files of ``sources``, counted up to ``limit``.

    Listing stops at the first replay that brings the total to ``limit`` or more,
    so a large corpus costs a few listings. Folders that cannot be listed count
    as empty; the run reports them when it reads them.
    """
    suffixes = (ASPECT_SUFFIX, *(ASPECT_SUFFIX + s for s in COMPRESSED_SUFFIXES))
    total = 0
    for source in sources:
        try:
            fs, path = fsspec.core.url_to_fs(source.urlpath, **(storage_options or {}))
            listing = fs.ls(path, detail=True)
        except OSError:
            continue

        total += sum(info.get("size") or 0 for info in listing
                     if info.get("type") == "file" and info["name"].endswith(suffixes))
        if total >= limit:
            break
    return total
