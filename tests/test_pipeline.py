"""End-to-end runs of the pipeline on a real LocalCluster, read back with pyarrow."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from helpers import team_stats_row, tiny_team_stats_replay, write_aspect
from mpp_dask import pipeline
from mpp_dask.errors import ConfigError, DecodeError
from mpp_dask.reading.replays import ReplaySource, resolve_replays
from mpp_dask.schema import ASPECTS

EXAMPLE_STREAM_ROWS = {
    "commands_log": 98_340, "construction_log": 176_502, "damage_log": 82_557,
    "map_envir_econ": 168, "start_pos": 16, "team_stats": 2_856, "unit_events": 25_707,
    "unit_positions": 82_829, "unit_state_snapshots": 40_612,
}


def _read_table(output: Path, table: str) -> pd.DataFrame:
    return ds.dataset(output / table, format="parquet", partitioning="hive").to_table().to_pandas()


@pytest.mark.slow
def test_example_streams_rows_and_values(example_replay, tmp_path, client, registry):
    plan = pipeline.RunPlan(output_dir=str(tmp_path), stats=["resources_by_player"],
                            streams=["all"])
    [outcome] = pipeline.run([ReplaySource("example_8v8", str(example_replay))], plan,
                             registry, client)

    assert outcome.status == "done"
    assert outcome.rows_per_aspect == EXAMPLE_STREAM_ROWS
    assert outcome.skipped_tables == {}
    for aspect_name, rows in EXAMPLE_STREAM_ROWS.items():
        table = pd.read_parquet(tmp_path / aspect_name)
        assert len(table) == rows, aspect_name
        assert set(table["replay_id"].astype(str)) == {"example_8v8"}

    team_stats = pd.read_parquet(tmp_path / "team_stats")
    last = team_stats[team_stats["team_id"] == 10].sort_values("frame").iloc[-1]
    assert last["damage_received"] == pytest.approx(433_239.2, abs=1e-9)

    game_meta = json.loads((example_replay / "game_meta.json").read_text())
    assert "mostDamageTaken" in json.dumps(game_meta)


@pytest.mark.slow
def test_example_types_survive_parquet(example_replay, tmp_path, client, registry):
    plan = pipeline.RunPlan(output_dir=str(tmp_path), stats=["damage_by_unit_def"],
                            streams=["commands_log", "unit_events", "start_pos", "damage_log"])
    pipeline.run([ReplaySource("ex", str(example_replay))], plan, registry, client)

    for aspect_name in plan.streams:
        table = pd.read_parquet(tmp_path / aspect_name).drop(columns="replay_id")
        expected = ASPECTS[aspect_name].meta().dtypes
        for column, dtype in expected.items():
            if isinstance(dtype, pd.CategoricalDtype):
                assert isinstance(table[column].dtype, pd.CategoricalDtype), column
                assert set(table[column].cat.categories) <= set(dtype.categories), column
            else:
                assert table[column].dtype == dtype, (aspect_name, column)

    commands = pd.read_parquet(tmp_path / "commands_log")
    assert commands["cmd_name"].isna().sum() == 14
    assert commands["target_unit_id"].isna().sum() == 93_233
    start_pos = pd.read_parquet(tmp_path / "start_pos")
    assert start_pos["player_name"].tolist()[:2] == ["player_00", "player_01"]


def test_manifest_records_inputs_and_rows(tmp_path, client, registry):
    replay = tiny_team_stats_replay(tmp_path / "in" / "r1")
    output = tmp_path / "out"
    plan = pipeline.RunPlan(output_dir=str(output), stats=["resources_by_player"],
                            streams=["team_stats"])
    pipeline.run([ReplaySource("r1", str(replay))], plan, registry, client)

    manifest = json.loads((output / "_manifests" / "r1" / "_manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["rows_per_aspect"] == {"team_stats": 6}
    assert manifest["tables"] == ["resources_by_player", "team_stats"]
    assert manifest["fingerprint"]["input_files"]["team_stats"]["size"] == (
        replay / "team_stats.mpk").stat().st_size
    assert not (output / ".staging").exists()


def test_manifest_names_default_stats(tmp_path, client, registry):
    replay = tiny_team_stats_replay(tmp_path / "in" / "r1")
    output = tmp_path / "out"
    plan = pipeline.RunPlan(output_dir=str(output))
    pipeline.run([ReplaySource("r1", str(replay))], plan, registry, client)

    manifest = json.loads((output / "_manifests" / "r1" / "_manifest.json").read_text())
    # The replay has only team_stats: the default stats that read nothing else run.
    assert sorted(manifest["computed_stats"]) == ["player_collaboration",
                                                  "player_economic_efficiency",
                                                  "resources_by_player"]
    assert manifest["settings"]["stats"] == []
    assert "damage_by_unit_def" in manifest["skipped"]


def test_rerun_replaces_only_that_replay(tmp_path, client, registry):
    output = tmp_path / "out"
    plan = pipeline.RunPlan(output_dir=str(output), streams=["team_stats"],
                            stats=["resources_by_player"])
    first = tiny_team_stats_replay(tmp_path / "in" / "a", teams=2)
    second = tiny_team_stats_replay(tmp_path / "in" / "b", teams=3)
    pipeline.run([ReplaySource("a", str(first)), ReplaySource("b", str(second))], plan,
                 registry, client)

    tiny_team_stats_replay(first, teams=4)
    plan.force_reprocess = True
    pipeline.run([ReplaySource("a", str(first))], plan, registry, client)

    table = pd.read_parquet(output / "resources_by_player")
    per_replay = table.groupby(table["replay_id"].astype(str)).size().to_dict()
    assert per_replay == {"a": 4, "b": 3}


def test_failed_replay_leaves_previous_output(tmp_path, client, registry):
    replay = tiny_team_stats_replay(tmp_path / "in" / "r")
    output = tmp_path / "out"
    plan = pipeline.RunPlan(output_dir=str(output), streams=["team_stats"],
                            stats=["resources_by_player"])
    pipeline.run([ReplaySource("r", str(replay))], plan, registry, client)
    before = sorted(p.relative_to(output) for p in output.rglob("*"))

    with open(replay / "team_stats.mpk", "ab") as stream:
        stream.write(b"\x93\x01")  # a row cut off after its first element
    [outcome] = pipeline.run([ReplaySource("r", str(replay))], plan, registry, client)

    assert outcome.status == "failed"
    assert isinstance(outcome.error, DecodeError)
    assert "truncated row" in str(outcome.error)
    after = sorted(p.relative_to(output) for p in output.rglob("*"))
    assert after == sorted(before + [Path("_manifests/r/_last_failure.json")])
    manifest = json.loads((output / "_manifests" / "r" / "_manifest.json").read_text())
    assert manifest["status"] == "complete"


def test_fail_fast_raises_and_leaves_nothing(tmp_path, client, registry):
    good = tiny_team_stats_replay(tmp_path / "in" / "good")
    bad = tmp_path / "in" / "bad"
    write_aspect(bad, "team_stats", [[300, 0, "not a number"] + [0] * 36])
    output = tmp_path / "out"
    plan = pipeline.RunPlan(output_dir=str(output), streams=["team_stats"], fail_fast=True)

    with pytest.raises(DecodeError, match=r"row 0, field metal_used: wrong type"):
        pipeline.run([ReplaySource("bad", str(bad)), ReplaySource("good", str(good))], plan,
                     registry, client)
    assert not (output / "team_stats").exists()
    assert not (output / ".staging").exists()


def test_corpus_isolates_bad_replay_and_resumes(tmp_path, client, registry):
    corpus = tmp_path / "corpus"
    for index in range(4):
        tiny_team_stats_replay(corpus / f"match_{index}", teams=2 + index % 2)
    write_aspect(corpus / "match_bad", "team_stats", [[300, 0, 1.5] + [0] * 36])
    output = tmp_path / "out"
    plan = pipeline.RunPlan(output_dir=str(output), streams=["team_stats"],
                            stats=["resources_by_player"])
    sources = resolve_replays(str(corpus))

    outcomes = pipeline.run(sources, plan, registry, client)
    status = {o.replay_id: o.status for o in outcomes}
    assert status == {"match_0": "done", "match_1": "done", "match_2": "done",
                      "match_3": "done", "match_bad": "failed"}
    bad = next(o for o in outcomes if o.replay_id == "match_bad")
    assert "float 1.5" in str(bad.error)
    table = pd.read_parquet(output / "resources_by_player")
    assert sorted(table["replay_id"].astype(str).unique()) == [f"match_{i}" for i in range(4)]

    again = pipeline.run(sources, plan, registry, client)
    assert {o.replay_id: o.status for o in again} == {
        "match_0": "skipped", "match_1": "skipped", "match_2": "skipped",
        "match_3": "skipped", "match_bad": "failed"}

    tiny_team_stats_replay(corpus / "match_1", teams=5)
    third = pipeline.run(sources, plan, registry, client)
    assert {o.replay_id: o.status for o in third}["match_1"] == "done"


def test_missing_aspect_skips_stat(tmp_path, client, registry):
    replay = tiny_team_stats_replay(tmp_path / "in" / "r")
    plan = pipeline.RunPlan(output_dir=str(tmp_path / "out"),
                            stats=["resources_by_player", "damage_by_unit_def"])
    with pytest.warns(UserWarning, match="skipping stat damage_by_unit_def: the replay has "
                                         "no damage_log aspect file"):
        [outcome] = pipeline.run([ReplaySource("r", str(replay))], plan, registry, client)
    assert outcome.status == "done"
    assert outcome.skipped_tables == {"damage_by_unit_def": "missing aspect damage_log"}
    assert outcome.tables == ["resources_by_player"]


def test_replay_without_aspect_files_fails(tmp_path, client, registry):
    folder = tmp_path / "in" / "empty"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("nothing here")
    plan = pipeline.RunPlan(output_dir=str(tmp_path / "out"))
    [outcome] = pipeline.run([ReplaySource("empty", str(folder))], plan, registry, client)
    assert outcome.status == "failed"
    assert isinstance(outcome.error, ConfigError)
    assert "no aspect files" in str(outcome.error)


@pytest.mark.parametrize("replay_id", ["", "a/b", "..", "a\\b", "x=y"])
def test_invalid_replay_id_rejected(tmp_path, client, registry, replay_id):
    replay = tiny_team_stats_replay(tmp_path / "in" / "r")
    plan = pipeline.RunPlan(output_dir=str(tmp_path / "out"), streams=["team_stats"])
    [outcome] = pipeline.run([ReplaySource(replay_id, str(replay))], plan, registry, client)
    assert outcome.status == "failed"
    assert "invalid replay id" in str(outcome.error)
    assert not (tmp_path / "out" / "team_stats").exists()


@pytest.mark.slow
def test_each_aspect_decoded_once(example_replay, tmp_path, client, registry):
    from distributed import get_task_stream

    from mpp_dask.reading.ranges import plan_ranges

    blocksize = 256 * 1024
    plan = pipeline.RunPlan(output_dir=str(tmp_path), streams=["all"], blocksize=blocksize)
    with get_task_stream(client) as stream:
        [outcome] = pipeline.run([ReplaySource("ex", str(example_replay))], plan, registry,
                                 client)
    assert outcome.status == "done"

    decoded = {}
    for task in stream.data:
        name = task["key"][0] if isinstance(task["key"], tuple) else task["key"]
        if name.startswith("decode-"):
            aspect_name = name[len("decode-"):].rsplit("-", 1)[0]
            decoded[aspect_name] = decoded.get(aspect_name, 0) + 1
    expected = {
        path.stem: len(plan_ranges(path.stat().st_size, blocksize))
        for path in example_replay.glob("*.mpk")
    }
    assert decoded == expected


def test_list_column_reads_back_with_pandas(tmp_path, client, registry):
    def hit(frame, attacker_team, x):
        return [frame, 0, attacker_team, 5, 7, None if attacker_team is None else 9, 3, 1, 1,
                100, False, x, 0, 0]

    replay = tmp_path / "in" / "r"
    write_aspect(replay, "damage_log", [hit(10, 2, 0), hit(20, 1, 0), hit(30, 2, 10),
                                        hit(1000, 1, 0)])
    output = tmp_path / "out"
    plan = pipeline.RunPlan(output_dir=str(output), stats=["combat_engagement_summary"])
    [outcome] = pipeline.run([ReplaySource("r", str(replay))], plan, registry, client)
    assert outcome.status == "done"

    table = pd.read_parquet(output / "combat_engagement_summary")
    assert [list(players) for players in table["involved_players"]] == [[1, 2], [1]]
    arrow = ds.dataset(output / "combat_engagement_summary", partitioning="hive").schema
    players_type = arrow.field("involved_players").type
    assert pa.types.is_list(players_type)
    assert players_type.value_type == pa.int64()


def test_zero_row_aspect_gives_empty_stat(tmp_path, client, registry):
    replay = tiny_team_stats_replay(tmp_path / "in" / "r")
    (replay / "damage_log.mpk").write_bytes(b"")
    output = tmp_path / "out"
    plan = pipeline.RunPlan(output_dir=str(output), streams=["damage_log"],
                            stats=["damage_by_unit_def", "combat_engagement_summary"])
    [outcome] = pipeline.run([ReplaySource("r", str(replay))], plan, registry, client)

    assert outcome.status == "done"
    assert outcome.rows_per_aspect["damage_log"] == 0
    damage = pd.read_parquet(output / "damage_by_unit_def")
    assert len(damage) == 0
    assert list(damage.columns) == ["unit_def_id", "total_damage_dealt", "hits", "replay_id"]
    engagements = pd.read_parquet(output / "combat_engagement_summary")
    assert len(engagements) == 0
    assert "involved_players" in engagements.columns
    stream = pd.read_parquet(output / "damage_log")
    assert len(stream) == 0
    assert list(stream.columns[:-1]) == ASPECTS["damage_log"].columns


@pytest.mark.slow
def test_generated_corpus_with_broken_replays(tmp_path, client, registry):
    from mpp_dask.generate import generate_replay

    corpus = tmp_path / "corpus"
    for index in range(30):
        generate_replay(corpus / f"match_{index:02d}", minutes=1, teams=2, seed=index)
    generate_replay(corpus / "broken_cut", minutes=1, teams=2, seed=99)
    cut = corpus / "broken_cut" / "damage_log.mpk"
    cut.write_bytes(cut.read_bytes()[:-3])
    generate_replay(corpus / "broken_garbage", minutes=1, teams=2, seed=98)
    garbage = corpus / "broken_garbage" / "team_stats.mpk"
    data = garbage.read_bytes()
    garbage.write_bytes(data[:100] + b"\xc1" * 8 + data[100:])

    output = tmp_path / "out"
    plan = pipeline.RunPlan(output_dir=str(output), streams=["team_stats", "damage_log"],
                            stats=["resources_by_player", "damage_by_unit_def"])
    sources = resolve_replays(str(corpus))
    outcomes = pipeline.run(sources, plan, registry, client)

    status = {o.replay_id: o.status for o in outcomes}
    assert sorted(k for k, v in status.items() if v == "failed") == ["broken_cut",
                                                                    "broken_garbage"]
    assert sum(v == "done" for v in status.values()) == 30
    errors = {o.replay_id: str(o.error) for o in outcomes if o.error}
    assert "truncated row" in errors["broken_cut"]
    assert "team_stats.mpk" in errors["broken_garbage"]

    resources = pd.read_parquet(output / "resources_by_player")
    assert resources["replay_id"].nunique() == 30
    assert (resources.groupby("replay_id", observed=True).size() == 3).all()
    stream = ds.dataset(output / "team_stats", format="parquet", partitioning="hive")
    assert stream.count_rows() == sum(o.rows_per_aspect["team_stats"] for o in outcomes
                                      if o.status == "done")

    again = pipeline.run(sources, plan, registry, client)
    assert sum(o.status == "skipped" for o in again) == 30
    assert sum(o.status == "failed" for o in again) == 2


def test_rerun_removes_tables_it_no_longer_writes(tmp_path, client, registry):
    replay = tmp_path / "in" / "r"
    rows = [team_stats_row(300, 0, 10), [300, 1, "bad"] + [0] * 36]
    write_aspect(replay, "team_stats", rows)
    output = tmp_path / "out"
    plan = pipeline.RunPlan(output_dir=str(output), streams=["team_stats"],
                            stats=["resources_by_player", "player_collaboration"],
                            skip_on_error=True)
    pipeline.run([ReplaySource("r", str(replay))], plan, registry, client)
    assert (output / "_errors" / "replay_id=r").exists()
    assert (output / "player_collaboration" / "replay_id=r").exists()

    tiny_team_stats_replay(replay)
    plan = pipeline.RunPlan(output_dir=str(output), stats=["resources_by_player"])
    [outcome] = pipeline.run([ReplaySource("r", str(replay))], plan, registry, client)

    assert outcome.status == "done"
    assert not (output / "_errors" / "replay_id=r").exists()
    assert not (output / "player_collaboration" / "replay_id=r").exists()
    assert not (output / "team_stats" / "replay_id=r").exists()
    assert len(pd.read_parquet(output / "resources_by_player")) == 2
