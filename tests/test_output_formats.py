"""Tables written as gzip JSON Lines, gzip MessagePack and CSV, read back with common tools.

Every file is compared with the Parquet table of the same run, read back by pyarrow:
the same rows in the same order, and the same values with the same Python types.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from pathlib import Path

import fsspec
import msgpack
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from hypothesis import strategies as st

from helpers import pack_rows, team_stats_row, tiny_team_stats_replay, write_aspect
from mpp_dask import pipeline, settings
from mpp_dask.cli.main import cli
from mpp_dask.errors import ConfigError, DecodeError
from mpp_dask.generate import generate_replay
from mpp_dask.output.formats import file_name, resolve_output_formats, write_file
from mpp_dask.reading.replays import ReplaySource

FILE_FORMATS = ["jsonl-gzip", "msgpack-gzip", "csv"]
ALL_FORMATS = ["parquet", *FILE_FORMATS]
CLUSTER = ["--n-workers", "1", "--dashboard-address", "127.0.0.1:0"]


@pytest.fixture
def restore_settings():
    """Undo settings that a --config file or an option loads into the dask config."""
    yield
    settings.reset_layers()


# Reading the files back with common tools.

def _format_file(output: Path, output_format: str, table: str, replay_id: str) -> Path:
    return (output / "_formats" / output_format / table / f"replay_id={replay_id}"
            / file_name(table, output_format))


def _read_jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        return [json.loads(line) for line in stream]


def _read_msgpack(path: Path) -> tuple[dict, list[dict]]:
    with gzip.open(path, "rb") as stream:
        header, *rows = msgpack.Unpacker(stream, raw=False)
    return header, [dict(zip(header["columns"], row)) for row in rows]


def _null_or_json(text: str):
    return None if text == "" else json.loads(text)


def _read_csv(path: Path, schema: pa.Schema) -> list[dict]:
    """Read a CSV file with the dtypes of ``schema``, so that values keep their types."""
    dtypes, converters = {}, {}
    for field in schema:
        if pa.types.is_list(field.type):
            converters[field.name] = _null_or_json
        elif pa.types.is_integer(field.type):
            dtypes[field.name] = "Int64"
        elif pa.types.is_floating(field.type):
            dtypes[field.name] = "float64"
        elif pa.types.is_boolean(field.type):
            dtypes[field.name] = "boolean"
        else:
            dtypes[field.name] = "string"
    frame = pd.read_csv(path, dtype=dtypes, converters=converters, keep_default_na=False,
                        na_values=[""])
    return [{name: _plain(value) for name, value in record.items()}
            for record in frame.astype(object).to_dict(orient="records")]


def _plain(value):
    if isinstance(value, list):
        return value
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _read_format(path: Path, output_format: str, schema: pa.Schema) -> list[dict]:
    if output_format == "jsonl-gzip":
        return _read_jsonl(path)
    if output_format == "msgpack-gzip":
        return _read_msgpack(path)[1]
    return _read_csv(path, schema)


def _read_parquet(output: Path, table: str, replay_id: str) -> tuple[pa.Schema, list[dict]]:
    dataset = ds.dataset(output / table, format="parquet", partitioning="hive")
    arrow = dataset.to_table(filter=ds.field("replay_id") == replay_id)
    arrow = arrow.drop_columns(["replay_id"])
    return arrow.schema, arrow.to_pylist()


def _typed(value):
    """Pair a value with its type, so that 1, 1.0 and True compare unequal."""
    if isinstance(value, list):
        return ("list", [_typed(item) for item in value])
    return (type(value).__name__, value)


def _typed_rows(records: list[dict], columns: list[str]) -> list[list]:
    return [[_typed(record[column]) for column in columns] for record in records]


def _assert_formats_match_parquet(output: Path, table: str, replay_id: str) -> int:
    """Compare every file format of a table with its Parquet table and return the row count."""
    schema, expected = _read_parquet(output, table, replay_id)
    columns = schema.names
    for output_format in FILE_FORMATS:
        path = _format_file(output, output_format, table, replay_id)
        records = _read_format(path, output_format, schema)
        assert [list(record) for record in records] == [columns] * len(records), (
            table, output_format)
        assert _typed_rows(records, columns) == _typed_rows(expected, columns), (
            table, output_format)
    return len(expected)


# Values of every kind, written by one writer call per format.

SAMPLE_TEXT = 'quote " , comma\nnew line é\rreturn'


def _sample_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "count": pd.Series([1, 2**62 + 1, -3], dtype="int64"),
        "maybe": pd.Series([7, None, -(2**63)], dtype="Int64"),
        "ratio": pd.Series([0.1 + 0.2, float("nan"), 1e-300], dtype="float64"),
        "kind": pd.Categorical(["a", None, "b,c"], categories=["a", "b,c", "unused"]),
        "flag": pd.Series([True, False, True], dtype="bool"),
        "maybe_flag": pd.Series([True, None, False], dtype="boolean"),
        "name": pd.Series(["plain", None, SAMPLE_TEXT], dtype="string"),
        "players": pd.Series([[1, 2], None, []], dtype=pd.ArrowDtype(pa.list_(pa.int64()))),
    })


SAMPLE_ROWS = [
    {"count": 1, "maybe": 7, "ratio": 0.30000000000000004, "kind": "a", "flag": True,
     "maybe_flag": True, "name": "plain", "players": [1, 2]},
    {"count": 2**62 + 1, "maybe": None, "ratio": None, "kind": None, "flag": False,
     "maybe_flag": None, "name": None, "players": None},
    {"count": -3, "maybe": -(2**63), "ratio": 1e-300, "kind": "b,c", "flag": True,
     "maybe_flag": False, "name": SAMPLE_TEXT, "players": []},
]


def _write_sample(folder: Path, frame: pd.DataFrame, output_format: str) -> Path:
    path = folder / file_name("sample", output_format)
    write_file(frame, output_format=output_format, table="sample", replay_id="r",
               fs=fsspec.filesystem("file"), path=str(path))
    return path


@pytest.mark.parametrize("output_format", FILE_FORMATS)
def test_sample_values_round_trip(tmp_path, output_format):
    frame = _sample_frame()
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    path = _write_sample(tmp_path, frame, output_format)

    records = _read_format(path, output_format, schema)

    columns = list(frame.columns)
    assert [list(record) for record in records] == [columns] * 3
    assert _typed_rows(records, columns) == _typed_rows(SAMPLE_ROWS, columns)


def test_csv_text_of_sample(tmp_path):
    path = _write_sample(tmp_path, _sample_frame(), "csv")

    lines = path.read_bytes().decode("utf-8").split("\r\n")

    assert lines[0] == "count,maybe,ratio,kind,flag,maybe_flag,name,players"
    assert lines[1] == '1,7,0.30000000000000004,a,true,true,plain,"[1,2]"'
    assert lines[2] == "4611686018427387905,,,,false,,,"
    assert lines[3] == ('-3,-9223372036854775808,1e-300,"b,c",true,false,'
                        '"quote "" , comma\nnew line é\rreturn",[]')
    assert lines[4] == ""


def test_msgpack_header_names_columns_and_types(tmp_path):
    path = _write_sample(tmp_path, _sample_frame(), "msgpack-gzip")

    header, rows = _read_msgpack(path)

    assert header["table"] == "sample"
    assert header["replay_id"] == "r"
    assert header["columns"] == list(_sample_frame().columns)
    assert header["types"] == ["int64", "int64", "float64", "category", "bool", "bool",
                               "string", "list<int64>"]
    assert len(rows) == 3


def test_msgpack_header_is_own_gzip_member(tmp_path):
    path = _write_sample(tmp_path, _sample_frame(), "msgpack-gzip")
    data = path.read_bytes()

    first_member = zlib.decompressobj(wbits=31)
    header = msgpack.unpackb(first_member.decompress(data), raw=False)

    assert first_member.eof
    assert header["table"] == "sample"
    assert first_member.unused_data[:3] == b"\x1f\x8b\x08"


def test_empty_frame_writes_header_only(tmp_path):
    frame = _sample_frame().iloc[:0]
    schema = pa.Schema.from_pandas(frame, preserve_index=False)

    for output_format in FILE_FORMATS:
        path = _write_sample(tmp_path, frame, output_format)
        assert _read_format(path, output_format, schema) == [], output_format

    header, rows = _read_msgpack(tmp_path / file_name("sample", "msgpack-gzip"))
    assert header["columns"] == list(frame.columns)
    assert rows == []


ROW = st.fixed_dictionaries({
    "number": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "value": st.floats(allow_nan=False, width=64),
    # An empty string is an empty CSV field, which reads back as null.
    "text": st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1),
    "flag": st.booleans(),
    "items": st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=3),
})


@hypothesis_settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(ROW, max_size=8))
def test_any_values_round_trip(tmp_path, records):
    frame = pd.DataFrame({
        "number": pd.Series([r["number"] for r in records], dtype="int64"),
        "value": pd.Series([r["value"] for r in records], dtype="float64"),
        "text": pd.Series([r["text"] for r in records], dtype="string"),
        "flag": pd.Series([r["flag"] for r in records], dtype="bool"),
        "items": pd.Series([r["items"] for r in records],
                           dtype=pd.ArrowDtype(pa.list_(pa.int64()))),
    })
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    columns = list(frame.columns)

    for output_format in FILE_FORMATS:
        path = _write_sample(tmp_path, frame, output_format)
        read_back = _read_format(path, output_format, schema)
        assert _typed_rows(read_back, columns) == _typed_rows(records, columns), output_format


def test_resolve_output_formats():
    assert resolve_output_formats(["csv", "parquet", "csv"]) == ["csv", "parquet"]
    assert resolve_output_formats("jsonl-gzip") == ["jsonl-gzip"]
    with pytest.raises(ConfigError, match=r"unknown output format 'xml'; valid formats: "
                                          r"parquet, jsonl-gzip, msgpack-gzip, csv"):
        resolve_output_formats(["parquet", "xml"])
    with pytest.raises(ConfigError, match="no output format given"):
        resolve_output_formats([])


# Whole runs on a LocalCluster.

def _generated_replay(folder: Path) -> Path:
    """A one-minute generated replay, plus commands with a null and an unknown command."""
    generate_replay(folder, minutes=1, teams=2, seed=3)
    with open(folder / "commands_log.mpk", "ab") as stream:
        stream.write(pack_rows([[1800, 0, 939, 25, None, 1, None, 0, 0, 0],
                                [1800, 1, 829, 10, 999, 1, 5, 1, 2, 3]]))
    return folder


def _files(output: Path) -> list[Path]:
    return sorted(path.relative_to(output) for path in output.rglob("*") if path.is_file())


def test_generated_replay_formats_match_parquet(tmp_path, client, registry):
    replay = _generated_replay(tmp_path / "in" / "gen")
    output = tmp_path / "out"
    plan = pipeline.RunPlan(output_dir=str(output), streams=["all"], blocksize=2048,
                            output_formats=ALL_FORMATS)

    [outcome] = pipeline.run([ReplaySource("gen", str(replay))], plan, registry, client)

    assert outcome.status == "done", outcome.error
    assert "combat_engagement_summary" in outcome.tables
    parts = list((output / "commands_log" / "replay_id=gen").glob("part.*.parquet"))
    assert len(parts) > 1
    for table in outcome.tables:
        _assert_formats_match_parquet(output, table, "gen")

    for output_format, arrow_format in (("csv", "csv"), ("jsonl-gzip", "json")):
        dataset = ds.dataset(output / "_formats" / output_format / "commands_log",
                             format=arrow_format, partitioning="hive")
        table = dataset.to_table()
        assert table.num_rows == outcome.rows_per_aspect["commands_log"], output_format
        assert set(table.column("replay_id").to_pylist()) == {"gen"}, output_format
    commands = _read_jsonl(_format_file(output, "jsonl-gzip", "commands_log", "gen"))
    assert len(commands) == outcome.rows_per_aspect["commands_log"]
    assert [row["cmd_name"] for row in commands[-2:]] == [None, None]
    assert commands[-1]["target_unit_id"] == 5
    assert not any(output.rglob("_chunks"))
    assert not (output / ".staging").exists()


def test_manifest_records_formats_and_files(tmp_path, client, registry):
    replay = tiny_team_stats_replay(tmp_path / "in" / "r")
    output = tmp_path / "out"
    plan = pipeline.RunPlan(output_dir=str(output), stats=["resources_by_player"],
                            output_formats=["csv", "parquet"])

    pipeline.run([ReplaySource("r", str(replay))], plan, registry, client)

    manifest = json.loads((output / "_manifests" / "r" / "_manifest.json").read_text())
    assert manifest["formats"] == ["csv", "parquet"]
    assert manifest["fingerprint"]["output_formats"] == ["csv", "parquet"]
    assert manifest["files"] == {
        "csv": {"resources_by_player": [
            "_formats/csv/resources_by_player/replay_id=r/resources_by_player.csv"]},
        "parquet": {"resources_by_player": [
            "resources_by_player/replay_id=r/part.000000.parquet"]},
    }
    for paths in manifest["files"].values():
        for path in paths["resources_by_player"]:
            assert (output / path).is_file()


def test_new_format_reruns_and_old_formats_removed(tmp_path, client, registry):
    replay = tiny_team_stats_replay(tmp_path / "in" / "r")
    other = tiny_team_stats_replay(tmp_path / "in" / "other")
    output = tmp_path / "out"
    sources = [ReplaySource("r", str(replay))]
    plan = pipeline.RunPlan(output_dir=str(output), stats=["resources_by_player"],
                            streams=["team_stats"])
    pipeline.run([*sources, ReplaySource("other", str(other))],
                 pipeline.RunPlan(output_dir=str(output), stats=["resources_by_player"],
                                  streams=["team_stats"], output_formats=ALL_FORMATS),
                 registry, client)
    pipeline.run(sources, plan, registry, client)
    assert not _format_file(output, "csv", "team_stats", "r").exists()

    plan.output_formats = ["parquet", "csv", "jsonl-gzip"]
    [added] = pipeline.run(sources, plan, registry, client)
    [again] = pipeline.run(sources, plan, registry, client)
    assert added.status == "done"
    assert again.status == "skipped"
    assert _format_file(output, "csv", "team_stats", "r").is_file()
    assert _format_file(output, "jsonl-gzip", "resources_by_player", "r").is_file()

    plan.output_formats = ["msgpack-gzip"]
    plan.streams = []
    [fewer] = pipeline.run(sources, plan, registry, client)
    assert fewer.status == "done"
    assert [p for p in _files(output) if "replay_id=r" in str(p)] == [Path(
        "_formats/msgpack-gzip/resources_by_player/replay_id=r/resources_by_player.msgpack.gz")]
    for output_format in FILE_FORMATS:
        assert _format_file(output, output_format, "team_stats", "other").is_file()
    manifest = json.loads((output / "_manifests" / "r" / "_manifest.json").read_text())
    assert manifest["formats"] == ["msgpack-gzip"]
    assert list(manifest["files"]) == ["msgpack-gzip"]


def test_failed_run_leaves_no_format_files(tmp_path, client, registry):
    replay = tiny_team_stats_replay(tmp_path / "in" / "r")
    output = tmp_path / "out"
    plan = pipeline.RunPlan(output_dir=str(output), stats=["resources_by_player"],
                            streams=["team_stats"], output_formats=ALL_FORMATS,
                            blocksize=256)
    pipeline.run([ReplaySource("r", str(replay))], plan, registry, client)
    before = _files(output)

    # Only the last partition is invalid, so the others write their chunks first.
    with open(replay / "team_stats.mpk", "ab") as stream:
        stream.write(b"\x93\x01")
    [failed] = pipeline.run([ReplaySource("r", str(replay))], plan, registry, client)
    fresh = tmp_path / "fresh"
    plan.output_dir = str(fresh)
    [failed_fresh] = pipeline.run([ReplaySource("r", str(replay))], plan, registry, client)

    assert isinstance(failed.error, DecodeError)
    assert _files(output) == sorted([*before, Path("_manifests/r/_last_failure.json")])
    assert failed_fresh.status == "failed"
    assert _files(fresh) == [Path("_manifests/r/_manifest.json")]
    assert not (output / ".staging").exists()
    assert not (fresh / ".staging").exists()


def test_errors_table_in_every_format(tmp_path, client, registry):
    replay = tmp_path / "in" / "r"
    write_aspect(replay, "team_stats", [team_stats_row(300, 0, 10),
                                        [300, 1, "bad"] + [0] * 36,
                                        team_stats_row(600, 0, 20)])
    output = tmp_path / "out"
    plan = pipeline.RunPlan(output_dir=str(output), streams=["team_stats"],
                            skip_on_error=True, output_formats=ALL_FORMATS)

    [outcome] = pipeline.run([ReplaySource("r", str(replay))], plan, registry, client)

    assert outcome.status == "done"
    assert _assert_formats_match_parquet(output, "_errors", "r") == 1
    [error] = _read_jsonl(_format_file(output, "jsonl-gzip", "_errors", "r"))
    assert error["row"] == 1
    assert error["field"] == "metal_used"
    assert error["reason"] == "wrong type"
    header, _ = _read_msgpack(_format_file(output, "msgpack-gzip", "_errors", "r"))
    assert header["types"][2:4] == ["int64", "int64"]


@pytest.mark.slow
def test_example_formats_match_parquet(example_replay, tmp_path, client, registry):
    stats = ["damage_by_unit_def", "resources_by_player", "combat_engagement_summary"]
    output = tmp_path / "out"
    plan = pipeline.RunPlan(output_dir=str(output), stats=stats, streams=["start_pos"],
                            output_formats=ALL_FORMATS, blocksize=512 * 1024)

    [outcome] = pipeline.run([ReplaySource("ex", str(example_replay))], plan, registry,
                             client)

    assert outcome.status == "done", outcome.error
    rows = {table: _assert_formats_match_parquet(output, table, "ex")
            for table in [*stats, "start_pos"]}
    assert rows["start_pos"] == 16
    assert all(count > 0 for count in rows.values())
    engagements = _read_jsonl(_format_file(output, "jsonl-gzip", "combat_engagement_summary",
                                           "ex"))
    assert all(isinstance(row["involved_players"], list) for row in engagements)
    players = _read_csv(_format_file(output, "csv", "start_pos", "ex"),
                        _read_parquet(output, "start_pos", "ex")[0])
    assert [row["player_name"] for row in players[:2]] == ["player_00", "player_01"]


# The command line.

def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_option_overrides_formats_setting(tmp_path, restore_settings):
    tiny_team_stats_replay(tmp_path / "in")
    settings_file = tmp_path / "formats.yaml"
    settings_file.write_text("mpp-dask:\n  output:\n    formats: [msgpack-gzip]\n")
    output = tmp_path / "out"

    result = _invoke("run", "r", "-i", str(tmp_path / "in"), "-o", str(output),
                     "-u", "team_stats", "-s", "resources_by_player",
                     "--config", str(settings_file), "--output-format", "csv", *CLUSTER)

    assert result.exit_code == 0, result.output
    assert _files(output) == [
        Path("_formats/csv/resources_by_player/replay_id=r/resources_by_player.csv"),
        Path("_formats/csv/team_stats/replay_id=r/team_stats.csv"),
        Path("_manifests/r/_manifest.json"),
    ]
    team_stats = pd.read_csv(_format_file(output, "csv", "team_stats", "r"))
    assert team_stats[["frame", "team_id"]].values.tolist() == [
        [300, 0], [300, 1], [600, 0], [600, 1], [900, 0], [900, 1]]


def test_formats_setting_in_dry_run_and_config(tmp_path, restore_settings):
    tiny_team_stats_replay(tmp_path / "in")
    settings_file = tmp_path / "formats.yaml"
    settings_file.write_text("mpp-dask:\n  output:\n    formats: [jsonl-gzip, csv]\n")

    dry_run = _invoke("run", "r", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                      "--config", str(settings_file), "--dry-run")
    printed = _invoke("config", "--config", str(settings_file))

    assert dry_run.exit_code == 0, dry_run.output
    assert "  output formats: jsonl-gzip, csv" in dry_run.output
    assert printed.exit_code == 0, printed.output
    line = next(line for line in printed.output.splitlines()
                if line.startswith("mpp-dask.output.formats "))
    assert "[jsonl-gzip, csv]" in line
    assert f"user file {settings_file}" in line


def test_invalid_formats_setting_rejected(tmp_path, restore_settings):
    tiny_team_stats_replay(tmp_path / "in")
    settings_file = tmp_path / "formats.yaml"
    settings_file.write_text("mpp-dask:\n  output:\n    formats: [parquet, xml]\n")

    result = _invoke("run", "r", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                     "--config", str(settings_file), *CLUSTER)

    assert result.exit_code == 2
    assert "invalid setting mpp-dask.output.formats" in result.output
    assert "unknown output format 'xml'" in result.output
    assert not (tmp_path / "out").exists()


def test_unknown_format_option_rejected(tmp_path):
    tiny_team_stats_replay(tmp_path / "in")

    result = _invoke("run", "r", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                     "--output-format", "xml")

    assert result.exit_code == 2
    assert "Invalid value for '--output-format'" in result.output
