"""Helpers shared by the tests: write aspect files and read them back through Dask."""

from __future__ import annotations

from pathlib import Path

import dask
import msgpack
import pandas as pd

from mpp_dask.reading.frames import read_aspect, tally_from_frame
from mpp_dask.schema import ASPECTS

EXAMPLE_REPLAY = Path(__file__).resolve().parents[2] / "shared" / "data" / "replays" / "example_8v8"


def pack_rows(rows: list) -> bytes:
    """Return the raw bytes of an aspect file holding ``rows`` (lists of raw values)."""
    packer = msgpack.Packer(use_bin_type=True)
    return b"".join(packer.pack(row) for row in rows)


def write_aspect(folder: Path, aspect_name: str, rows: list) -> Path:
    """Write ``rows`` as ``<folder>/<aspect_name>.mpk`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{aspect_name}.mpk"
    path.write_bytes(pack_rows(rows))
    return path


def read_frames(folder: Path, blocksize: int = 1 << 26, skip_on_error: bool = False) -> dict:
    """Return the lazy clean frames (Dask DataFrames) of every aspect file in ``folder``."""
    frames = {}
    for name in ASPECTS:
        path = folder / f"{name}.mpk"
        if path.exists():
            frames[name] = read_aspect(str(path), name, file_size=path.stat().st_size,
                                       blocksize=blocksize, skip_on_error=skip_on_error).frame
    return frames


def decode_file(path: Path, aspect_name: str, blocksize: int = 1 << 26,
                skip_on_error: bool = False):
    """Decode one file through the byte-range partitions; return (pandas frame, tally)."""
    aspect_frame = read_aspect(str(path), aspect_name, file_size=path.stat().st_size,
                               blocksize=blocksize, skip_on_error=skip_on_error)
    frame, tally = dask.compute(aspect_frame.frame, aspect_frame.tally, scheduler="sync")
    return frame.reset_index(drop=True), tally_from_frame(tally)


def clean_frame(aspect_name: str, records: list[dict]) -> pd.DataFrame:
    """Return a clean pandas frame of ``aspect_name`` with the schema's dtypes."""
    aspect = ASPECTS[aspect_name]
    frame = pd.DataFrame(records, columns=aspect.columns)
    return frame.astype(aspect.dtypes)


def team_stats_row(frame: int, team: int, damage_received: int) -> list:
    """Return a team_stats row with every counter 0 but damage_received (raw, x10)."""
    row = [frame, team] + [0] * 37
    row[13] = damage_received
    return row


def tiny_team_stats_replay(folder: Path, teams: int = 2) -> Path:
    """Write a replay of only team_stats: frames 300, 600 and 900 for each team."""
    rows = [team_stats_row(300 * (i + 1), team, 10 * (i + 1) * (team + 1))
            for i in range(3) for team in range(teams)]
    write_aspect(folder, "team_stats", rows)
    return folder
