"""Build the rows of each aspect file from the match plan, as blocks of columns."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np

from mpp_dask.generate.encode import RowBlock
from mpp_dask.generate.geometry import _heading, _rounded, terrain_height, unit_motion
from mpp_dask.generate.plan import (CONSTRUCTION_STEP, ENVIRONMENT_STEP, POSITION_STEP,
                                    SNAPSHOT_STEP, TEAM_STATS_STEP, UNIT_ECONOMY_STEP,
                                    ReplayPlan, _ceil_to)
from mpp_dask.generate.unit_defs import (_BUILT_BY_FACTORY, _MOBILE_ROLES, AIRCRAFT, COMMANDER,
                                         ECONOMY, FACTORY, GROUND)
from mpp_dask.schema import ENUMS, FRAMES_PER_MINUTE, FRAMES_PER_SECOND

_SNAPSHOT_SHARE = 0.25          # share of live units in each unit_state_snapshots tick
_WINDOW_FRAMES = 300            # frames encoded together, which bounds memory

# Cumulative energy counters of real exports become float32 whole numbers from
# 2**24 on, where float32 stops holding every integer.
_FLOAT32_EXACT_LIMIT = 1 << 24
_FLOAT_COUNTERS = ("energy_used", "energy_produced")


def _windows(end_frame: int) -> Iterator[tuple[int, int]]:
    """Yield consecutive frame windows [start, stop) that cover frames 0 to end_frame."""
    for start in range(0, end_frame + 1, _WINDOW_FRAMES):
        yield start, min(start + _WINDOW_FRAMES, end_frame + 1)


def _ticks(start: int, stop: int, step: int) -> np.ndarray:
    """Return the multiples of ``step``, from ``step`` on, that lie in [start, stop)."""
    first = max(step, _ceil_to(start, step))
    return np.arange(first, stop, step, dtype=np.int64)


def _rows_at_ticks(ticks: np.ndarray, rows: np.ndarray, first: np.ndarray,
                   stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (frame, row) for every tick and every row with ``first <= tick < stop``.

    ``first`` and ``stop`` are per row. The result is ordered by tick, then by the
    order of ``rows``.
    """
    frames, selected = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    if len(ticks):
        near = (first <= ticks[-1]) & (stop > ticks[0])
        rows, first, stop = rows[near], first[near], stop[near]
    for tick in ticks:
        live = rows[(first <= tick) & (stop > tick)]
        selected.append(live)
        frames.append(np.full(len(live), tick, dtype=np.int64))
    return np.concatenate(frames), np.concatenate(selected)


def _in_window(frames: np.ndarray, start: int, stop: int) -> slice:
    """Return the slice of sorted ``frames`` that lies in [start, stop)."""
    return slice(*np.searchsorted(frames, [start, stop], side="left"))


