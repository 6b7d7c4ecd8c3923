"""Find the aspect files of a replay folder."""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass, field

import fsspec
from fsspec.implementations.local import LocalFileSystem

from mpp_dask.errors import ConfigError
from mpp_dask.schema import ASPECTS

logger = logging.getLogger(__name__)

ASPECT_SUFFIX = ".mpk"
KNOWN_OTHER_FILES = ("defs.csv", "game_meta.json")


# Compressed aspect files cannot be cut into byte ranges: each is read whole, as
# one partition.
COMPRESSED_SUFFIXES = {".gz": "gzip", ".zst": "zstd"}


@dataclass(frozen=True)
class AspectFile:
    """One aspect file found in a replay folder.

    ``compression`` is the fsspec compression name of a ``.mpk.gz`` or ``.mpk.zst``
    file, or None for a plain ``.mpk`` file.
    """

    aspect_name: str
    urlpath: str
    size: int
    token: str
    compression: str | None = None


def _split_aspect_name(name: str) -> tuple[str, str | None] | None:
    """Return (aspect name, compression) of an aspect file name, or None for other files."""
    for suffix, compression in COMPRESSED_SUFFIXES.items():
        if name.endswith(ASPECT_SUFFIX + suffix):
            return name[: -len(ASPECT_SUFFIX + suffix)], compression
    if name.endswith(ASPECT_SUFFIX):
        return name[: -len(ASPECT_SUFFIX)], None
    return None


@dataclass
class ReplayFiles:
    """Files found in a replay folder, by kind."""

    urlpath: str
    aspects: dict[str, AspectFile] = field(default_factory=dict)
    unknown_aspect_files: list[str] = field(default_factory=list)
    other_files: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)

    @property
    def missing_aspects(self) -> list[str]:
        """Aspects of the schema without a file in this replay."""
        return [name for name in ASPECTS if name not in self.aspects]


def _file_token(info: dict) -> str:
    # Size and modification time identify the file version for task keys.
    modified = info.get("mtime") or info.get("LastModified") or info.get("created") or ""
    return f"{info.get('size')}-{modified}"


def discover_replay(urlpath: str, storage_options: dict | None = None) -> ReplayFiles:
    """List the aspect files of the replay folder ``urlpath``.

    Unknown ``.mpk`` files are reported with a warning and skipped; ``defs.csv`` and
    ``game_meta.json`` are noted; every other file is ignored with one log line.

    Raises
    ------
    ConfigError
        If ``urlpath`` is not a folder, or it contains two files of one aspect.
    """
    fs, path = fsspec.core.url_to_fs(urlpath, **(storage_options or {}))
    if not fs.isdir(path):
        raise ConfigError(f"replay folder {urlpath} does not exist or is not a folder")

    replay = ReplayFiles(urlpath=urlpath)
    for info in sorted(fs.ls(path, detail=True), key=lambda i: i["name"]):
        if info.get("type") != "file":
            continue
        name = posixpath.basename(info["name"].rstrip("/"))
        full = info["name"] if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(
            info["name"])
        split = _split_aspect_name(name)
        if split is not None:
            aspect_name, compression = split
            if aspect_name not in ASPECTS:
                replay.unknown_aspect_files.append(name)
            elif aspect_name in replay.aspects:
                raise ConfigError(f"{urlpath} contains two files of aspect {aspect_name}: "
                                  f"{posixpath.basename(replay.aspects[aspect_name].urlpath)} "
                                  f"and {name}; keep one")
            else:
                replay.aspects[aspect_name] = AspectFile(aspect_name, full, int(info["size"]),
                                                         _file_token(info), compression)
        elif name in KNOWN_OTHER_FILES:
            replay.other_files.append(name)
        else:
            replay.ignored_files.append(name)

    if replay.unknown_aspect_files:
        logger.warning("%s: ignoring unknown aspect files %s (known aspects: %s)", urlpath,
                       ", ".join(replay.unknown_aspect_files), ", ".join(ASPECTS))
    compressed = [f"{a.aspect_name} ({a.compression})" for a in replay.aspects.values()
                  if a.compression]
    if compressed:
        logger.info("%s: compressed aspect files are read whole, one partition each: %s",
                    urlpath, ", ".join(compressed))
    if replay.ignored_files:
        logger.info("%s: ignoring files that are not aspects: %s", urlpath,
                    ", ".join(replay.ignored_files))
    return replay
