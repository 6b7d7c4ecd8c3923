"""Stat discovery: plugin folders, entry points, broken plugins, and the documented example."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import dask
import pandas as pd
import pytest
from click.testing import CliRunner

from helpers import read_frames, write_aspect
from mpp_dask.cli.main import cli
from mpp_dask.errors import ConfigError
from mpp_dask.stats.registry import PluginWarning, Stat, build_registry

DOCS_EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"

CREATED, DESTROYED = 1, 3


def _unit_event(frame: int, unit: int, team: int | None, event: int) -> list:
    return [frame, unit, 7, team, 0, 0, 0, None, None, None, event]


@pytest.fixture
def plugin_dir(tmp_path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    shutil.copy(DOCS_EXAMPLES / "units_lost.py", folder)
    return folder


def test_documented_example_plugin_counts_losses(tmp_path, plugin_dir):
    replay = tmp_path / "replay"
    write_aspect(replay, "unit_events", [
        _unit_event(0, 1, 0, CREATED),
        _unit_event(0, 2, 1, CREATED),
        _unit_event(100, 1, 0, DESTROYED),
        _unit_event(1799, 3, 0, DESTROYED),
        _unit_event(1800, 4, 0, DESTROYED),
        _unit_event(1900, 2, 1, DESTROYED),
        _unit_event(2000, 5, None, DESTROYED),
    ])
    registry = build_registry([plugin_dir])
    stat = registry["units_lost"]
    assert stat.source == str(plugin_dir / "units_lost.py")
    assert not stat.default

    for blocksize in (1 << 20, 40, 7):
        frames = read_frames(replay, blocksize=blocksize)
        result = dask.compute(stat.build(frames, {}), scheduler="sync")[0]
        expected = pd.DataFrame({"player_id": [0, 0, 1], "minute": [0, 1, 1],
                                 "units_lost": [2, 1, 1]})
        pd.testing.assert_frame_equal(result.reset_index(drop=True), expected)


def test_broken_plugin_is_named_and_others_load(tmp_path, plugin_dir):
    (plugin_dir / "broken.py").write_text("raise RuntimeError('this plugin is broken')\n")
    (plugin_dir / "not_a_stat.py").write_text("STATS = ['just a string']\n")

    with pytest.warns(PluginWarning) as caught:
        registry = build_registry([plugin_dir])

    messages = [str(w.message) for w in caught]
    broken = [m for m in messages if "broken.py failed to load" in m]
    assert len(broken) == 1
    assert "this plugin is broken" in broken[0]
    assert any("not_a_stat.py failed to load" in m for m in messages)
    assert "units_lost" in registry
    assert "resources_by_player" in registry


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch):
    site = tmp_path / "site"
    package = site / "extra_stats_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    shutil.copy(DOCS_EXAMPLES / "units_lost.py", package / "losses.py")
    dist_info = site / "extra_stats_pkg-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-stats-pkg\n"
                                        "Version: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[mpp_dask.stats]\nlosses = extra_stats_pkg.losses\n")
    monkeypatch.syspath_prepend(str(site))

    registry = build_registry()

    assert "units_lost" in registry
    assert registry["units_lost"].source.startswith("entry point losses")
    sys.modules.pop("extra_stats_pkg.losses", None)
    sys.modules.pop("extra_stats_pkg", None)


def test_broken_entry_point_warns(tmp_path, monkeypatch):
    site = tmp_path / "site"
    dist_info = site / "bad_stats_pkg-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-stats-pkg\n"
                                        "Version: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[mpp_dask.stats]\nbad = no_such_module_here\n")
    monkeypatch.syspath_prepend(str(site))

    with pytest.warns(PluginWarning, match="entry point bad .* failed to load"):
        registry = build_registry()
    assert "damage_by_unit_def" in registry


def test_list_stats_shows_plugin_and_needs(plugin_dir):
    result = CliRunner().invoke(cli, ["list-stats", "--plugin-dir", str(plugin_dir)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    plugin_line = next(line for line in lines if " units_lost " in line)
    assert plugin_line.startswith("  units_lost")
    assert "needs unit_events" in plugin_line
    default_line = next(line for line in lines if " resources_by_player " in line)
    assert default_line.startswith("* resources_by_player")
    assert "needs team_stats" in default_line


def test_plugin_runs_through_cli(tmp_path, plugin_dir):
    replay = tmp_path / "replay"
    write_aspect(replay, "unit_events", [_unit_event(0, 1, 2, CREATED),
                                         _unit_event(50, 1, 2, DESTROYED)])
    output = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "run", "r", "-i", str(replay), "-o", str(output), "--plugin-dir", str(plugin_dir),
        "-s", "units_lost", "--n-workers", "1", "--dashboard-address", "127.0.0.1:0"])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(output / "units_lost")
    assert table[["player_id", "minute", "units_lost"]].values.tolist() == [[2, 0, 1]]


def test_stat_name_with_underscore_rejected():
    with pytest.raises(ConfigError, match="starts with '_', which is reserved"):
        Stat(name="_formats", description="", aspects=("team_stats",),
             build=lambda frames, params: frames["team_stats"])
