"""Compressed aspect files (.mpk.gz, .mpk.zst): read whole, one partition each."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest
import zstandard
from click.testing import CliRunner

from helpers import pack_rows
from mpp_dask.cli.main import cli
from mpp_dask.reading.discover import discover_replay

ROWS = [[300 * (i // 2 + 1), i % 2] + [10 * (i + 1)] * 37 for i in range(6)]
COMPRESSORS = {"gz": gzip.compress, "zst": lambda data: zstandard.ZstdCompressor().compress(data)}


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_compressed_file_matches_plain(tmp_path, suffix):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "team_stats.mpk").write_bytes(pack_rows(ROWS))
    packed = tmp_path / "packed"
    packed.mkdir()
    (packed / f"team_stats.mpk.{suffix}").write_bytes(COMPRESSORS[suffix](pack_rows(ROWS)))

    replay = discover_replay(str(packed))
    assert replay.aspects["team_stats"].compression == {"gz": "gzip", "zst": "zstd"}[suffix]

    tables = {}
    for name, folder in (("plain", plain), ("packed", packed)):
        result = CliRunner().invoke(cli, [
            "run", "r", "-i", str(folder), "-o", str(tmp_path / f"out-{name}"),
            "-u", "team_stats", "-s", "resources_by_player", "--blocksize", "16",
            "--n-workers", "1", "--dashboard-address", "127.0.0.1:0"])
        assert result.exit_code == 0, result.output
        tables[name] = pd.read_parquet(tmp_path / f"out-{name}" / "team_stats")
    assert len(tables["packed"]) == 6
    pd.testing.assert_frame_equal(tables["plain"], tables["packed"])


def test_dry_run_plans_one_partition_for_compressed(tmp_path):
    folder = tmp_path / "replay"
    folder.mkdir()
    (folder / "team_stats.mpk.gz").write_bytes(gzip.compress(pack_rows(ROWS)))
    result = CliRunner().invoke(cli, ["run", "r", "-i", str(folder), "-o", str(tmp_path / "o"),
                                      "--dry-run", "--blocksize", "8"])
    assert result.exit_code == 0, result.output
    assert "team_stats: " in result.output
    assert ", 1 partitions" in result.output


def test_plain_and_compressed_copy_rejected(tmp_path):
    folder = tmp_path / "replay"
    folder.mkdir()
    (folder / "team_stats.mpk").write_bytes(pack_rows(ROWS))
    (folder / "team_stats.mpk.gz").write_bytes(gzip.compress(pack_rows(ROWS)))
    result = CliRunner().invoke(cli, ["run", "r", "-i", str(folder), "-o", str(tmp_path / "o"),
                                      "--dry-run"])
    assert result.exit_code == 2
    assert "two files of aspect team_stats" in result.output
