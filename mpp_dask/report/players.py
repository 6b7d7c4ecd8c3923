"""Name the players of a replay, group them by ally team and give each a color.

A player is a team id: the stats' ``player_id`` is the ``team_id`` of the player.
Names come from ``start_pos`` and, for teams it lacks, from ``game_meta.json``.
Ally teams come from ``game_meta.json`` only. A team found in neither file (the
engine's Gaia team, for one) is named by its id and put in a group of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from bokeh.palettes import Category10_10

# Group of the teams that game_meta.json does not place in an ally team.
NO_ALLY_TEAM = -1


@dataclass(frozen=True)
class Player:
    """One team of the replay, as the report labels and colors it."""

    team_id: int
    name: str
    ally_team: int
    faction: str | None
    color: str


@dataclass
class Roster:
    """The players of a replay by team id, and the ally teams that have won."""

    players: dict[int, Player] = field(default_factory=dict)
    winning_ally_teams: set[int] = field(default_factory=set)
    ally_teams_known: bool = False

    def player(self, team_id: int) -> Player:
        """Return the player of ``team_id``, or an unnamed one for a team not seen before."""
        known = self.players.get(team_id)
        if known is not None:
            return known
        return Player(team_id, f"team {team_id}", NO_ALLY_TEAM, None, "#7f7f7f")

    def groups(self, team_ids) -> list[tuple[str, list[Player]]]:
        """Return the players of ``team_ids`` by ally team, with a label per group.

        Groups come in ally team order with the teams of no ally team last, and
        players in team id order inside a group.
        """
        by_ally: dict[int, list[Player]] = {}
        for team_id in sorted({int(team) for team in team_ids}):
            player = self.player(team_id)
            by_ally.setdefault(player.ally_team, []).append(player)
        order = sorted(by_ally, key=lambda ally: (ally == NO_ALLY_TEAM, ally))
        return [(self.group_label(ally), by_ally[ally]) for ally in order]

    def group_label(self, ally_team: int) -> str:
        """Return the display label of an ally team."""
        if ally_team == NO_ALLY_TEAM:
            return "no ally team" if self.ally_teams_known else "all teams"
        won = " (won)" if ally_team in self.winning_ally_teams else ""
        return f"ally team {ally_team}{won}"


def build_roster(team_ids, start_pos: pd.DataFrame | None, game_meta: dict | None) -> Roster:
    """Name, group and color the players of ``team_ids``.

    Parameters
    ----------
    team_ids : iterable of int
        Every team id seen in the replay's tables.
    start_pos : pandas.DataFrame, optional
        The clean start_pos rows (``player_id``, ``player_name``).
    game_meta : dict, optional
        The parsed ``game_meta.json``.

    Returns
    -------
    Roster
        Colors are distinct inside an ally team of up to 10 players and repeat
        across ally teams, because each timeline figure draws one ally team. A
        name that two teams share gets the team id appended.
    """
    names: dict[int, str] = {}
    ally_of: dict[int, int] = {}
    factions: dict[int, str] = {}
    roster = Roster()

    for ally_team in (game_meta or {}).get("AllyTeams", []) or []:
        if not isinstance(ally_team, dict):
            continue
        ally_id = int(ally_team.get("allyTeamId", NO_ALLY_TEAM))
        roster.ally_teams_known = True
        if ally_team.get("winningTeam"):
            roster.winning_ally_teams.add(ally_id)
        for entry in ally_team.get("Players", []) or []:
            if not isinstance(entry, dict) or "teamId" not in entry:
                continue
            team_id = int(entry["teamId"])
            ally_of[team_id] = ally_id
            if entry.get("name"):
                names[team_id] = str(entry["name"])
            if entry.get("faction"):
                factions[team_id] = str(entry["faction"])
    if start_pos is not None:
        # NOTE: start_pos player_id is taken to be the team id, as in the real example
        # and the synthetic replays. An export where the two differ would show start_pos
        # names on the wrong teams.
        for team_id, name in zip(start_pos["player_id"], start_pos["player_name"]):
            if isinstance(name, str) and name:
                names[int(team_id)] = name

    all_ids = sorted({int(team) for team in team_ids} | set(names) | set(ally_of))
    _make_names_unique(names)
    seen_in_ally: dict[int, int] = {}
    for team_id in all_ids:
        ally_team = ally_of.get(team_id, NO_ALLY_TEAM)
        position = seen_in_ally.get(ally_team, 0)
        seen_in_ally[ally_team] = position + 1
        roster.players[team_id] = Player(
            team_id=team_id,
            name=names.get(team_id, f"team {team_id}"),
            ally_team=ally_team,
            faction=factions.get(team_id),
            color=Category10_10[position % len(Category10_10)],
        )
    return roster


def _make_names_unique(names: dict[int, str]) -> None:
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    for team_id, name in names.items():
        if counts[name] > 1:
            names[team_id] = f"{name} (team {team_id})"
