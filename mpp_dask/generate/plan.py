"""Simulate the match behind a synthetic replay: teams, units, life cycles, hits and orders."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpp_dask.generate.unit_defs import (_ARMED_ROLES, _BUILT_BY_FACTORY, _FACTIONS,
                                         _MOBILE_ROLES, _ROLE_SHARES, AIRCRAFT, COMMANDER,
                                         CONSTRUCTOR, DEFENSE, ECONOMY, FACTORY, GROUND,
                                         UnitDefs, _unit_defs)
from mpp_dask.schema import ENUMS, FRAMES_PER_MINUTE

# Map size in elmos (a Spring map square is 512 elmos): 16 x 24 squares.
MAP_SQUARES = (16, 24)
_ELMOS_PER_SQUARE = 512

# Sampling periods in frames, as in a real 8-vs-8 export.
POSITION_STEP = 150
SNAPSHOT_STEP = 150
TEAM_STATS_STEP = 300
ENVIRONMENT_STEP = 300
CONSTRUCTION_STEP = 60
COMMAND_STEP = 30
UNIT_ECONOMY_STEP = 900

_ACTIONS_PER_TEAM_MINUTE = 30   # group orders; BUILD orders come on top
_PROJECTILE_ID_LIMIT = 1 << 14  # projectile ids wrap here, as in a real export

# Chance that a finished unit dies before the end, and its mean lifetime as a share
# of the match. Commanders and factories never die.
_DEATH_CHANCE = {CONSTRUCTOR: 0.5, GROUND: 0.8, AIRCRAFT: 0.8, ECONOMY: 0.3, DEFENSE: 0.5}
_MEAN_LIFE_SHARE = 0.25



@dataclass
class Units:
    """Every unit of the match as parallel arrays, ordered by creation frame.

    Frames past the end of the match mean "never": ``destroyed`` and
    ``transfer_frame`` are ``end_frame + 1`` for units that survive or stay with
    their team.
    """

    id: np.ndarray
    team: np.ndarray          # team at creation
    def_row: np.ndarray       # row in UnitDefs
    role: np.ndarray
    created: np.ndarray
    finished: np.ndarray
    destroyed: np.ndarray
    builder: np.ndarray       # unit row of the builder, -1 for commanders
    queue_length: np.ndarray  # factory queue length when built by a factory, else -1
    killer: np.ndarray        # unit row of the killer, -1 when unknown or alive
    transfer_frame: np.ndarray  # frame of a transfer to an ally
    new_team: np.ndarray
    spawn_x: np.ndarray
    spawn_z: np.ndarray
    goal_x: np.ndarray
    goal_z: np.ndarray
    travel_frames: np.ndarray
    wander: np.ndarray        # amplitude in elmos of the wandering around the goal
    omega_x: np.ndarray       # radians per frame
    omega_z: np.ndarray
    phase_x: np.ndarray
    phase_z: np.ndarray

    def team_at(self, rows: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """Return the team of each unit row at the matching frame."""
        return np.where(frames >= self.transfer_frame[rows], self.new_team[rows], self.team[rows])


@dataclass
class Hits:
    """Every damage_log hit, ordered by frame. ``attacker`` is -1 when unknown."""

    frame: np.ndarray
    victim: np.ndarray
    attacker: np.ndarray
    damage: np.ndarray        # tenths
    weapon_id: np.ndarray
    projectile_id: np.ndarray
    paralyzer: np.ndarray


@dataclass
class Commands:
    """Every commands_log row, ordered by frame. ``cmd_name`` 0 is null."""

    frame: np.ndarray
    unit: np.ndarray
    cmd_id: np.ndarray
    cmd_name: np.ndarray
    cmd_tag: np.ndarray
    target: np.ndarray        # -1 is null
    x: np.ndarray
    z: np.ndarray


@dataclass
class Builds:
    """Construction and assist jobs, for construction_log."""

    builder: np.ndarray
    target: np.ndarray
    first_tick: np.ndarray
    last_tick: np.ndarray
    assist: np.ndarray
    null_target_team: np.ndarray


@dataclass
class ReplayPlan:
    """One simulated match, from which every file of the replay is written."""

    seed: int
    teams: int
    end_frame: int
    ally: np.ndarray          # ally team of each player team
    faction: np.ndarray
    start_x: np.ndarray
    start_z: np.ndarray
    economy_scale: np.ndarray
    defs: UnitDefs
    units: Units
    builds: Builds
    hits: Hits
    commands: Commands

    @property
    def gaia_team(self) -> int:
        """Team id of the engine's Gaia team: the one after the players."""
        return self.teams


