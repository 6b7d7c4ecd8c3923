"""The ``mpp-dask run`` command: option checks, dry run, skipping bad rows, summaries."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import dask.config
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from helpers import pack_rows, write_aspect
from mpp_dask.cli.main import cli

CLUSTER = ["--n-workers", "1", "--dashboard-address", "127.0.0.1:0"]


@pytest.fixture(autouse=True)
def restore_dask_config():
    """Undo settings that a --config file loads into the process-wide dask config."""
    saved = copy.deepcopy(dask.config.config)
    yield
    dask.config.config.clear()
    dask.config.config.update(saved)


def _team_stats_rows(teams: int = 2) -> list:
    return [[300 * (i + 1), team] + [10 * (i + 1)] * 37 for i in range(2) for team in range(teams)]


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_unknown_stat_fails_before_work(tmp_path):
    write_aspect(tmp_path / "in", "team_stats", _team_stats_rows())
    result = _invoke("run", "r", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                     "-s", "no_such_stat", *CLUSTER)
    assert result.exit_code == 2
    assert "unknown stat 'no_such_stat'" in result.output
    assert "resources_by_player" in result.output
    assert not (tmp_path / "out").exists()


def test_output_inside_input_rejected(tmp_path):
    write_aspect(tmp_path / "in", "team_stats", _team_stats_rows())
    result = _invoke("run", "r", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "in" / "out"))
    assert result.exit_code == 2
    assert "is inside the input folder" in result.output


def test_unknown_stream_rejected(tmp_path):
    write_aspect(tmp_path / "in", "team_stats", _team_stats_rows())
    result = _invoke("run", "r", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                     "-u", "team_stat")
    assert result.exit_code == 2
    assert "unknown stream 'team_stat'" in result.output


def test_invalid_blocksize_rejected(tmp_path):
    write_aspect(tmp_path / "in", "team_stats", _team_stats_rows())
    result = _invoke("run", "r", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                     "--blocksize", "0")
    assert result.exit_code == 2
    assert "invalid --blocksize" in result.output


def test_dry_run_reads_no_data(tmp_path):
    replay = tmp_path / "in"
    path = write_aspect(replay, "team_stats", _team_stats_rows())
    (replay / "mystery.mpk").write_bytes(b"\xc1" * 10)
    size = path.stat().st_size
    path.write_bytes(b"\xc1" * size)  # invalid bytes: a real decode would fail

    result = _invoke("run", "r", "-i", str(replay), "-o", str(tmp_path / "out"),
                     "--dry-run", "--blocksize", "100")
    assert result.exit_code == 0, result.output
    assert f"team_stats: {size} bytes, {-(-size // 100)} partitions" in result.output
    assert "unknown aspect files (ignored): mystery.mpk" in result.output
    assert "would skip damage_by_unit_def: missing aspect damage_log" in result.output
    stats_line = next(line for line in result.output.splitlines()
                      if line.startswith("  stats: "))
    assert "resources_by_player" in stats_line
    assert "damage_by_unit_def" not in stats_line
    assert not (tmp_path / "out").exists()


def test_skip_on_error_writes_errors_table(tmp_path):
    replay = tmp_path / "in"
    rows = _team_stats_rows()
    bad_row = [600, 1, "oops"] + [0] * 36
    data = pack_rows(rows[:2]) + pack_rows([bad_row]) + b"\xc1\xc1" + pack_rows(rows[2:])
    replay.mkdir()
    (replay / "team_stats.mpk").write_bytes(data)
    output = tmp_path / "out"

    failed = _invoke("run", "r", "-i", str(replay), "-o", str(output), "-u", "team_stats",
                     "-s", "resources_by_player", *CLUSTER)
    assert failed.exit_code == 4
    assert "field metal_used: wrong type" in failed.output
    assert not (output / "team_stats").exists()

    result = _invoke("run", "r", "-i", str(replay), "-o", str(output), "-u", "team_stats",
                     "-s", "resources_by_player", "--skip-on-error", *CLUSTER)
    assert result.exit_code == 0, result.output
    assert "team_stats: 4 rows (2 invalid rows dropped)" in result.output
    assert "1 replay: 1 done" in result.output
    kept = pd.read_parquet(output / "team_stats")
    assert kept[["frame", "team_id"]].values.tolist() == [[300, 0], [300, 1], [600, 0], [600, 1]]

    errors = pq.read_table(output / "_errors").to_pandas()
    assert errors["reason"].tolist() == ["wrong type", "invalid MessagePack"]
    assert errors["row"].tolist()[0] == 2
    manifest = json.loads((output / "_manifests" / "r" / "_manifest.json").read_text())
    assert manifest["dropped_rows"] == {"team_stats": {"wrong type": 1,
                                                       "invalid MessagePack": 1}}


def test_corpus_summary_lists_failures(tmp_path):
    corpus = tmp_path / "corpus"
    for name in ("a", "b"):
        write_aspect(corpus / name, "team_stats", _team_stats_rows())
    (corpus / "broken").mkdir()
    (corpus / "broken" / "team_stats.mpk").write_bytes(b"\x93\x01")

    result = _invoke("run", "-i", str(corpus), "-o", str(tmp_path / "out"), "-u", "team_stats",
                     "-s", "resources_by_player", *CLUSTER)
    assert result.exit_code == 1
    assert "3 replays: 2 done, 0 skipped (already complete), 1 failed" in result.output
    broken_line = next(line for line in result.output.splitlines()
                       if line.strip().startswith("broken"))
    assert "failed" in broken_line
    assert "truncated row" in broken_line


def test_list_file_names_replays(tmp_path):
    for name in ("x", "y"):
        write_aspect(tmp_path / "data" / name, "team_stats", _team_stats_rows())
    listing = tmp_path / "replays.txt"
    listing.write_text("# two replays\ndata/x\tfirst\ndata/y\n")

    result = _invoke("run", "-i", str(listing), "-o", str(tmp_path / "out"),
                     "-u", "team_stats", "-s", "resources_by_player", *CLUSTER)
    assert result.exit_code == 0, result.output
    ids = sorted(p.name for p in Path(tmp_path / "out" / "team_stats").iterdir())
    assert ids == ["replay_id=first", "replay_id=y"]


def test_tiny_blocksize_on_large_file_rejected(tmp_path):
    write_aspect(tmp_path / "in", "team_stats", _team_stats_rows())
    result = _invoke("run", "r", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                     "-u", "team_stats", "--blocksize", "1", "--dry-run")
    assert result.exit_code == 0, result.output

    settings_file = tmp_path / "limits.yaml"
    settings_file.write_text("mpp-dask:\n  reading:\n    max-partitions-per-file: 10\n")
    result = _invoke("run", "r", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                     "-u", "team_stats", "--blocksize", "1", "--config", str(settings_file),
                     *CLUSTER)
    assert result.exit_code == 2
    assert "into 176 partitions, more than the reading.max-partitions-per-file" in result.output
    assert not (tmp_path / "out" / "team_stats").exists()


def test_output_inside_corpus_rejected(tmp_path):
    corpus = tmp_path / "corpus"
    write_aspect(corpus / "a", "team_stats", _team_stats_rows())
    (corpus / "notes").mkdir()
    result = _invoke("run", "-i", str(corpus), "-o", str(corpus / "out"), "--dry-run")
    assert result.exit_code == 2
    assert f"is inside the input folder {corpus}" in result.output

    result = _invoke("run", "-i", str(corpus), "-o", str(tmp_path / "out"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "replay a " in result.output
    assert "replay notes" not in result.output


def test_output_that_is_a_file_rejected(tmp_path):
    write_aspect(tmp_path / "in", "team_stats", _team_stats_rows())
    (tmp_path / "afile").write_text("not a folder")
    result = _invoke("run", "r", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "afile"))
    assert result.exit_code == 2
    assert "is an existing file; choose a folder" in result.output
