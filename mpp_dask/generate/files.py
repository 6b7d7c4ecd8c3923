"""Write a synthetic replay folder: every aspect file, ``defs.csv`` and ``game_meta.json``."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mpp_dask.generate.aspects import _combat_counters, _player_names, _ticks, aspect_blocks
from mpp_dask.generate.encode import RowBlock, encode_block
from mpp_dask.generate.geometry import terrain_height
from mpp_dask.generate.plan import MAP_SQUARES, TEAM_STATS_STEP, ReplayPlan, plan_replay
from mpp_dask.generate.unit_defs import _FACTIONS, UnitDefs
from mpp_dask.schema import ASPECTS, FRAMES_PER_SECOND, Aspect

# Rows encoded at once: bounds the encoder's scratch memory (about 100 bytes a row).
_ENCODE_ROWS = 1 << 17


def generate_replay(out_dir: str | Path, *, minutes: float = 10, teams: int = 4, seed: int = 0,
                    units_per_team: int | None = None) -> dict[str, int]:
    """Write a deterministic synthetic replay folder.

    The folder gets ``<aspect>.mpk`` for every aspect of the schema, ``defs.csv``
    and ``game_meta.json``. The same arguments give byte-identical files.

    Size grows with units and match length. Every live mobile unit (about two
    thirds of all units) gets a unit_positions row of about 28 bytes every 150
    frames, and a quarter of the live units a unit_state_snapshots row. Over
    runs of 10 to 60 minutes the total was close to ``teams * units_per_team *
    (450 + 69 * minutes)`` bytes, an estimate:

    - ``minutes=10, teams=4`` (the defaults): 0.9 MB, 40 thousand rows;
    - ``minutes=60, teams=16, units_per_team=13500``: 1.0 GB, 38 million rows,
      63% of the bytes in unit_positions and 24% in unit_state_snapshots.

    ``scripts/time_generate.py`` measures a configuration. On 2 AMD EPYC cores
    shared with other jobs, two runs of the 1 GB replay took 63 s and 70 s. Peak
    resident memory was 340 MB because rows are built and encoded one time
    window at a time.

    Parameters
    ----------
    out_dir : str or Path
        Folder to write; created if missing. Existing files of the same names
        are replaced.
    minutes : float
        Match length in game minutes (1,800 frames each).
    teams : int
        Player teams, split into two ally teams; the Gaia team comes on top
        with the next team id.
    seed : int
        Seed of the random numbers (non-negative).
    units_per_team : int, optional
        Units each team creates over the match, its commander included. The
        default is 20 per game minute (at least 10), about as many as in a real
        8-vs-8 game.

    Returns
    -------
    dict[str, int]
        Rows written per aspect.

    Raises
    ------
    ValueError
        If an argument is out of range.
    """
    plan = plan_replay(minutes=minutes, teams=teams, seed=seed, units_per_team=units_per_team)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    rows = {}
    for aspect in ASPECTS.values():
        rows[aspect.name] = _write_aspect(folder / aspect.file_name, aspect,
                                          aspect_blocks(plan, aspect.name))
    _write_defs(folder / "defs.csv", plan.defs)
    _write_game_meta(folder / "game_meta.json", plan)
    return rows


def _write_aspect(path: Path, aspect: Aspect, blocks: Iterator[RowBlock]) -> int:
    """Encode blocks in batches of about _ENCODE_ROWS rows and write them to ``path``."""
    written = 0
    pending: list[RowBlock] = []
    pending_rows = 0
    with open(path, "wb") as out:
        for block in blocks:
            pending.append(block)
            pending_rows += len(block)
            if pending_rows >= _ENCODE_ROWS:
                written += _write_batch(out, aspect, pending)
                pending, pending_rows = [], 0
        if pending_rows:
            written += _write_batch(out, aspect, pending)
    return written


def _write_batch(out, aspect: Aspect, blocks: list[RowBlock]) -> int:
    batch = RowBlock.concat(blocks)
    for start in range(0, len(batch), _ENCODE_ROWS):
        out.write(encode_block(aspect, batch.rows(start, start + _ENCODE_ROWS)))
    return len(batch)


def _write_defs(path: Path, defs: UnitDefs) -> None:
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["id", "name", "translatedTooltip", "translatedHumanName"])
        for row in zip(defs.ids.tolist(), defs.names, defs.tooltips, defs.human_names):
            writer.writerow(row)


_MAP_NAME = "Synthetic Flats"


def _write_game_meta(path: Path, plan: ReplayPlan) -> None:
    """Write match metadata in the shape of real exports, with made-up values.

    ``awards.mostDamageTaken`` is the team with the largest final
    team_stats.damage_received, and its value that counter divided by 10.
    """
    ticks = _ticks(0, plan.end_frame + 1, TEAM_STATS_STEP)
    damage = _combat_counters(plan, ticks)["damage_received"]
    final_damage = damage[-1] if len(ticks) else np.zeros(plan.teams, dtype=np.int64)
    max_damage_team = int(np.argmax(final_damage))
    losing_side = int(plan.ally[max_damage_team])
    start_y = terrain_height(plan.start_x, plan.start_z)
    faction_names = [label for _, label in _FACTIONS]
    names = _player_names(plan.teams)
    # Start boxes as shares of the map, top and bottom measured along z.
    start_boxes = ({"bottom": 1, "left": 0, "top": 0.8, "right": 1},
                   {"bottom": 0.2, "left": 0, "top": 0, "right": 1})
    ally_teams = []
    for side in (0, 1):
        players = [{
            "playerId": team, "teamId": team, "name": names[team],
            "faction": faction_names[plan.faction[team]],
            "startPos": {"x": float(plan.start_x[team]), "y": round(float(start_y[team]), 3),
                         "z": float(plan.start_z[team])},
        } for team in np.flatnonzero(plan.ally == side).tolist()]
        ally_teams.append({"allyTeamId": side, "winningTeam": side != losing_side,
                           "startBox": start_boxes[side], "Players": players})
    duration_ms = round(plan.end_frame / FRAMES_PER_SECOND * 1000)
    meta = {
        "id": f"synthetic_{plan.teams}p_seed{plan.seed}",
        "engineVersion": "synthetic",
        "gameVersion": "mpp-dask synthetic replay",
        "durationMs": duration_ms,
        "fullDurationMs": duration_ms,
        "gameEndedNormally": True,
        "Map": {"id": 0, "scriptName": _MAP_NAME, "fileName": "synthetic_flats",
                "width": MAP_SQUARES[0], "height": MAP_SQUARES[1]},
        "hostSettings": {"numallyteams": "2", "numteams": str(plan.teams),
                         "startpostype": "2", "mapname": _MAP_NAME},
        "AllyTeams": ally_teams,
        "awards": {"mostDamageTaken": {"teamId": max_damage_team,
                                       "value": int(final_damage[max_damage_team]) / 10}},
    }
    path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