def plan_replay(*, minutes: float = 10, teams: int = 4, seed: int = 0,
                units_per_team: int | None = None) -> ReplayPlan:
    """Simulate a match: teams, units, their life cycles, hits and orders.

    Parameters
    ----------
    minutes, teams, seed, units_per_team
        As for :func:`generate_replay`.

    Returns
    -------
    ReplayPlan

    Raises
    ------
    ValueError
        If an argument is out of range.
    """
    _check_arguments(minutes, teams, seed, units_per_team)
    if units_per_team is None:
        units_per_team = max(10, round(20 * minutes))
    rng = np.random.default_rng(seed)
    end_frame = max(1, round(minutes * FRAMES_PER_MINUTE))
    map_width, map_height = (squares * _ELMOS_PER_SQUARE for squares in MAP_SQUARES)
    defs = _unit_defs()

    ally = (np.arange(teams) >= teams // 2).astype(np.int64)
    faction = rng.integers(0, len(_FACTIONS), teams)
    start_x, start_z = _start_positions(rng, ally, map_width, map_height)
    # Economy strength per team. The strongest team's energy counters pass 2**24 in
    # the last sixth of the match, whatever its length.
    economy_scale = rng.uniform(0.5, 1.0, teams)
    economy_scale *= 1.3 / economy_scale.max()

    units = _plan_units(rng, defs, teams, faction, units_per_team, end_frame)
    builds = _assign_builders(rng, units, defs, end_frame)
    _assign_transfers(rng, units, ally, end_frame)
    _assign_killers(rng, units, ally, end_frame)
    _place_units(rng, units, defs, start_x, start_z, map_width, map_height)
    hits = _plan_hits(rng, units, defs, ally, end_frame)
    commands = _plan_commands(rng, units, builds, defs, teams, end_frame, map_width, map_height)
    return ReplayPlan(seed=seed, teams=teams, end_frame=end_frame, ally=ally, faction=faction,
                      start_x=start_x, start_z=start_z, economy_scale=economy_scale, defs=defs,
                      units=units,
                      builds=builds, hits=hits, commands=commands)


def _check_arguments(minutes: float, teams: int, seed: int, units_per_team: int | None) -> None:
    if not minutes > 0:
        raise ValueError(f"minutes must be positive, got {minutes}")
    if teams < 2:
        raise ValueError(f"teams must be at least 2 (two ally teams), got {teams}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if units_per_team is not None and units_per_team < 2:
        raise ValueError("units_per_team must be at least 2 (a commander and a factory), "
                         f"got {units_per_team}")


def _start_positions(rng: np.random.Generator, ally: np.ndarray, width: int,
                     height: int) -> tuple[np.ndarray, np.ndarray]:
    # Ally team 0 starts near the top edge (large z), ally team 1 near the bottom.
    start_x = np.zeros(len(ally))
    start_z = np.zeros(len(ally))
    for side in (0, 1):
        members = np.flatnonzero(ally == side)
        slots = (np.arange(len(members)) + 0.5) / len(members)
        start_x[members] = width * (slots + rng.uniform(-0.3, 0.3, len(members)) / len(members))
        band = 0.88 if side == 0 else 0.12
        start_z[members] = height * (band + rng.uniform(-0.05, 0.05, len(members)))
    return np.round(start_x), np.round(start_z)


def _plan_units(rng: np.random.Generator, defs: UnitDefs, teams: int, faction: np.ndarray,
                units_per_team: int, end_frame: int) -> Units:
    """Draw each team's units with creation and finish frames, ordered by creation."""
    roles = np.array(list(_ROLE_SHARES))
    shares = np.array(list(_ROLE_SHARES.values()))
    per_team = []
    for team in range(teams):
        role = np.empty(units_per_team, dtype=np.int64)
        role[0], role[1] = COMMANDER, FACTORY
        role[2:] = rng.choice(roles, size=units_per_team - 2, p=shares / shares.sum())
        def_row = np.empty(units_per_team, dtype=np.int64)
        for each_role in np.unique(role):
            options = defs.of_role(faction[team], each_role)
            members = np.flatnonzero(role == each_role)
            weight = defs.weight[options] / defs.weight[options].sum()
            def_row[members] = rng.choice(options, len(members), p=weight)
        def_row[1] = defs.of_role(faction[team], FACTORY)[0]

        # The commander starts the first factory within seconds. Production then
        # speeds up, so creation frames crowd towards the end.
        created = np.zeros(units_per_team, dtype=np.int64)
        created[1] = rng.integers(60, 300)
        opening = created[1] + 300
        later = rng.uniform(0, 1, units_per_team - 2) ** 0.6
        created[2:] = opening + (later * max(end_frame - opening, 0)).astype(np.int64)
        build_speed = rng.uniform(0.7, 1.3, units_per_team)
        build = (defs.build_frames[def_row] * build_speed).astype(np.int64)
        finished = created + build

        # Factory-built units wait for the first factory.
        from_factory = np.isin(role, _BUILT_BY_FACTORY)
        created = np.where(from_factory, np.maximum(created, finished[1] + 30), created)
        finished = created + build
        per_team.append((np.full(units_per_team, team), role, def_row, created, finished))

    team, role, def_row, created, finished = (np.concatenate(parts) for parts in zip(*per_team))
    keep = np.flatnonzero(created <= end_frame)
    order = keep[np.argsort(created[keep], kind="stable")]
    count = len(order)
    never = np.full(count, end_frame + 1, dtype=np.int64)
    # Ids are unique and scattered like engine unit ids (below 32000 in a real 8-vs-8 export).
    id_space = max(32000, 2 * count)
    return Units(
        id=rng.choice(id_space, size=count, replace=False).astype(np.int64),
        team=team[order], def_row=def_row[order], role=role[order],
        created=created[order], finished=finished[order],
        destroyed=_draw_deaths(rng, role[order], finished[order], end_frame),
        builder=np.full(count, -1), queue_length=np.full(count, -1),
        killer=np.full(count, -1), transfer_frame=never.copy(), new_team=team[order].copy(),
        **{name: np.zeros(count) for name in (
            "spawn_x", "spawn_z", "goal_x", "goal_z", "travel_frames", "wander",
            "omega_x", "omega_z", "phase_x", "phase_z")},
    )


def _draw_deaths(rng: np.random.Generator, role: np.ndarray, finished: np.ndarray,
                 end_frame: int) -> np.ndarray:
    chance = np.zeros(len(role))
    for mortal_role, role_chance in _DEATH_CHANCE.items():
        chance[role == mortal_role] = role_chance
    life = rng.exponential(_MEAN_LIFE_SHARE * end_frame, len(role)).astype(np.int64) + 30
    dies = rng.uniform(0, 1, len(role)) < chance
    # Counting from the construction tick after the finish keeps the unit alive
    # through its CONSTRUCTION_END row.
    destroyed = np.where(dies, _ceil_to(finished, CONSTRUCTION_STEP) + life, end_frame + 1)
    return np.minimum(destroyed, end_frame + 1)


def _pick_units(rng: np.random.Generator, pool: np.ndarray, pool_ready: np.ndarray,
                ready_by: np.ndarray, alive_after: np.ndarray, destroyed: np.ndarray,
                tries: int = 4) -> np.ndarray:
    """Pick, per request, a random pool unit ready by a frame and alive after another.

    ``pool`` is sorted by ``pool_ready``. Returns unit rows, -1 where ``tries``
    random draws found none.
    """
    picked = np.full(len(ready_by), -1, dtype=np.int64)
    ready_count = np.searchsorted(pool_ready, ready_by, side="right")
    for _ in range(tries):
        open_requests = np.flatnonzero((picked < 0) & (ready_count > 0))
        if len(open_requests) == 0:
            break
        draw = rng.uniform(0, 1, len(open_requests)) * ready_count[open_requests]
        candidate = pool[draw.astype(np.int64)]
        alive = destroyed[candidate] > alive_after[open_requests]
        picked[open_requests[alive]] = candidate[alive]
    return picked


def _ceil_to(frames: np.ndarray, step: int) -> np.ndarray:
    return -(-frames // step) * step


def _assign_builders(rng: np.random.Generator, units: Units, defs: UnitDefs,
                     end_frame: int) -> Builds:
    """Give every built unit a builder and some buildings an assisting builder.

    Factories build mobile units; the commander or a constructor builds
    buildings. A builder's life is stretched to outlast its jobs.
    """
    first_tick = _ceil_to(units.created, CONSTRUCTION_STEP)
    last_tick = _ceil_to(units.finished, CONSTRUCTION_STEP)
    commander_of = {int(units.team[row]): row for row in np.flatnonzero(units.role == COMMANDER)}
    built = np.flatnonzero(units.role != COMMANDER)
    assist_rows, assisters, assist_starts = [], [], []

    for team, commander in commander_of.items():
        mine = built[units.team[built] == team]
        by_factory = mine[np.isin(units.role[mine], _BUILT_BY_FACTORY)]
        buildings = mine[~np.isin(units.role[mine], _BUILT_BY_FACTORY)]

        factories = mine[units.role[mine] == FACTORY]
        factories = factories[np.argsort(units.finished[factories], kind="stable")]
        units.builder[by_factory] = _pick_units(
            rng, factories, units.finished[factories], units.created[by_factory],
            units.created[by_factory], units.destroyed)
        units.queue_length[by_factory] = _draw_queue_lengths(rng, len(by_factory))

        constructors = mine[units.role[mine] == CONSTRUCTOR]
        constructors = constructors[np.argsort(units.finished[constructors], kind="stable")]
        builder = _pick_units(rng, constructors, units.finished[constructors],
                              units.created[buildings], units.created[buildings],
                              units.destroyed)
        by_commander = (builder < 0) | (rng.uniform(0, 1, len(buildings)) < 0.3)
        units.builder[buildings] = np.where(by_commander, commander, builder)

        # About one building in six gets a second builder for part of its build.
        helped = buildings[rng.uniform(0, 1, len(buildings)) < 0.15]
        helped = helped[last_tick[helped] - first_tick[helped] >= 2 * CONSTRUCTION_STEP]
        ticks = (last_tick[helped] - first_tick[helped]) // CONSTRUCTION_STEP
        start = first_tick[helped] + CONSTRUCTION_STEP * rng.integers(1, ticks)
        helper = _pick_units(rng, constructors, units.finished[constructors], start, start,
                             units.destroyed)
        helper = np.where(helper < 0, commander, helper)
        distinct = helper != units.builder[helped]
        assist_rows.append(helped[distinct])
        assisters.append(helper[distinct])
        assist_starts.append(start[distinct])

    assist_target = np.concatenate(assist_rows)
    assister = np.concatenate(assisters)
    builder = np.concatenate([units.builder[built], assister])
    target = np.concatenate([built, assist_target])
    job_last = last_tick[target]
    np.maximum.at(units.destroyed, builder, np.minimum(job_last + 1, end_frame + 1))
    return Builds(
        builder=builder, target=target,
        first_tick=np.concatenate([first_tick[built], np.concatenate(assist_starts)]),
        last_tick=job_last,
        assist=np.concatenate([np.zeros(len(built), bool), np.ones(len(assist_target), bool)]),
        null_target_team=rng.uniform(0, 1, len(target)) < 0.01,
    )


def _draw_queue_lengths(rng: np.random.Generator, count: int) -> np.ndarray:
    # Mostly short queues, with the occasional long batch order.
    short = rng.geometric(0.5, count) - 1
    return np.where(rng.uniform(0, 1, count) < 0.08, rng.integers(10, 60, count), short)


def _assign_transfers(rng: np.random.Generator, units: Units, ally: np.ndarray,
                      end_frame: int) -> None:
    """Give a few combat units to an ally at a random frame of their life."""
    candidates = np.flatnonzero(np.isin(units.role, (GROUND, AIRCRAFT))
                                & (units.finished < np.minimum(units.destroyed, end_frame)))
    chosen = candidates[rng.uniform(0, 1, len(candidates)) < 0.03]
    for row in chosen:
        team = units.team[row]
        allies = np.flatnonzero((ally == ally[team]) & (np.arange(len(ally)) != team))
        if len(allies) == 0:
            continue
        last = min(units.destroyed[row], end_frame + 1)
        units.transfer_frame[row] = rng.integers(units.finished[row] + 1, last)
        units.new_team[row] = rng.choice(allies)


def _assign_killers(rng: np.random.Generator, units: Units, ally: np.ndarray,
                    end_frame: int) -> None:
    """Name an enemy killer for most destroyed units."""
    victims = np.flatnonzero(units.destroyed <= end_frame)
    victims = victims[rng.uniform(0, 1, len(victims)) < 0.7]
    armed = np.flatnonzero(np.isin(units.role, _ARMED_ROLES))
    for side in (0, 1):
        pool = armed[ally[units.team[armed]] != side]
        pool = pool[np.argsort(units.finished[pool], kind="stable")]
        mine = victims[ally[units.team[victims]] == side]
        death = units.destroyed[mine]
        units.killer[mine] = _pick_units(rng, pool, units.finished[pool], death - 30, death,
                                         units.destroyed)


def _place_units(rng: np.random.Generator, units: Units, defs: UnitDefs, start_x: np.ndarray,
                 start_z: np.ndarray, width: int, height: int) -> None:
    """Set where units appear, where they head and how they wander there."""
    count = len(units.id)
    angle = rng.uniform(0, 2 * np.pi, count)
    radius = 150 + 1300 * np.sqrt(rng.uniform(0, 1, count))
    base_x = start_x[units.team] + radius * np.cos(angle)
    base_z = start_z[units.team] + radius * np.sin(angle)

    # Buildings stand in the base and commanders at their start position; units
    # from a factory appear next to it.
    mobile = np.isin(units.role, _MOBILE_ROLES)
    commander = units.role == COMMANDER
    units.spawn_x[:] = np.where(commander, start_x[units.team], base_x)
    units.spawn_z[:] = np.where(commander, start_z[units.team], base_z)
    from_factory = np.flatnonzero(np.isin(units.role, _BUILT_BY_FACTORY))
    factory = units.builder[from_factory]
    units.spawn_x[from_factory] = units.spawn_x[factory] + rng.normal(0, 40, len(factory))
    units.spawn_z[from_factory] = units.spawn_z[factory] + rng.normal(0, 40, len(factory))

    # Fighters head for the middle of the map where the ally teams meet;
    # constructors and commanders stay near their base.
    front_x = rng.uniform(0.05, 0.95, count) * width
    front_z = height * np.clip(rng.normal(0.5, 0.12, count), 0.02, 0.98)
    fighter = np.isin(units.role, (GROUND, AIRCRAFT))
    near_base = np.where(commander, 0.3, 1.0)
    units.goal_x[:] = np.where(fighter, front_x,
                               units.spawn_x + near_base * (base_x - start_x[units.team]))
    units.goal_z[:] = np.where(fighter, front_z,
                               units.spawn_z + near_base * (base_z - start_z[units.team]))
    units.goal_x[~mobile] = units.spawn_x[~mobile]
    units.goal_z[~mobile] = units.spawn_z[~mobile]

    speed = np.maximum(defs.speed[units.def_row], 0.1)
    distance = np.hypot(units.goal_x - units.spawn_x, units.goal_z - units.spawn_z)
    units.travel_frames[:] = np.maximum(distance / speed, 1)

    wander = np.select(
        [units.role == GROUND, units.role == AIRCRAFT, units.role == CONSTRUCTOR, commander],
        [rng.uniform(80, 350, count), rng.uniform(300, 700, count),
         rng.uniform(50, 250, count), rng.uniform(30, 120, count)], 0.0)
    # Some fighters hold their position once there, so their velocity is 0.
    holds_position = (units.role == GROUND) & (rng.uniform(0, 1, count) < 0.3)
    units.wander[:] = np.where(holds_position, 0.0, wander)
    units.omega_x[:] = 2 * np.pi / rng.uniform(1200, 3600, count)
    units.omega_z[:] = 2 * np.pi / rng.uniform(1200, 3600, count)
    units.phase_x[:] = rng.uniform(0, 2 * np.pi, count)
    units.phase_z[:] = rng.uniform(0, 2 * np.pi, count)


def _plan_hits(rng: np.random.Generator, units: Units, defs: UnitDefs, ally: np.ndarray,
               end_frame: int) -> Hits:
    """Draw the hits: a burst before every death, and skirmishes units survive."""
    armed_def = defs.weapon_id > 0

    # Lethal bursts: by the killer, or by an unknown attacker (a unit that died
    # before its shot landed) for a tenth of the deaths without a killer.
    dead = np.flatnonzero(units.destroyed <= end_frame)
    unknown = units.killer[dead] < 0
    lethal = dead[~unknown | (rng.uniform(0, 1, len(dead)) < 0.1)]
    lethal_end = units.destroyed[lethal]
    killer = units.killer[lethal]
    earliest = np.maximum(units.finished[lethal],
                          np.where(killer >= 0, units.finished[killer], 0))
    lethal_start = np.maximum(lethal_end - rng.integers(30, 600, len(lethal)), earliest)

    # Skirmishes: a burst at a random frame of a unit's finished life, by an enemy
    # armed unit alive through it.
    living_until = np.minimum(units.destroyed, end_frame + 1)
    exposed = np.flatnonzero((units.finished < living_until - 1)
                             & (rng.uniform(0, 1, len(units.id)) < 0.4))
    skirmish_start = rng.integers(units.finished[exposed], living_until[exposed] - 1)
    skirmish_end = np.minimum(skirmish_start + rng.integers(15, 300, len(exposed)),
                              living_until[exposed] - 1)
    attacker = np.full(len(exposed), -1)
    armed = np.flatnonzero(armed_def[units.def_row])
    for side in (0, 1):
        pool = armed[ally[units.team[armed]] != side]
        pool = pool[np.argsort(units.finished[pool], kind="stable")]
        mine = np.flatnonzero(ally[units.team[exposed]] == side)
        attacker[mine] = _pick_units(rng, pool, units.finished[pool], skirmish_start[mine],
                                     skirmish_end[mine], units.destroyed)
    fought = attacker >= 0

    victim = np.concatenate([lethal, exposed[fought]])
    burst_attacker = np.concatenate([killer, attacker[fought]])
    start = np.concatenate([lethal_start, skirmish_start[fought]])
    end = np.concatenate([lethal_end, skirmish_end[fought]])
    share_of_health = np.concatenate([rng.uniform(1.0, 1.3, len(lethal)),
                                      rng.uniform(0.05, 0.5, fought.sum())])
    lethal_burst = np.arange(len(victim)) < len(lethal)
    return _burst_hits(rng, units, defs, victim, burst_attacker, start, end,
                       share_of_health, lethal_burst)


def _burst_hits(rng: np.random.Generator, units: Units, defs: UnitDefs, victim: np.ndarray,
                attacker: np.ndarray, start: np.ndarray, end: np.ndarray,
                share_of_health: np.ndarray, lethal: np.ndarray) -> Hits:
    """Spread each burst over hits whose damage adds up to a share of the victim's health."""
    hit_count = 1 + rng.poisson(np.where(lethal, 6, 3))
    burst = np.repeat(np.arange(len(victim)), hit_count)
    offset = rng.uniform(0, 1, len(burst)) * (end - start + 1)[burst]
    frame = np.minimum(start[burst] + offset.astype(np.int64), end[burst])
    last_of_burst = np.cumsum(hit_count) - 1
    frame[last_of_burst[lethal]] = end[lethal]

    hit_attacker = attacker[burst]
    # A few hits of known attackers land after the attacker is gone.
    hit_attacker[rng.uniform(0, 1, len(burst)) < 0.01] = -1

    weight = rng.gamma(2.0, 1.0, len(burst))
    weight /= np.bincount(burst, weights=weight)[burst]
    health_tenths = 10 * defs.max_health[units.def_row[victim]] * share_of_health
    damage = np.round(health_tenths[burst] * weight).astype(np.int64)

    armed_defs = np.flatnonzero(defs.weapon_id > 0)
    stray_def = rng.choice(armed_defs, len(burst))
    weapon_def = np.where(hit_attacker >= 0, units.def_row[np.maximum(hit_attacker, 0)], stray_def)

    order = np.argsort(frame, kind="stable")
    beam = defs.beam[weapon_def[order]]
    projectile = np.where(beam, -1, (np.cumsum(~beam) - 1) % _PROJECTILE_ID_LIMIT)
    return Hits(frame=frame[order], victim=victim[burst][order], attacker=hit_attacker[order],
                damage=damage[order], weapon_id=defs.weapon_id[weapon_def[order]],
                projectile_id=projectile, paralyzer=defs.paralyzer[weapon_def[order]])


# Group orders: Spring engine command id, Command enum member, share of orders and
# whether the order carries a map position. Mod commands (member None) are outside
# the Command enum, so their cmd_name is null.
_GROUP_ORDERS = (
    (10, "MOVE", 0.40, True), (16, "FIGHT", 0.30, True), (90, "RECLAIM", 0.07, True),
    (20, "ATTACK", 0.05, False), (25, "GUARD", 0.05, False), (40, "REPAIR", 0.04, True),
    (15, "PATROL", 0.03, True), (125, "RESURRECT", 0.01, True), (0, "STOP", 0.015, False),
    (5, "WAIT", 0.005, False), (105, "MANUAL_FIRE", 0.005, True),
    (75, "LOAD_UNITS", 0.005, False), (80, "UNLOAD_UNITS", 0.005, True),
    (130, "CAPTURE", 0.005, False), (31410, None, 0.005, True), (31522, None, 0.005, False),
)


def _plan_commands(rng: np.random.Generator, units: Units, builds: Builds, defs: UnitDefs,
                   teams: int, end_frame: int, width: int, height: int) -> Commands:
    """Draw group orders of each team and a BUILD order for every built unit."""
    group = _group_orders(rng, units, teams, end_frame, width, height)
    build = _build_orders(rng, units, builds, defs)
    frame, unit, cmd_id, cmd_name, target, x, z = (
        np.concatenate([a, b]) for a, b in zip(group, build))
    order = np.argsort(frame, kind="stable")
    frame, unit, cmd_id, cmd_name, target, x, z = (
        column[order] for column in (frame, unit, cmd_id, cmd_name, target, x, z))

    # cmd_tag counts each unit's orders from 1, as the engine's command queue does.
    by_unit = np.argsort(unit, kind="stable")
    first_of_unit = np.r_[True, unit[by_unit][1:] != unit[by_unit][:-1]]
    run_start = np.maximum.accumulate(np.where(first_of_unit, np.arange(len(unit)), 0))
    cmd_tag = np.empty(len(unit), dtype=np.int64)
    cmd_tag[by_unit] = np.arange(len(unit)) - run_start + 1
    return Commands(frame=frame, unit=unit, cmd_id=cmd_id, cmd_name=cmd_name, cmd_tag=cmd_tag,
                    target=target, x=x, z=z)


def _group_orders(rng: np.random.Generator, units: Units, teams: int, end_frame: int,
                  width: int, height: int) -> tuple[np.ndarray, ...]:
    """Draw orders that each give one command to a group of a team's live units.

    One order is one action: its rows share the frame and cmd_id.
    """
    ids = np.array([order[0] for order in _GROUP_ORDERS])
    names = np.array([0 if order[1] is None else ENUMS["Command"].index(order[1]) + 1
                      for order in _GROUP_ORDERS])
    shares = np.array([order[2] for order in _GROUP_ORDERS])
    positioned = np.array([order[3] for order in _GROUP_ORDERS])

    ticks = end_frame // COMMAND_STEP
    per_team = max(1, round(_ACTIONS_PER_TEAM_MINUTE * end_frame / FRAMES_PER_MINUTE))
    action_team = np.repeat(np.arange(teams), per_team)
    action_frame = COMMAND_STEP * rng.integers(1, max(ticks, 1) + 1, len(action_team))
    kind = rng.choice(len(ids), len(action_team), p=shares / shares.sum())
    # Most orders go to one to five units, a few to hundreds.
    group_size = np.ceil(rng.lognormal(0.7, 1.2, len(action_team)))
    group_size = np.minimum(group_size, 1000).astype(np.int64)
    point_x = rng.uniform(0.05, 0.95, len(action_team)) * width
    point_z = np.clip(rng.normal(0.5, 0.2, len(action_team)), 0.02, 0.98) * height

    # Draw twice the group size among the team's units created by then, then keep
    # the first live, distinct ones up to the group size.
    mobile = np.flatnonzero(np.isin(units.role, _MOBILE_ROLES))
    draws = 2 * group_size
    action = np.repeat(np.arange(len(action_team)), draws)
    unit = np.full(len(action), -1)
    for team in range(teams):
        pool = mobile[units.team[mobile] == team]
        rows = np.flatnonzero(action_team[action] == team)
        ready = np.searchsorted(units.created[pool], action_frame[action[rows]], side="right")
        pick = (rng.uniform(0, 1, len(rows)) * ready).astype(np.int64)
        unit[rows] = np.where(ready > 0, pool[np.minimum(pick, len(pool) - 1)], -1)
    frame = action_frame[action]
    valid = unit >= 0
    valid[valid] = ((units.destroyed[unit[valid]] > frame[valid])
                    & (units.team_at(unit[valid], frame[valid]) == action_team[action[valid]]))
    action, unit = action[valid], unit[valid]
    _, distinct = np.unique(action * len(units.id) + unit, return_index=True)
    distinct.sort()
    action, unit = action[distinct], unit[distinct]
    rank = np.arange(len(action)) - np.searchsorted(action, action)
    within_group = rank < group_size[action]
    action, unit = action[within_group], unit[within_group]

    has_point = positioned[kind[action]]
    x = np.where(has_point, point_x[action] + rng.normal(0, 40, len(action)), 0)
    z = np.where(has_point, point_z[action] + rng.normal(0, 40, len(action)), 0)
    return (action_frame[action], unit, ids[kind[action]], names[kind[action]],
            np.full(len(action), -1), np.round(x), np.round(z))


def _build_orders(rng: np.random.Generator, units: Units, builds: Builds,
                  defs: UnitDefs) -> tuple[np.ndarray, ...]:
    """Order each builder to build its unit shortly before the construction starts.

    Real exports put the ordered unit's def id in target_unit_id of BUILD rows and
    its negative in cmd_id.
    """
    main = ~builds.assist
    builder, target = builds.builder[main], builds.target[main]
    delay = rng.integers(0, 20, len(target)) * COMMAND_STEP
    frame = (units.created[target] - delay) // COMMAND_STEP * COMMAND_STEP
    frame = np.maximum(frame, _ceil_to(units.created[builder], COMMAND_STEP))
    def_id = defs.ids[units.def_row[target]]
    build_code = ENUMS["Command"].index("BUILD") + 1
    return (frame, builder, -def_id, np.full(len(target), build_code), def_id,
            np.round(units.spawn_x[target]), np.round(units.spawn_z[target]))