def _merge_sources(sources: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate row sources and order the rows by frame, then by source."""
    merged = {name: np.concatenate([source[name] for source in sources]) for name in sources[0]}
    rank = np.concatenate([np.full(len(source["frame"]), index)
                           for index, source in enumerate(sources)])
    order = np.lexsort((rank, merged["frame"]))
    return {name: values[order] for name, values in merged.items()}


def _unit_positions(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Sample every live mobile unit every POSITION_STEP frames."""
    units, defs = plan.units, plan.defs
    mobile = np.flatnonzero(np.isin(units.role, _MOBILE_ROLES))
    for start, stop in _windows(plan.end_frame):
        frame, row = _rows_at_ticks(_ticks(start, stop, POSITION_STEP), mobile,
                                    units.created[mobile], units.destroyed[mobile])
        x, y, z, vx, vy, vz = unit_motion(units, defs, row, frame)
        x, y, z, vx_raw, vy_raw, vz_raw = _rounded(x, y, z, 1000 * vx, 1000 * vy, 1000 * vz)
        yield RowBlock(columns={
            "frame": frame, "unit_id": units.id[row], "unit_def_id": defs.ids[units.def_row[row]],
            "team_id": units.team_at(row, frame), "x": x, "y": y, "z": z,
            "vx": vx_raw, "vy": vy_raw, "vz": vz_raw, "heading": _heading(vx, vz),
        })


def _unit_state_snapshots(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Sample a share of the live units every SNAPSHOT_STEP frames."""
    units, defs = plan.units, plan.defs
    everyone = np.arange(len(units.id))
    for start, stop in _windows(plan.end_frame):
        frame, row = _rows_at_ticks(_ticks(start, stop, SNAPSHOT_STEP), everyone,
                                    units.created, units.destroyed)
        sampled = rng.uniform(0, 1, len(row)) < _SNAPSHOT_SHARE
        frame, row = frame[sampled], row[sampled]
        count = len(row)
        def_row = units.def_row[row]
        max_health = defs.max_health[def_row]

        # Health grows while the unit is built and runs down in the 15 s before its
        # death. Some snapshots catch the unit damaged.
        building = frame < units.finished[row]
        build_span = np.maximum(units.finished[row] - units.created[row], 1)
        built_share = np.clip((frame - units.created[row]) / build_span, 0.05, 1)
        to_death = np.clip((units.destroyed[row] - frame) / 450, 0, 1)
        scratched = np.where(rng.uniform(0, 1, count) < 0.3, rng.uniform(0.5, 1, count), 1)
        health = max_health * np.where(building, built_share, to_death * scratched)

        armed = defs.weapon_id[def_row] > 0
        minutes_alive = np.maximum(frame - units.finished[row], 0) / FRAMES_PER_MINUTE
        experience = 0.03 * minutes_alive * rng.uniform(0.5, 1.5, count)
        experience = np.where(armed, np.minimum(experience, 1.5), 0)
        yield RowBlock(columns={
            "frame": frame, "unit_id": units.id[row], "team_id": units.team_at(row, frame),
            "currentHealth": np.round(health).astype(np.int64), "currentMaxHealth": max_health,
            "experience": np.round(1000 * experience).astype(np.int64),
            "is_being_built": building,
            "is_stunned": building | (rng.uniform(0, 1, count) < 0.01),
            "is_cloaked": (units.role[row] == GROUND) & (rng.uniform(0, 1, count) < 0.01),
            "is_transporting_count": ((units.role[row] == AIRCRAFT)
                                      & (rng.uniform(0, 1, count) < 0.02)).astype(np.int64),
            "current_max_range": defs.max_range[def_row],
            "is_firing": armed & ~building & (rng.uniform(0, 1, count) < 0.03),
        })


def _team_stats(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Write every team's counters every TEAM_STATS_STEP frames, Gaia last."""
    ticks = _ticks(0, plan.end_frame + 1, TEAM_STATS_STEP)
    counters = _combat_counters(plan, ticks)
    counters.update(_economy_counters(plan, rng, ticks))
    teams = plan.gaia_team + 1
    columns = {"frame": np.repeat(ticks, teams), "team_id": np.tile(np.arange(teams), len(ticks))}
    floats = {}
    for name, per_team in counters.items():
        gaia = np.full((len(ticks), 1), _GAIA_COUNTERS.get(name, 0), dtype=np.int64)
        columns[name] = np.hstack([per_team, gaia]).ravel()
    for name in _FLOAT_COUNTERS:
        large = columns[name] >= _FLOAT32_EXACT_LIMIT
        columns[name] = np.where(large, columns[name].astype(np.float32).astype(np.int64),
                                 columns[name])
        floats[name] = large
    yield RowBlock(columns=columns, floats=floats)


# The engine's Gaia team owns nothing here, as in real games, but has storage.
_GAIA_COUNTERS = {"metal_current": 10000, "metal_storage": 10000, "metal_share": 10,
                  "energy_current": 10000, "energy_storage": 10000, "energy_share": 10}


def _combat_counters(plan: ReplayPlan, ticks: np.ndarray) -> dict[str, np.ndarray]:
    """Return the damage, death and transfer counters as (tick, team) arrays.

    Each is the running sum, up to and including the tick, of damage_log and
    unit_events rows.
    """
    units, hits = plan.units, plan.hits

    def running_sum(frames: np.ndarray, teams: np.ndarray, amounts: np.ndarray) -> np.ndarray:
        totals = np.zeros((len(ticks) + 1, plan.teams), dtype=np.int64)
        np.add.at(totals, (np.searchsorted(ticks, frames, side="left"), teams), amounts)
        return np.cumsum(totals[:-1], axis=0)

    known = hits.attacker >= 0
    dead = np.flatnonzero(units.destroyed <= plan.end_frame)
    killed = dead[units.killer[dead] >= 0]
    transferred = np.flatnonzero(units.transfer_frame <= plan.end_frame)
    zeros = np.zeros((len(ticks), plan.teams), dtype=np.int64)
    return {
        "damage_dealt": running_sum(hits.frame[known],
                                    units.team_at(hits.attacker[known], hits.frame[known]),
                                    hits.damage[known]),
        "damage_received": running_sum(hits.frame, units.team_at(hits.victim, hits.frame),
                                       hits.damage),
        "units_killed": running_sum(units.destroyed[killed],
                                    units.team_at(units.killer[killed], units.destroyed[killed]),
                                    1),
        "units_died": running_sum(units.destroyed[dead],
                                  units.team_at(dead, units.destroyed[dead]), 1),
        "units_captured": zeros,
        "units_out_captured": zeros,
        "units_received": running_sum(units.transfer_frame[transferred],
                                      units.new_team[transferred], 1),
        "units_sent": running_sum(units.transfer_frame[transferred], units.team[transferred], 1),
        # A real 8-vs-8 export writes 0 in every row.
        "current_unit_count": zeros,
    }


def _economy_counters(plan: ReplayPlan, rng: np.random.Generator,
                      ticks: np.ndarray) -> dict[str, np.ndarray]:
    """Return resource counters and rates as (tick, team) arrays.

    Income follows the share of the match played to the power 2.5, so economies
    grow late. Cumulative counters are running sums of non-negative amounts per
    tick, and rates are tenths per second over the last tick.
    """
    shape = (len(ticks), plan.teams)
    progress = ticks / plan.end_frame
    growth = np.diff(np.r_[0.0, progress ** 2.5])[:, None]
    energy_total = 1.15 * _FLOAT32_EXACT_LIMIT * plan.economy_scale
    counters = {}
    resources = (("energy", energy_total, 2500), ("metal", energy_total / 20, 200))
    for resource, total, base in resources:
        produced = total * growth * rng.lognormal(0, 0.15, shape) + base
        used = produced * rng.uniform(0.85, 0.99, shape)
        excess = produced * _sometimes(rng, shape, chance=0.1, max_share=0.1)
        sent = produced * _sometimes(rng, shape, chance=0.15, max_share=0.2)
        received = produced * _sometimes(rng, shape, chance=0.15, max_share=0.2)
        storage = 10000 + (plan.economy_scale * (200000 if resource == "metal" else 800000)
                           * progress[:, None] ** 2)
        per_tick = {"used": used, "produced": produced, "excess": excess,
                    "received": received, "sent": sent}
        for name, amounts in per_tick.items():
            counters[f"{resource}_{name}"] = np.round(np.cumsum(amounts, axis=0)).astype(np.int64)
        seconds = TEAM_STATS_STEP / FRAMES_PER_SECOND
        rates = {
            "current": storage * rng.uniform(0.05, 0.7, shape), "storage": storage,
            "pull": used / seconds * rng.uniform(1, 1.3, shape), "income": produced / seconds,
            "expense": used / seconds,
            "share": np.where(rng.uniform(0, 1, shape) < 0.99, 10, 0),
            "Rsent": sent / seconds, "Rreceived": received / seconds, "Rexcess": excess / seconds,
        }
        for name, values in rates.items():
            counters[f"{resource}_{name}"] = np.round(values).astype(np.int64)
    return counters


def _sometimes(rng: np.random.Generator, shape: tuple[int, int], *, chance: float,
               max_share: float) -> np.ndarray:
    """Return random shares up to ``max_share`` in a ``chance`` of the cells, else 0."""
    return np.where(rng.uniform(0, 1, shape) < chance, rng.uniform(0, max_share, shape), 0)


def _unit_events(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Write life-cycle events: CREATED, FINISHED, GIVEN, TAKEN, DESTROYED."""
    units, end = plan.units, plan.end_frame
    sources = []
    for event, frames in (("CREATED", units.created), ("FINISHED", units.finished),
                          ("GIVEN", units.transfer_frame), ("TAKEN", units.transfer_frame),
                          ("DESTROYED", units.destroyed)):
        rows = np.flatnonzero(frames <= end)
        rows = rows[np.argsort(frames[rows], kind="stable")]
        sources.append((event, rows, frames[rows]))
    for start, stop in _windows(end):
        merged = _merge_sources([_event_rows(plan, event, rows[_in_window(frames, start, stop)])
                                 for event, rows, frames in sources])
        lengths = merged.pop("length")
        nulls = {name[:-len("_null")]: merged.pop(name)
                 for name in list(merged) if name.endswith("_null")}
        yield RowBlock(columns=merged, nulls=nulls, lengths=lengths)


# Elements per unit_events row, as in real exports. Most events have 11. Transfers
# add the old and new team (13), buildings their builder (14) and factory-built
# units also the factory's queue length (15).
_EVENT_LENGTH, _TRANSFER_LENGTH, _BUILT_LENGTH, _FACTORY_BUILT_LENGTH = 11, 13, 14, 15


def _event_rows(plan: ReplayPlan, event: str, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Return the columns, null masks and lengths of one event for unit rows."""
    units, defs = plan.units, plan.defs
    frame = {"CREATED": units.created, "FINISHED": units.finished, "GIVEN": units.transfer_frame,
             "TAKEN": units.transfer_frame, "DESTROYED": units.destroyed}[event][rows]
    count = len(rows)
    x, y, z = _rounded(*unit_motion(units, defs, rows, frame)[:3])
    transfer = event in ("GIVEN", "TAKEN")
    killer = units.killer[rows] if event == "DESTROYED" else np.full(count, -1)
    known = killer >= 0
    safe_killer = np.maximum(killer, 0)
    builder = units.builder[rows] if event == "CREATED" else np.full(count, -1)
    built = builder >= 0
    queue_length = units.queue_length[rows] if event == "CREATED" else np.zeros(count, np.int64)

    if event == "CREATED":
        from_factory = np.isin(units.role[rows], _BUILT_BY_FACTORY)
        length = np.select([from_factory, built], [_FACTORY_BUILT_LENGTH, _BUILT_LENGTH],
                           _EVENT_LENGTH)
    else:
        length = np.full(count, _TRANSFER_LENGTH if transfer else _EVENT_LENGTH)
    return {
        "frame": frame, "unit_id": units.id[rows], "unit_def_id": defs.ids[units.def_row[rows]],
        "unit_team_id": units.team_at(rows, frame), "unit_team_id_null": np.full(count, transfer),
        "x": x, "y": y, "z": z,
        "attacker_unit_id": units.id[safe_killer], "attacker_unit_id_null": ~known,
        "attacker_unit_def_id": defs.ids[units.def_row[safe_killer]],
        "attacker_unit_def_id_null": ~known,
        "attacker_team_id": units.team_at(safe_killer, frame), "attacker_team_id_null": ~known,
        "event_type": np.full(count, ENUMS["UnitEvent"].index(event) + 1),
        "old_team_id": units.team[rows], "old_team_id_null": np.full(count, not transfer),
        "new_team_id": units.new_team[rows], "new_team_id_null": np.full(count, not transfer),
        "builder_id": units.id[np.maximum(builder, 0)], "builder_id_null": ~built,
        "factory_queue_len": queue_length,
        "factory_queue_len_null": ~(built & (length == _FACTORY_BUILT_LENGTH)),
        "length": length,
    }


def _damage_log(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Write the planned hits, with the victim's position at each hit."""
    units, defs, hits = plan.units, plan.defs, plan.hits
    for start, stop in _windows(plan.end_frame):
        window = _in_window(hits.frame, start, stop)
        frame, victim, attacker = hits.frame[window], hits.victim[window], hits.attacker[window]
        unknown = attacker < 0
        attacker = np.maximum(attacker, 0)
        x, y, z = _rounded(*unit_motion(units, defs, victim, frame)[:3])
        yield RowBlock(
            columns={
                "frame": frame, "victim_team_id": units.team_at(victim, frame),
                "attacker_team_id": units.team_at(attacker, frame),
                "victim_unit_id": units.id[victim],
                "victim_def_id": defs.ids[units.def_row[victim]],
                "attacker_unit_id": units.id[attacker],
                "attacker_def_id": defs.ids[units.def_row[attacker]],
                "weapon_def_id": hits.weapon_id[window],
                "projectile_id": hits.projectile_id[window],
                "damage": hits.damage[window], "is_paralyzer": hits.paralyzer[window],
                "victim_pos_x": x, "victim_pos_y": y, "victim_pos_z": z,
            },
            nulls={name: unknown for name in ("attacker_team_id", "attacker_unit_id",
                                              "attacker_def_id")},
        )


def _commands_log(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Write the planned orders. Orders without a map position have x, y and z 0."""
    units, commands = plan.units, plan.commands
    for start, stop in _windows(plan.end_frame):
        window = _in_window(commands.frame, start, stop)
        frame, unit = commands.frame[window], commands.unit[window]
        x, z = commands.x[window], commands.z[window]
        positioned = (x != 0) | (z != 0)
        y = np.where(positioned, np.round(terrain_height(x, z)), 0).astype(np.int64)
        yield RowBlock(
            columns={
                "frame": frame, "teamId": units.team_at(unit, frame), "unitId": units.id[unit],
                "cmd_id": commands.cmd_id[window], "cmd_name": commands.cmd_name[window],
                "cmd_tag": commands.cmd_tag[window], "target_unit_id": commands.target[window],
                "x": x.astype(np.int64), "y": y, "z": z.astype(np.int64),
            },
            nulls={"cmd_name": commands.cmd_name[window] == 0,
                   "target_unit_id": commands.target[window] < 0},
        )


def _construction_log(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Write every job every CONSTRUCTION_STEP frames from its start to its end tick."""
    units, defs, builds = plan.units, plan.defs, plan.builds
    jobs = np.arange(len(builds.target))
    # ConstructionAction codes by [assist, step], where step 0 is the first tick,
    # 1 a tick in between and 2 the last tick.
    codes = np.array([[ENUMS["ConstructionAction"].index(f"{kind}_{step}") + 1
                       for step in ("START", "SNAPSHOT", "END")]
                      for kind in ("CONSTRUCTION", "ASSIST")])
    for start, stop in _windows(plan.end_frame):
        frame, job = _rows_at_ticks(_ticks(start, stop, CONSTRUCTION_STEP), jobs,
                                    builds.first_tick, builds.last_tick + 1)
        first, last = frame == builds.first_tick[job], frame == builds.last_tick[job]
        event = codes[builds.assist[job].astype(np.int64), np.select([first, last], [0, 2], 1)]
        builder, target = builds.builder[job], builds.target[job]
        # Builders mostly work at full power, sometimes throttled, and report 0 at the end.
        throttled = np.round(1000 * rng.integers(1, 15, len(job)) / 15)
        power = np.where(rng.uniform(0, 1, len(job)) < 0.7, 1000, throttled)
        yield RowBlock(
            columns={
                "frame": frame, "event": event, "builder_unit_id": units.id[builder],
                "builder_unit_def_id": defs.ids[units.def_row[builder]],
                "builder_player_id": units.team[builder], "target_unit_id": units.id[target],
                "target_unit_def_id": defs.ids[units.def_row[target]],
                "target_player_id": units.team[target],
                "buildpower": np.where(last, 0, power).astype(np.int64),
            },
            nulls={"target_player_id": last & builds.null_target_team[job]},
        )


def _unit_economy(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Write production of economy buildings and factories: start, snapshots, end."""
    units, defs, end = plan.units, plan.defs, plan.end_frame
    producers = np.flatnonzero(np.isin(units.role, (ECONOMY, FACTORY)))
    started = producers[units.finished[producers] <= end]
    started = started[np.argsort(units.finished[started], kind="stable")]
    destroyed = producers[units.destroyed[producers] <= end]
    destroyed = destroyed[np.argsort(units.destroyed[destroyed], kind="stable")]
    wind_ticks, wind = _wind(plan)
    events = ENUMS["UnitEconomyEvent"]

    def rows(event: str, frame: np.ndarray, row: np.ndarray) -> dict[str, np.ndarray]:
        def_row = units.def_row[row]
        count = len(row)
        output = 0 if event == "DESTROYED" else 1
        noise = rng.uniform(0.9, 1.1, count) * output
        # Factories draw resources only while something is in production.
        busy = np.where(units.role[row] == FACTORY, rng.uniform(0, 1, count) < 0.7, 1)
        energy_make = np.where(defs.turbine[def_row], _wind_at(wind_ticks, wind, frame) / 10,
                               defs.energy_make[def_row])
        return {
            "frame": frame, "unit_id": units.id[row], "unit_def_id": defs.ids[def_row],
            "team_id": units.team_at(row, frame),
            "event_type": np.full(count, events.index(event) + 1, dtype=np.int64),
            "metal_make": np.round(defs.metal_make[def_row] * noise).astype(np.int64),
            "metal_use": np.round(defs.metal_use[def_row] * noise * busy).astype(np.int64),
            "energy_make": np.round(energy_make * noise).astype(np.int64),
            "energy_use": np.round(defs.energy_use[def_row] * noise * busy).astype(np.int64),
        }

    for start, stop in _windows(end):
        first = started[_in_window(units.finished[started], start, stop)]
        snapshot_frame, snapshot_row = _rows_at_ticks(
            _ticks(start, stop, UNIT_ECONOMY_STEP), producers,
            units.finished[producers] + 1, units.destroyed[producers])
        last = destroyed[_in_window(units.destroyed[destroyed], start, stop)]
        yield RowBlock(columns=_merge_sources([
            rows("PRODUCTION_STARTED", units.finished[first], first),
            rows("SNAPSHOT", snapshot_frame, snapshot_row),
            rows("DESTROYED", units.destroyed[last], last),
        ]))


def _wind(plan: ReplayPlan) -> tuple[np.ndarray, np.ndarray]:
    """Return the ENVIRONMENT_STEP ticks and the wind strength at each: a bounded random walk."""
    rng = _stream(plan, "wind")
    ticks = _ticks(0, plan.end_frame + 1, ENVIRONMENT_STEP)
    steps = rng.normal(0, 120, len(ticks))
    wind = np.empty(len(ticks))
    level = rng.uniform(400, 1200)
    for index, step in enumerate(steps):
        level = float(np.clip(level + step, 50, 1600))
        wind[index] = level
    return ticks, np.round(wind).astype(np.int64)


def _wind_at(ticks: np.ndarray, wind: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Return the wind of the last tick at or before each frame (the first tick's before it)."""
    if len(ticks) == 0:
        return np.zeros(len(frames))
    return wind[np.maximum(np.searchsorted(ticks, frames, side="right") - 1, 0)]


def _map_envir_econ(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Write wind and tidal strength every ENVIRONMENT_STEP frames (no tide on this map)."""
    ticks, wind = _wind(plan)
    yield RowBlock(columns={"frame": ticks, "wind_strength": wind,
                            "tidal_strength": np.zeros(len(ticks), dtype=np.int64)})


def _start_pos(plan: ReplayPlan, rng: np.random.Generator) -> Iterator[RowBlock]:
    """Write one row per player: name, commander and start position."""
    units, defs = plan.units, plan.defs
    commanders = np.flatnonzero(units.role == COMMANDER)
    commanders = commanders[np.argsort(units.team[commanders])]
    def_row = units.def_row[commanders]
    x, z = plan.start_x, plan.start_z
    yield RowBlock(columns={
        "player_id": np.arange(plan.teams),
        "player_name": np.array(_player_names(plan.teams)),
        "commander_def_name": np.array([defs.names[row] for row in def_row]),
        "unit_def_id": defs.ids[def_row],
        "x": x.astype(np.int64), "y": np.round(terrain_height(x, z)).astype(np.int64),
        "z": z.astype(np.int64),
    })


def _player_names(teams: int) -> list[str]:
    return [f"player_{team:02d}" for team in range(teams)]


_ASPECT_ROWS = {
    "commands_log": _commands_log,
    "construction_log": _construction_log,
    "damage_log": _damage_log,
    "map_envir_econ": _map_envir_econ,
    "start_pos": _start_pos,
    "team_stats": _team_stats,
    "unit_economy": _unit_economy,
    "unit_events": _unit_events,
    "unit_positions": _unit_positions,
    "unit_state_snapshots": _unit_state_snapshots,
}


def _stream(plan: ReplayPlan, name: str) -> np.random.Generator:
    """Return a random stream of its own for one part of the replay."""
    return np.random.default_rng([plan.seed, zlib.crc32(name.encode())])


def aspect_blocks(plan: ReplayPlan, aspect_name: str) -> Iterator[RowBlock]:
    """Yield the rows of one aspect in file order, as blocks of columns.

    Parameters
    ----------
    plan : ReplayPlan
        The match, from :func:`plan_replay`.
    aspect_name : str
        An aspect of :data:`mpp_dask.schema.ASPECTS`.

    Yields
    ------
    RowBlock
        Consecutive rows; frames never decrease across blocks.

    Raises
    ------
    KeyError
        If the generator has no rows for the aspect.
    """
    if aspect_name not in _ASPECT_ROWS:
        raise KeyError(f"the generator has no rows for aspect {aspect_name!r}; "
                       f"it writes {', '.join(sorted(_ASPECT_ROWS))}")
    yield from _ASPECT_ROWS[aspect_name](plan, _stream(plan, aspect_name))
