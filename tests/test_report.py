"""The HTML report: its numbers, its fallbacks and notes, and the page in headless Chromium.

The browser tests write a full-page screenshot of each report to
``test-artifacts/`` at the top of the repository (ignored by git).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from distributed import Client, LocalCluster

from browser import CHROMIUM, open_page
from mpp_dask import pipeline
from mpp_dask.cli.main import cli
from mpp_dask.generate import generate_replay
from mpp_dask.reading.replays import ReplaySource
from mpp_dask.report import combat_plots, player_plots, write_report
from mpp_dask.report.page import SECTIONS
from mpp_dask.report.players import NO_ALLY_TEAM, build_roster
from mpp_dask.stats.registry import build_registry

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TEAMS = 4

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium); "
                             "the report's browser checks need it")

# Every figure of a complete report of a 2-ally-team replay whose Gaia team
# produces nothing, so it gets no timeline figure of its own.
FIGURES = {
    "resources-metal-0", "resources-metal-1", "resources-energy-0", "resources-energy-1",
    "apm-timeline-0", "apm-timeline-1", "apm-split", "damage-by-unit",
    "map-control-timeline-0", "map-control-timeline-1", "engagement-map",
    "engagement-timeline", "crisis-response-box",
}
ALL_VIEWS = FIGURES | {section.key for section in SECTIONS}


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                      dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster:
        with Client(cluster) as client:
            yield client


@pytest.fixture(scope="module")
def generated_replay(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("replays") / "synthetic"
    generate_replay(folder, minutes=4, teams=TEAMS, seed=3)
    return folder


def _run(client, replay: Path, output: Path, replay_id: str, stats=(), streams=(),
         output_formats=("parquet",)) -> Path:
    plan = pipeline.RunPlan(output_dir=str(output), stats=list(stats), streams=list(streams),
                            output_formats=list(output_formats))
    [outcome] = pipeline.run([ReplaySource(replay_id, str(replay))], plan, build_registry(),
                             client)
    assert outcome.status == "done", outcome.error
    return output


@pytest.fixture(scope="module")
def full_output(client, generated_replay, tmp_path_factory) -> Path:
    """Every default stat and the team_stats and start_pos streams of the synthetic replay."""
    return _run(client, generated_replay, tmp_path_factory.mktemp("full"), "synthetic",
                streams=["team_stats", "start_pos"])


@pytest.fixture(scope="module")
def partial_output(client, generated_replay, tmp_path_factory) -> Path:
    """Only damage_by_unit_def of the synthetic replay, without any stream."""
    return _run(client, generated_replay, tmp_path_factory.mktemp("partial"), "synthetic",
                stats=["damage_by_unit_def"])


def _save_screenshot(name: str, png: bytes) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    path.write_bytes(png)
    return path


def _assert_offline(requests: list[str]) -> None:
    remote = [url for url in requests if not url.startswith(("file:", "data:", "blob:"))]
    assert remote == []


# Numbers drawn in the figures, on hand-made tables.

def test_action_split_hand_computed():
    apm = pd.DataFrame({
        "player_id": [0, 0, 1],
        "minute": [0, 1, 3],
        "actions_per_minute": [10, 20, 8],
        "combat_focus_pct": [50.0, 25.0, 0.0],
        "economy_focus_pct": [10.0, 50.0, 100.0],
    })
    split = player_plots.action_split(apm).set_index("player_id")

    # The game lasts 4 minutes: the last minute of any player (3) plus one.
    assert split.loc[0, "total"] == pytest.approx(30 / 4)
    assert split.loc[0, "combat"] == pytest.approx((5 + 5) / 4)
    assert split.loc[0, "economy"] == pytest.approx((1 + 10) / 4)
    assert split.loc[0, "other"] == pytest.approx((30 - 10 - 11) / 4)
    assert split.loc[1, "total"] == pytest.approx(2.0)
    assert split.loc[1, "economy"] == pytest.approx(2.0)
    assert split.loc[1, "other"] == pytest.approx(0.0)


def test_response_quantiles_leave_out_unanswered():
    crisis = pd.DataFrame({
        "player_id": [0, 0, 0, 0, 0, 1, 1],
        "time_to_response_frames": [0, 30, 60, 90, -1, -1, -1],
    })
    summary = player_plots.response_quantiles(crisis).set_index("player_id")

    assert summary.loc[0, "crises"] == 5
    assert summary.loc[0, "unanswered"] == 1
    assert summary.loc[0, "q50"] == pytest.approx(1.5)
    assert summary.loc[0, "q25"] == pytest.approx(0.75)
    assert summary.loc[0, "maximum"] == pytest.approx(3.0)
    assert summary.loc[1, "crises"] == 2
    assert summary.loc[1, "unanswered"] == 2
    assert np.isnan(summary.loc[1, "q50"])


def test_engagements_per_minute_sums():
    engagements = pd.DataFrame({"start_frame": [0, 1799, 1800, 5400],
                                "total_damage": [1.5, 2.5, 10.0, 4.0],
                                "hits": [1, 2, 3, 4]})
    per_minute = combat_plots.engagements_per_minute(engagements)

    assert per_minute["minute"].tolist() == [0, 1, 3]
    assert per_minute["engagements"].tolist() == [2, 1, 1]
    assert per_minute["damage"].tolist() == [4.0, 10.0, 4.0]
    assert per_minute["hits"].tolist() == [3, 3, 4]


def test_marker_sizes_scale_area_with_damage():
    sizes = combat_plots.marker_sizes(np.array([0.0, 25.0, 100.0]))

    low, high = combat_plots.MIN_MARKER_PIXELS, combat_plots.MAX_MARKER_PIXELS
    assert sizes[0] == pytest.approx(low)
    assert sizes[1] == pytest.approx(low + (high - low) * 0.5)
    assert sizes[2] == pytest.approx(high)
    assert combat_plots.marker_sizes(np.zeros(2)).tolist() == [low, low]


def test_unit_type_labels_fall_back_to_id():
    labels = combat_plots.unit_type_labels([7, 8], {7: "Pawn (armpw)"})

    assert labels == ["Pawn (armpw) [7]", "unit def 8"]


def test_roster_names_groups_and_gaia():
    game_meta = {"AllyTeams": [
        {"allyTeamId": 0, "winningTeam": False,
         "Players": [{"teamId": 0, "name": "meta_a", "faction": "Armada"}]},
        {"allyTeamId": 1, "winningTeam": True,
         "Players": [{"teamId": 1, "name": "meta_b"}, {"teamId": 2, "name": "meta_c"}]},
    ]}
    start_pos = pd.DataFrame({"player_id": [0, 1, 2], "player_name": ["alice", "bob", "bob"]})
    roster = build_roster([0, 1, 2, 3], start_pos, game_meta)
    groups = roster.groups([0, 1, 2, 3])

    assert [label for label, _ in groups] == ["ally team 0", "ally team 1 (won)",
                                             "no ally team"]
    assert [p.name for p in groups[0][1]] == ["alice"]
    assert [p.name for p in groups[1][1]] == ["bob (team 1)", "bob (team 2)"]
    assert roster.player(3).name == "team 3"
    assert roster.player(3).ally_team == NO_ALLY_TEAM
    assert roster.player(0).faction == "Armada"
    assert roster.player(1).color != roster.player(2).color


def test_roster_without_metadata_has_one_group():
    roster = build_roster([5, 2], None, None)

    assert roster.groups([5, 2]) == [("all teams", [roster.player(2), roster.player(5)])]
    assert roster.player(5).name == "team 5"


# Reports of real runs, checked in Python.

def test_report_reads_names_and_top_damage(full_output, generated_replay):
    target, inputs = write_report(str(full_output), "synthetic")

    assert target == str(full_output / "_reports" / "synthetic.html")
    assert inputs.absent == {}
    assert inputs.start_pos_source == "the start_pos stream"
    assert inputs.notes == []
    damage = pd.read_parquet(full_output / "damage_by_unit_def")
    top = damage.sort_values("total_damage_dealt").iloc[-1]
    defs = pd.read_csv(generated_replay / "defs.csv").set_index("id")
    expected = (f"{defs.loc[top['unit_def_id'], 'translatedHumanName']} "
                f"({defs.loc[top['unit_def_id'], 'name']}) [{top['unit_def_id']}]")
    figure = combat_plots.damage_by_unit_figure(inputs.tables["damage_by_unit_def"],
                                                inputs.unit_names)
    assert figure.y_range.factors[-1] == expected
    html = Path(target).read_text(encoding="utf-8")
    assert "player_03" in html
    assert "<script src=" not in html  # BokehJS is inlined


def test_report_reads_file_url(full_output, tmp_path):
    target, inputs = write_report(full_output.as_uri(), "synthetic",
                                  str(tmp_path / "report.html"))

    assert Path(target).stat().st_size > 0
    assert set(inputs.tables) == {section.table for section in SECTIONS} | {"start_pos"}


def test_start_pos_read_from_replay_file(partial_output):
    _, inputs = write_report(str(partial_output), "synthetic")

    assert inputs.start_pos_source == "the replay's start_pos aspect file"
    assert inputs.start_pos["player_name"].tolist() == [f"player_{team:02d}"
                                                        for team in range(TEAMS)]


def test_missing_replay_files_use_ids(client, generated_replay, tmp_path):
    replay = tmp_path / "replay"
    shutil.copytree(generated_replay, replay)
    output = _run(client, replay, tmp_path / "out", "copy", stats=["damage_by_unit_def"])
    for name in ("defs.csv", "game_meta.json", "start_pos.mpk"):
        (replay / name).unlink()

    target, inputs = write_report(str(output), "copy")

    assert inputs.unit_names == {}
    assert inputs.game_meta is None
    assert inputs.start_pos is None
    assert any("Unit types are shown as ids" in note for note in inputs.notes)
    assert any("Ally teams are unknown" in note for note in inputs.notes)
    assert any("start_pos.mpk could not be read" in note for note in inputs.notes)
    html = Path(target).read_text(encoding="utf-8")
    assert "unit def " in html
    assert "No table of this output and no replay file names a player." in html


def test_empty_tables_show_notes(client, generated_replay, tmp_path):
    replay = tmp_path / "replay"
    shutil.copytree(generated_replay, replay)
    (replay / "damage_log.mpk").write_bytes(b"")
    output = _run(client, replay, tmp_path / "out", "quiet",
                  stats=["damage_by_unit_def", "combat_engagement_summary"])

    target, inputs = write_report(str(output), "quiet")

    assert inputs.tables["damage_by_unit_def"].empty
    html = Path(target).read_text(encoding="utf-8")
    assert "Not shown: the damage_by_unit_def table of this replay has no rows." in html
    assert ("Not shown: the combat_engagement_summary table of this replay has no rows."
            in html)


def test_skipped_stat_note_names_aspect(client, generated_replay, tmp_path):
    replay = tmp_path / "replay"
    shutil.copytree(generated_replay, replay)
    (replay / "damage_log.mpk").unlink()
    with pytest.warns(UserWarning, match="damage_log"):
        output = _run(client, replay, tmp_path / "out", "nodamage",
                      stats=["damage_by_unit_def", "calculate_player_apm_and_focus"])

    target, inputs = write_report(str(output), "nodamage")

    assert inputs.absent["damage_by_unit_def"] == ("skipped by the run: missing aspect "
                                                   "damage_log")
    html = Path(target).read_text(encoding="utf-8")
    assert ("Not shown: the damage_by_unit_def stat is not in this output (skipped by the "
            "run: missing aspect damage_log).</p>") in html
    assert "with -s damage_by_unit_def writes it" not in html
    # A stat that the run was not asked for still gets the option that writes it.
    assert "with -s map_control_timeline writes it" in html


def test_last_failure_noted_over_older_output(client, generated_replay, tmp_path):
    replay = tmp_path / "replay"
    shutil.copytree(generated_replay, replay)
    output = _run(client, replay, tmp_path / "out", "r", stats=["damage_by_unit_def"])
    with open(replay / "damage_log.mpk", "ab") as stream:
        stream.write(b"\x93\x01")  # a row cut off after its first element
    plan = pipeline.RunPlan(output_dir=str(output), stats=["damage_by_unit_def"])
    [outcome] = pipeline.run([ReplaySource("r", str(replay))], plan, build_registry(), client)
    assert outcome.status == "failed"

    _, inputs = write_report(str(output), "r")
    result = _invoke(str(output), "--replay-id", "r")

    assert "truncated row" in inputs.last_failure
    assert "damage_log.mpk" in inputs.last_failure
    assert inputs.notes == [f"The last run of this replay failed ({inputs.last_failure}), "
                            "so this page shows the output of the run before it."]
    assert "damage_by_unit_def" in inputs.tables
    assert result.exit_code == 0, result.output
    assert "note: the last run of replay r failed (" in result.output


# The command line.

def _invoke(*args: str):
    return CliRunner().invoke(cli, ["report", *args], catch_exceptions=False)


def test_cli_writes_default_path_and_notes(partial_output):
    result = _invoke(str(partial_output), "--replay-id", "synthetic")

    assert result.exit_code == 0, result.output
    assert (partial_output / "_reports" / "synthetic.html").is_file()
    assert "wrote the report of replay synthetic" in result.output
    assert "note: team_stats is not in the output (not requested in the run)" in result.output


def test_cli_missing_output_folder(tmp_path):
    result = _invoke(str(tmp_path / "nowhere"), "--replay-id", "r")

    assert result.exit_code == 2
    assert "output folder" in result.output
    assert "not found" in result.output


def test_cli_unknown_replay_lists_known(full_output):
    result = _invoke(str(full_output), "--replay-id", "other")

    assert result.exit_code == 2
    assert "replay 'other' not found" in result.output
    assert "replays with a manifest: synthetic" in result.output


def test_cli_invalid_replay_id(full_output):
    result = _invoke(str(full_output), "--replay-id", "../synthetic")

    assert result.exit_code == 2
    assert "invalid replay id" in result.output


def test_cli_failed_replay_rejected(tmp_path):
    manifest_dir = tmp_path / "_manifests" / "broken"
    manifest_dir.mkdir(parents=True)
    (manifest_dir / "_manifest.json").write_text(json.dumps(
        {"status": "failed", "replay_id": "broken", "error": "invalid data in x.mpk"}))

    result = _invoke(str(tmp_path), "--replay-id", "broken")

    assert result.exit_code == 2
    assert "has no complete output" in result.output
    assert "invalid data in x.mpk" in result.output


def test_cli_output_without_parquet(client, generated_replay, tmp_path):
    output = _run(client, generated_replay, tmp_path / "out", "csvonly",
                  stats=["damage_by_unit_def"], output_formats=["csv", "jsonl-gzip"])

    result = _invoke(str(output), "--replay-id", "csvonly")

    assert result.exit_code == 2
    assert "replay csvonly" in result.output
    assert "has no Parquet tables (its run wrote only csv, jsonl-gzip)" in result.output
    assert "'--output-format parquet'" in result.output
    assert not (output / "_reports").exists()


def test_cli_unwritable_report_path(full_output, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")

    result = _invoke(str(full_output), "--replay-id", "synthetic",
                     "-o", str(blocker / "report.html"))

    assert result.exit_code == 5
    assert "writing the report" in result.output


# The page in headless Chromium.

@needs_chromium
def test_browser_full_report(full_output):
    target, _ = write_report(str(full_output), "synthetic")
    page = open_page(Path(target))
    _save_screenshot("report-synthetic", page.screenshot)

    assert page.console_errors == []
    _assert_offline(page.requests)
    assert ALL_VIEWS <= page.view_names()
    for view in page.views:
        if view["name"] in FIGURES:
            assert view["width"] > 100, view
            assert view["height"] > 100, view
    assert page.notes == []
    assert page.section_ids == ["players", *(section.key for section in SECTIONS)]
    assert page.screenshot.startswith(b"\x89PNG")


@needs_chromium
def test_browser_partial_report_shows_notes(partial_output):
    target, _ = write_report(str(partial_output), "synthetic")
    page = open_page(Path(target))
    _save_screenshot("report-synthetic-partial", page.screenshot)

    assert page.console_errors == []
    assert {"damage", "damage-by-unit"} <= page.view_names()
    assert "resources" not in page.view_names()
    assert "crisis-response-box" not in page.view_names()
    noted = {note["table"] for note in page.notes}
    assert noted == {section.table for section in SECTIONS} - {"damage_by_unit_def"}
    for note in page.notes:
        assert note["text"].startswith(f"Not shown: the {note['table']} ")
        assert "not requested in the run" in note["text"]


@needs_chromium
def test_browser_report_without_ally_teams(client, generated_replay, tmp_path):
    replay = tmp_path / "replay"
    shutil.copytree(generated_replay, replay)
    output = _run(client, replay, tmp_path / "out", "copy",
                  stats=["calculate_player_apm_and_focus", "crisis_response_index"],
                  streams=["team_stats"])
    (replay / "game_meta.json").unlink()

    target, _ = write_report(str(output), "copy")
    page = open_page(Path(target))

    assert page.console_errors == []
    assert {"resources-metal-0", "apm-split", "crisis-response-box"} <= page.view_names()
    assert "resources-metal-1" not in page.view_names()


@pytest.mark.slow
@needs_chromium
def test_browser_example_report(client, example_replay, tmp_path):
    output = _run(client, example_replay, tmp_path, "example_8v8",
                  streams=["team_stats", "start_pos"])

    target, inputs = write_report(str(output), "example_8v8")
    page = open_page(Path(target))
    _save_screenshot("report-example_8v8", page.screenshot)

    assert page.console_errors == []
    _assert_offline(page.requests)
    assert ALL_VIEWS <= page.view_names()
    assert page.notes == []
    roster = build_roster(range(17), inputs.start_pos, inputs.game_meta)
    assert [label for label, _ in roster.groups(range(17))] == [
        "ally team 0 (won)", "ally team 1", "no ally team"]
    assert roster.player(9).name == "player_09"
    figure = combat_plots.damage_by_unit_figure(inputs.tables["damage_by_unit_def"],
                                                inputs.unit_names)
    assert figure.y_range.factors[-1] == "Armada Commander (armcom) [49]"
