"""Tests of aggression_by_unit."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pandas as pd
import pytest
from helpers import read_frames, write_aspect

from mpp_dask.errors import ConfigError
from mpp_dask.settings import DEFAULTS, NAMESPACE
from mpp_dask.stats.aggression_by_unit import AGGRESSION_DTYPES, STATS

STAT = STATS[0]

# Whole file, then partitions of many rows, a few rows, and at most one row.
BLOCKSIZES = [1 << 26, 1024, 64, 7]


def sample(frame: int, unit: int, unit_def: int, team: int, x: int, z: int) -> list:
    """Return a raw unit_positions row; y, velocities and heading are unused."""
    return [frame, unit, unit_def, team, x, 999, z, 0, 0, 0, 0]


POSITION_ROWS = [
    sample(0, 1, 100, 1, 0, 0),
    sample(0, 4, 400, 1, 0, 0),
    sample(15, 4, 400, 2, 0, 6),  # unit 4 changed team: the first sample's team counts
    sample(30, 1, 100, 1, 3, 4),
    sample(30, 2, 200, 2, 100, 100),  # the only sample of unit 2
    sample(30, 3, 300, 1, 10, 0),  # unit 3: two samples in its first frame, this is first
    sample(30, 3, 300, 1, 20, 0),
    sample(60, 1, 100, 1, 6, 8),
    sample(90, 3, 300, 1, 10, 30),
]


def aggression_table(rows: list[tuple]) -> pd.DataFrame:
    """Return an expected table from literal rows in output column order."""
    columns = {name: [row[index] for row in rows]
               for index, name in enumerate(AGGRESSION_DTYPES)}
    return pd.DataFrame({name: pd.Series(values, dtype=AGGRESSION_DTYPES[name])
                         for name, values in columns.items()})


def run_stat(folder: Path, blocksize: int, params: dict | None = None) -> pd.DataFrame:
    frames = read_frames(folder, blocksize=blocksize)
    result = STAT.build(frames, {**STAT.params, **(params or {})})
    return result.compute(scheduler="sync").reset_index(drop=True)


@pytest.fixture
def crafted_replay(tmp_path: Path) -> Path:
    write_aspect(tmp_path, "unit_positions", POSITION_ROWS)
    return tmp_path


@pytest.mark.parametrize("blocksize", BLOCKSIZES)
def test_crafted(crafted_replay: Path, blocksize: int):
    result = run_stat(crafted_replay, blocksize)

    # impulse = distance from the first sample / (seconds since it + 0.1)
    expected = aggression_table([
        (3, 1, 300, 3, 0.0 + 10 / (0 + 0.1) + 30 / (2 + 0.1)),
        (4, 1, 400, 2, 0.0 + 6 / (0.5 + 0.1)),
        (1, 1, 100, 3, 0.0 + 5 / (1 + 0.1) + 10 / (2 + 0.1)),
        (2, 2, 200, 1, 0.0),
    ])
    # The expected sums are added in another order than pandas adds them, so the last
    # bit may differ.
    pd.testing.assert_frame_equal(result, expected, check_dtype=True, check_exact=False,
                                  rtol=1e-14)


def test_crafted_same_for_any_blocksize(crafted_replay: Path):
    whole = run_stat(crafted_replay, 1 << 26)
    for blocksize in BLOCKSIZES[1:]:
        pd.testing.assert_frame_equal(run_stat(crafted_replay, blocksize), whole,
                                      check_dtype=True)


def test_time_offset_param(crafted_replay: Path):
    result = run_stat(crafted_replay, 64, {"time_offset_seconds": 1.0})

    scores = dict(zip(result["unit_id"], result["aggression_score"]))
    assert scores[4] == pytest.approx(6 / 1.5, rel=1e-14)
    assert scores[3] == pytest.approx(10 / 1.0 + 30 / 3.0, rel=1e-14)


def test_empty_positions(tmp_path: Path):
    write_aspect(tmp_path, "unit_positions", [])
    result = run_stat(tmp_path, 1 << 26)

    assert len(result) == 0
    assert result.dtypes.to_dict() == AGGRESSION_DTYPES


def test_params_match_packaged_settings():
    assert DEFAULTS[NAMESPACE]["stats"][STAT.name] == STAT.params


@pytest.mark.parametrize("offset", [0, -0.1, "0.1", None, True])
def test_invalid_time_offset(crafted_replay: Path, offset: object):
    with pytest.raises(ConfigError, match="time_offset_seconds must be a positive number"):
        STAT.build(read_frames(crafted_replay), {"time_offset_seconds": offset})


# --- The real example replay ---------------------------------------------------------

# The first 1,500 frames of real unit_positions rows: 39 rows of 16 units, 6 of them
# with several samples, few enough to read at a 7-byte blocksize in seconds.
EXCERPT_FRAMES = (0, 1500)


def write_example_excerpt(replay: Path, folder: Path, aspect: str) -> int:
    """Copy the rows of a real aspect file inside EXCERPT_FRAMES; return how many."""
    first_frame, stop_frame = EXCERPT_FRAMES
    with open(replay / f"{aspect}.mpk", "rb") as stream:
        rows = [row for row in msgpack.Unpacker(stream, raw=False)
                if first_frame <= row[0] < stop_frame]
    write_aspect(folder, aspect, rows)
    return len(rows)


def reference_aggression(positions: pd.DataFrame) -> pd.DataFrame:
    """Compute the definition directly: find each unit's first sample, then add up."""
    first_rows = positions.loc[positions.groupby("unit_id")["frame"].idxmin()]
    first = first_rows.set_index("unit_id")
    joined = positions.merge(first[["frame", "x", "z"]], how="left", left_on="unit_id",
                             right_index=True, suffixes=("", "_first"))
    seconds = (joined["frame"] - joined["frame_first"]) / 30
    distance = np.sqrt((joined["x"] - joined["x_first"]) ** 2
                       + (joined["z"] - joined["z_first"]) ** 2)
    joined["impulse"] = distance / (seconds + 0.1)
    table = pd.DataFrame({
        "team_id": first["team_id"],
        "unit_def_id": first["unit_def_id"],
        "samples": joined.groupby("unit_id").size(),
        "aggression_score": joined.groupby("unit_id")["impulse"].sum(),
    }).reset_index()
    return table.sort_values(["aggression_score", "unit_id"], ascending=[False, True])


