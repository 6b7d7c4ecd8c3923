"""Check the reader on the real example replay at several blocksizes, and its ÷10 rule."""

from __future__ import annotations

import json

import msgpack
import pandas.testing as pdt
import pytest

from helpers import decode_file
from mpp_dask.schema import ASPECTS
from test_reading_reference import reference_decode

pytestmark = pytest.mark.example

# Small enough for the Python reference decode to take well under a second.
REFERENCE_ASPECTS = ["map_envir_econ", "start_pos", "team_stats", "unit_events"]


@pytest.mark.parametrize("aspect_name", sorted(ASPECTS))
def test_example_blocksizes_agree(example_replay, aspect_name):
    path = example_replay / f"{aspect_name}.mpk"
    if not path.exists():
        pytest.skip(f"the example replay has no {path.name}")

    whole, whole_tally = decode_file(path, aspect_name)
    split, split_tally = decode_file(path, aspect_name, blocksize=100_000)

    pdt.assert_frame_equal(split, whole, check_exact=True)
    assert whole_tally.problems == []
    assert split_tally.problems == []
    assert split_tally.rows_kept == whole_tally.rows_kept
    if aspect_name in REFERENCE_ASPECTS:
        pdt.assert_frame_equal(whole, reference_decode(path.read_bytes(), aspect_name),
                               check_exact=True)


def test_example_float_counters(example_replay):
    # The exporter wrote 886 cells of energy_used and energy_produced as
    # whole-number floats, which must decode like ints.
    path = example_replay / "team_stats.mpk"
    fields = [fld.raw_name for fld in ASPECTS["team_stats"].fields]
    positions = [fields.index("energy_used"), fields.index("energy_produced")]
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(path.read_bytes())
    float_cells = sum(isinstance(row[position], float)
                      for row in unpacker for position in positions)

    frame, tally = decode_file(path, "team_stats", blocksize=50_000)

    assert float_cells == 886
    assert tally.problems == []
    assert frame["energy_used"].notna().all()


def test_example_damage_taken_award(example_replay):
    # The award's value is the final damage_received of its team, a check of ÷10.
    meta = json.loads((example_replay / "game_meta.json").read_text())
    award = meta["awards"]["mostDamageTaken"]

    frame, _ = decode_file(example_replay / "team_stats.mpk", "team_stats")

    team = frame[frame["team_id"] == award["teamId"]]
    final = team.loc[team["frame"].idxmax(), "damage_received"]
    assert final == pytest.approx(award["value"], rel=1e-6)
