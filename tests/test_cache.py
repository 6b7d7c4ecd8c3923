"""The partition cache: re-runs read cached partitions, and any change of identity rebuilds them.

Most tests run the pipeline on a real LocalCluster and count the decode tasks that
the workers executed, from Dask's task stream. A run that reads its aspect files
from the cache executes none.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import dask.config
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from distributed import Client, get_task_stream
from hypothesis import given, strategies as st

import mpp_dask
from dask_processes import MPP_DASK, DaskProcesses
from helpers import pack_rows, write_aspect
from mpp_dask import pipeline, schema
from mpp_dask.cli.main import cli
from mpp_dask.errors import RowProblem
from mpp_dask.reading.cache import (MARKER_NAME, sample_offsets, tally_from_json,
                                    tally_to_json)
from mpp_dask.reading.partitions import FileTally
from mpp_dask.reading.replays import ReplaySource

# Small enough that the tiny replays below have several partitions.
TINY_BLOCKSIZE = 400


def _team_stats_rows(value: int = 10) -> list:
    # Two teams at frames 300 to 1500. Every counter at frame 300 * k is ``value * k``.
    return [[300 * (i + 1), team] + [value * (i + 1)] * 37 for i in range(5) for team in range(2)]


def _tiny_replay(folder: Path, value: int = 10) -> Path:
    write_aspect(folder, "team_stats", _team_stats_rows(value))
    return folder


class Run:
    """One pipeline run of a replay, with the keys of the tasks that the workers executed."""

    def __init__(self, replay: Path, output: Path, cache: Path, client: Client,
                 registry, **plan_settings):
        settings = {"stats": ["resources_by_player"], "streams": ["all"],
                    "blocksize": TINY_BLOCKSIZE, **plan_settings}
        plan = pipeline.RunPlan(output_dir=str(output), cache_dir=str(cache), **settings)
        with get_task_stream(client) as stream:
            [self.outcome] = pipeline.run([ReplaySource("r", str(replay))], plan, registry,
                                          client)
        self.output = output
        self.task_names = Counter(str(task["key"]).split("'")[1] for task in stream.data
                                  if "'" in str(task["key"]))

    def count(self, prefix: str) -> int:
        return sum(count for name, count in self.task_names.items() if name.startswith(prefix))

    @property
    def decode_tasks(self) -> int:
        return self.count("decode-")

    @property
    def cached_reads(self) -> int:
        return self.count("cached-")

    @property
    def manifest(self) -> dict:
        path = self.output / "_manifests" / "r" / "_manifest.json"
        return json.loads(path.read_text())


def _tables(output: Path) -> dict[str, pd.DataFrame]:
    return {folder.name: pq.read_table(folder).to_pandas() for folder in sorted(output.iterdir())
            if folder.is_dir() and not folder.name.startswith(("_", "."))}


def _assert_same_output(actual: Path, expected: Path) -> None:
    actual_tables = _tables(actual)
    expected_tables = _tables(expected)
    assert sorted(actual_tables) == sorted(expected_tables)
    for name, table in expected_tables.items():
        pd.testing.assert_frame_equal(actual_tables[name], table, check_exact=True, obj=name)


def _entries(cache: Path) -> list[Path]:
    return sorted(path for path in cache.iterdir() if path.is_dir())


def _complete_entries(cache: Path) -> list[Path]:
    return [path for path in _entries(cache) if (path / MARKER_NAME).exists()]


@given(size=st.integers(0, 10_000), sample_bytes=st.integers(1, 600), count=st.integers(2, 6))
def test_sample_offsets_cover_ends(size, sample_bytes, count):
    offsets = sample_offsets(size, sample_bytes=sample_bytes, count=count)

    assert offsets == sorted(offsets)
    if size == 0:
        assert offsets == []
        return
    assert offsets[0] == 0
    assert offsets[-1] + sample_bytes >= size
    assert offsets[-1] < size
    if size <= sample_bytes * count:
        assert offsets == list(range(0, size, sample_bytes))
    else:
        assert len(offsets) == count
        assert offsets[-1] + sample_bytes == size


def test_tally_json_round_trip():
    problem = RowProblem(offset=17, row=3, reason="invalid MessagePack", field=None,
                         expected="a row", found="0xc1")
    tally = FileTally(urlpath="/data/r/team_stats.mpk", next_start=None, next_search=120,
                      rows_before=9, rows_kept=8, last_frame=3000,
                      dropped=Counter({"invalid MessagePack": 2}), unknown_enum_codes=1,
                      problems=[problem], redecoded_ranges=1, problem_count=2)

    restored = tally_from_json(json.loads(json.dumps(tally_to_json(tally))))

    assert restored == tally
    assert isinstance(restored.dropped, Counter)


@pytest.mark.slow
def test_example_rerun_reads_cache(example_replay, tmp_path, client, registry):
    cache = tmp_path / "cache"

    first = Run(example_replay, tmp_path / "first", cache, client, registry,
                blocksize=1 << 20)
    second = Run(example_replay, tmp_path / "second", cache, client, registry,
                 blocksize=1 << 20)

    assert first.outcome.status == "done"
    assert second.outcome.status == "done"
    assert first.decode_tasks > 0
    assert first.cached_reads == 0
    assert second.decode_tasks == 0
    assert second.cached_reads == first.decode_tasks
    assert len(_complete_entries(cache)) == len(first.outcome.rows_per_aspect)
    assert second.manifest["rows_per_aspect"] == first.manifest["rows_per_aspect"]
    assert second.manifest["unknown_enum_codes"] == first.manifest["unknown_enum_codes"]
    _assert_same_output(second.output, first.output)


def test_changed_file_rebuilds(tmp_path, client, registry):
    replay = _tiny_replay(tmp_path / "in")
    cache = tmp_path / "cache"
    Run(replay, tmp_path / "first", cache, client, registry)

    write_aspect(replay, "team_stats", _team_stats_rows() + [[1800, 0] + [1] * 37])
    second = Run(replay, tmp_path / "second", cache, client, registry)

    assert second.decode_tasks > 0
    assert second.cached_reads == 0
    assert second.outcome.rows_per_aspect == {"team_stats": 11}
    assert len(_complete_entries(cache)) == 2


def test_same_size_edit_rebuilds(tmp_path, client, registry):
    # Raw values up to 55 pack into one byte each, so the file keeps its size. The
    # modification time is set back, so only the content fingerprint differs.
    replay = _tiny_replay(tmp_path / "in", value=10)
    path = replay / "team_stats.mpk"
    cache = tmp_path / "cache"
    Run(replay, tmp_path / "first", cache, client, registry)
    before = path.stat()

    path.write_bytes(pack_rows(_team_stats_rows(value=11)))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    second = Run(replay, tmp_path / "second", cache, client, registry)

    assert second.decode_tasks > 0
    assert second.cached_reads == 0
    table = _tables(second.output)["team_stats"]
    assert table["metal_used"].max() == pytest.approx(5.5)


def test_other_blocksize_rebuilds(tmp_path, client, registry):
    replay = _tiny_replay(tmp_path / "in")
    cache = tmp_path / "cache"
    first = Run(replay, tmp_path / "first", cache, client, registry, blocksize=400)

    second = Run(replay, tmp_path / "second", cache, client, registry, blocksize=700)

    assert second.decode_tasks > 0
    assert second.cached_reads == 0
    assert len(_complete_entries(cache)) == 2
    _assert_same_output(second.output, first.output)


@pytest.mark.parametrize("module, name", [(schema, "SCHEMA_VERSION"),
                                          (mpp_dask, "__version__")])
def test_version_change_rebuilds(tmp_path, client, registry, monkeypatch, module, name):
    replay = _tiny_replay(tmp_path / "in")
    cache = tmp_path / "cache"
    Run(replay, tmp_path / "first", cache, client, registry)

    monkeypatch.setattr(module, name, "999")
    second = Run(replay, tmp_path / "second", cache, client, registry)

    assert second.decode_tasks > 0
    assert second.cached_reads == 0
    assert len(_complete_entries(cache)) == 2


def test_compressed_file_ignores_blocksize(tmp_path, client, registry):
    replay = tmp_path / "in"
    replay.mkdir()
    with gzip.open(replay / "team_stats.mpk.gz", "wb") as stream:
        stream.write(pack_rows(_team_stats_rows()))
    cache = tmp_path / "cache"
    first = Run(replay, tmp_path / "first", cache, client, registry, blocksize=400)

    second = Run(replay, tmp_path / "second", cache, client, registry, blocksize=700)

    assert first.decode_tasks == 1
    assert second.decode_tasks == 0
    assert second.cached_reads == 1
    assert len(_entries(cache)) == 1
    _assert_same_output(second.output, first.output)


def test_entry_without_marker_rebuilt_silently(tmp_path, client, registry, recwarn):
    replay = _tiny_replay(tmp_path / "in")
    cache = tmp_path / "cache"
    first = Run(replay, tmp_path / "first", cache, client, registry)
    [entry] = _entries(cache)
    (entry / MARKER_NAME).unlink()

    second = Run(replay, tmp_path / "second", cache, client, registry)

    assert second.decode_tasks == first.decode_tasks
    assert (entry / MARKER_NAME).exists()
    assert not [w for w in recwarn if "cache entry" in str(w.message)]


def test_failed_decode_leaves_no_entry(tmp_path, client, registry):
    rows = _team_stats_rows()
    path = tmp_path / "in" / "team_stats.mpk"
    path.parent.mkdir()
    path.write_bytes(pack_rows(rows[:8]) + b"\xc1" + pack_rows(rows[8:]))
    cache = tmp_path / "cache"

    run = Run(path.parent, tmp_path / "out", cache, client, registry)

    assert run.outcome.status == "failed"
    assert "invalid MessagePack" in str(run.outcome.error)
    entries = _entries(cache) if cache.exists() else []
    assert [entry for entry in entries if (entry / MARKER_NAME).exists()] == []


def _truncate_part(entry: Path) -> None:
    part = entry / "part.000001.parquet"
    part.write_bytes(part.read_bytes()[:-20])


def _remove_part(entry: Path) -> None:
    (entry / "part.000001.parquet").unlink()


def _garble_marker(entry: Path) -> None:
    (entry / MARKER_NAME).write_bytes(b"\x00garbage{")


def _garble_part_keeping_size(entry: Path) -> None:
    # Only a worker that reads the file can find this: its size is unchanged.
    part = entry / "part.000001.parquet"
    part.write_bytes(b"\x5a" * part.stat().st_size)


@pytest.mark.parametrize("damage, message", [
    (_truncate_part, "part.000001.parquet has .* bytes, expected"),
    (_remove_part, "part.000001.parquet is missing"),
    (_garble_marker, f"its {MARKER_NAME} is invalid"),
    (_garble_part_keeping_size, "part.000001.parquet cannot be read"),
])
def test_corrupt_entry_rebuilt(tmp_path, client, registry, damage, message):
    replay = _tiny_replay(tmp_path / "in")
    cache = tmp_path / "cache"
    first = Run(replay, tmp_path / "first", cache, client, registry)
    [entry] = _entries(cache)
    damage(entry)

    with pytest.warns(UserWarning, match=f"cache entry .* is corrupt: {message}"):
        second = Run(replay, tmp_path / "second", cache, client, registry)
    third = Run(replay, tmp_path / "third", cache, client, registry)

    assert second.outcome.status == "done"
    assert second.decode_tasks == first.decode_tasks
    _assert_same_output(second.output, first.output)
    assert third.decode_tasks == 0
    assert third.cached_reads == first.decode_tasks
    _assert_same_output(third.output, first.output)


def test_force_reprocess_rewrites_entry(tmp_path, client, registry):
    replay = _tiny_replay(tmp_path / "in")
    cache = tmp_path / "cache"
    first = Run(replay, tmp_path / "first", cache, client, registry)
    [entry] = _entries(cache)
    marker_before = (entry / MARKER_NAME).stat().st_mtime_ns

    second = Run(replay, tmp_path / "second", cache, client, registry, force_reprocess=True)
    third = Run(replay, tmp_path / "third", cache, client, registry)

    assert second.decode_tasks == first.decode_tasks
    assert second.cached_reads == 0
    assert (entry / MARKER_NAME).stat().st_mtime_ns != marker_before
    assert third.decode_tasks == 0
    _assert_same_output(third.output, first.output)


def test_skipped_rows_counted_from_cache(tmp_path, client, registry):
    rows = _team_stats_rows()
    path = tmp_path / "in" / "team_stats.mpk"
    path.parent.mkdir()
    path.write_bytes(pack_rows(rows[:3]) + b"\xc1\xc1" + pack_rows(rows[3:7]) + b"\xc1"
                     + pack_rows(rows[7:]))
    cache = tmp_path / "cache"

    first = Run(path.parent, tmp_path / "first", cache, client, registry, skip_on_error=True)
    second = Run(path.parent, tmp_path / "second", cache, client, registry, skip_on_error=True)

    assert first.manifest["dropped_rows"] == {"team_stats": {"invalid MessagePack": 2}}
    assert second.decode_tasks == 0
    assert second.manifest["dropped_rows"] == first.manifest["dropped_rows"]
    assert second.manifest["rows_per_aspect"] == {"team_stats": 10}
    errors = pd.read_parquet(second.output / "_errors")
    assert errors["offset"].tolist() == pd.read_parquet(first.output / "_errors")["offset"].tolist()
    assert len(errors) == 2
    _assert_same_output(second.output, first.output)


@pytest.fixture
def restore_dask_config():
    """Undo settings that a --config file or an option loads into the process-wide dask config."""
    saved = copy.deepcopy(dask.config.config)
    yield
    dask.config.config.clear()
    dask.config.config.update(saved)


def test_no_cache_overrides_setting(tmp_path, restore_dask_config):
    replay = _tiny_replay(tmp_path / "in")
    cache = tmp_path / "cache"
    config = tmp_path / "settings.yaml"
    config.write_text(f"mpp-dask:\n  cache:\n    dir: {cache}\n")

    result = CliRunner().invoke(cli, ["run", "r", "-i", str(replay), "-o", str(tmp_path / "out"),
                                      "--config", str(config), "--no-cache", "--n-workers", "1",
                                      "--dashboard-address", "127.0.0.1:0"],
                                catch_exceptions=False)

    assert result.exit_code == 0, result.output
    assert not cache.exists()
    assert (tmp_path / "out" / "resources_by_player").is_dir(), result.output


def test_cache_options_contradict(tmp_path, restore_dask_config):
    replay = _tiny_replay(tmp_path / "in")

    result = CliRunner().invoke(cli, ["run", "r", "-i", str(replay), "-o", str(tmp_path / "out"),
                                      "--cache-dir", str(tmp_path / "cache"), "--no-cache"],
                                catch_exceptions=False)

    assert result.exit_code == 2
    assert "--cache-dir and --no-cache contradict each other" in result.output


def test_cache_dir_on_file_rejected(tmp_path, restore_dask_config):
    replay = _tiny_replay(tmp_path / "in")
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("")

    result = CliRunner().invoke(cli, ["run", "r", "-i", str(replay), "-o", str(tmp_path / "out"),
                                      "--cache-dir", str(not_a_folder)],
                                catch_exceptions=False)

    assert result.exit_code == 2
    assert f"the cache folder {not_a_folder} is an existing file" in result.output


def test_config_lists_cache_dir(tmp_path, restore_dask_config):
    result = CliRunner().invoke(cli, ["config", "--set", f"mpp-dask.cache.dir={tmp_path}"],
                                catch_exceptions=False)

    assert result.exit_code == 0
    [line] = [line for line in result.output.splitlines() if line.startswith("mpp-dask.cache.dir")]
    assert str(tmp_path) in line
    assert "command line" in line


@pytest.mark.slow
def test_remote_workers_use_cache(tmp_path):
    replay = _tiny_replay(tmp_path / "in")
    cache = tmp_path / "cache"
    (tmp_path / "logs").mkdir()
    cluster = DaskProcesses(tmp_path, tmp_path / "logs")
    try:
        address = cluster.start_scheduler()
        cluster.start_worker("worker-1")
        cluster.wait_for_workers(1)
        command = [MPP_DASK, "run", "r", "-i", str(replay), "--cache-dir", str(cache),
                   "--blocksize", str(TINY_BLOCKSIZE), "-u", "all", "--no-progress",
                   "--scheduler-address", address]

        first = _run_command([*command, "-o", str(tmp_path / "first")])
        second = _run_command([*command, "-o", str(tmp_path / "second")])
    finally:
        cluster.stop()

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "0 files read from the cache" in first.stderr
    assert "1 files read from the cache" in second.stderr
    assert len(_complete_entries(cache)) == 1
    _assert_same_output(tmp_path / "second", tmp_path / "first")


def _run_command(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