@pytest.fixture(scope="module")
def example_result(example_replay: Path):
    """Return a function that computes the stat on the real example once per blocksize."""
    cache: dict[int, pd.DataFrame] = {}

    def compute(blocksize: int) -> pd.DataFrame:
        if blocksize not in cache:
            cache[blocksize] = run_stat(example_replay, blocksize)
        return cache[blocksize].copy()

    return compute


@pytest.mark.example
def test_example_matches_reference(example_replay: Path, example_result):
    positions = read_frames(example_replay)["unit_positions"].compute(scheduler="sync")
    reference = reference_aggression(positions.reset_index(drop=True))

    result = example_result(1 << 16)
    assert len(result) == positions["unit_id"].nunique()
    # The reference may add a unit's impulses in another order than the stat does.
    pd.testing.assert_frame_equal(result, reference.reset_index(drop=True),
                                  check_dtype=True, check_exact=False, rtol=1e-12)


@pytest.mark.example
def test_example_same_for_any_blocksize(example_result):
    whole = example_result(1 << 26)
    for blocksize in (1 << 18, 1 << 16):
        pd.testing.assert_frame_equal(example_result(blocksize), whole,
                                      check_dtype=True)


@pytest.mark.example
def test_example_excerpt_same_for_all_blocksizes(example_replay: Path, tmp_path: Path):
    assert write_example_excerpt(example_replay, tmp_path, "unit_positions") > 30
    whole = run_stat(tmp_path, BLOCKSIZES[0])
    assert len(whole) > 1
    for blocksize in BLOCKSIZES[1:]:
        pd.testing.assert_frame_equal(run_stat(tmp_path, blocksize), whole, check_dtype=True)
