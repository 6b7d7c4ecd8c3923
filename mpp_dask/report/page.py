"""Build the report page of one replay and write it as a self-contained HTML file.

The page is static HTML (title, players, one section per plot, notes) around Bokeh
figures. BokehJS and the data are inlined, so the file opens without a network or
a server. A section whose table is absent or empty shows a note in place of its
figures.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable
from dataclasses import dataclass

import fsspec
import pandas as pd
from bokeh.embed import file_html
from bokeh.layouts import column
from bokeh.resources import INLINE

import mpp_dask
from mpp_dask.errors import OutputError
from mpp_dask.report import combat_plots, player_plots
from mpp_dask.report.inputs import ReportInputs, load_inputs
from mpp_dask.report.players import Roster, build_roster

logger = logging.getLogger(__name__)

REPORTS_FOLDER = "_reports"

# Tables read for the page, with the only columns it needs.
COLUMNS = {
    "team_stats": ["frame", "team_id", "metal_produced", "energy_produced"],
    "calculate_player_apm_and_focus": ["player_id", "minute", "actions_per_minute",
                                       "combat_focus_pct", "economy_focus_pct"],
    "damage_by_unit_def": ["unit_def_id", "total_damage_dealt", "hits"],
    "map_control_timeline": ["player_id", "minute", "bounding_box_area"],
    "combat_engagement_summary": ["start_frame", "duration_seconds", "location_x",
                                  "location_z", "total_damage", "hits"],
    "crisis_response_index": ["player_id", "time_to_response_frames"],
    "start_pos": ["player_id", "player_name", "x", "z"],
}

# Tables that are aspects written as streams (-u) rather than stats (-s).
STREAMS = {"team_stats", "start_pos"}


@dataclass(frozen=True)
class Section:
    """One part of the page: a heading, a caption and the figures drawn from one table."""

    key: str
    title: str
    caption: str
    table: str
    draw: Callable[[pd.DataFrame, ReportInputs, Roster], list]


def _draw_resources(team_stats, inputs, roster):
    return player_plots.resources_timelines(team_stats, roster)


def _draw_actions(apm, inputs, roster):
    timeline = player_plots.timeline_row(
        apm, roster, x="minute", y="actions_per_minute", name="apm-timeline",
        title="Actions per minute", x_label="game minute", y_label="actions per minute")
    return [timeline, player_plots.action_split_figure(apm, roster)]


def _draw_damage(damage, inputs, roster):
    return [combat_plots.damage_by_unit_figure(damage, inputs.unit_names)]


def _draw_map_control(control, inputs, roster):
    return [player_plots.timeline_row(
        control, roster, x="minute", y="bounding_box_area", name="map-control-timeline",
        title="Map control", x_label="game minute", y_label="bounding box area")]


def _draw_engagements(engagements, inputs, roster):
    return [combat_plots.engagement_map_figure(engagements, roster, inputs.start_pos,
                                               inputs.game_meta),
            combat_plots.engagement_timeline_figure(engagements)]


def _draw_crisis_response(crisis, inputs, roster):
    return [player_plots.crisis_response_figure(crisis, roster)]


SECTIONS = (
    Section("resources", "Resources over time",
            "Metal and energy produced since the game start, per player, from the "
            "team_stats stream (one row per team every 10 seconds).",
            "team_stats", _draw_resources),
    Section("actions", "Actions per minute",
            "An action is one order of a player in one frame, however many units it goes "
            "to. Combat actions are ATTACK, FIGHT and MANUAL_FIRE, economy actions BUILD, "
            "RECLAIM and REPAIR (stat calculate_player_apm_and_focus).",
            "calculate_player_apm_and_focus", _draw_actions),
    Section("damage", "Damage by unit type",
            "Damage dealt by the attacking unit's type (stat damage_by_unit_def).",
            "damage_by_unit_def", _draw_damage),
    Section("map-control", "Map control",
            "Area of the bounding box, in x and z, of each player's unit positions in each "
            "game minute (stat map_control_timeline).",
            "map_control_timeline", _draw_map_control),
    Section("engagements", "Engagements",
            "Hits by units grouped into engagements: a gap of more than 10 seconds or a "
            "jump of more than 500 in the victim position starts a new one "
            "(stat combat_engagement_summary).",
            "combat_engagement_summary", _draw_engagements),
    Section("crisis-response", "Crisis response",
            "A crisis starts when a unit is hit for the first time or after more than 15 "
            "seconds without hits. The "
            "response is the team's next ATTACK, FIGHT, REPAIR, RECLAIM, GUARD or MOVE "
            "order (stat crisis_response_index).",
            "crisis_response_index", _draw_crisis_response),
)

TEMPLATE = """
{% from macros import embed %}
{% block postamble %}
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; }
  h1 { margin-bottom: 0.2em; }
  .summary { color: #555; margin-top: 0; }
  .caption { color: #444; max-width: 70em; }
  .note { background: #fff4d6; border-left: 4px solid #e0a800; padding: 0.5em 0.8em;
          max-width: 70em; }
  table.players { border-collapse: collapse; font-size: 0.9em; }
  table.players th, table.players td { border-bottom: 1px solid #ddd; padding: 0.2em 0.8em;
                                       text-align: left; }
  section { margin-bottom: 2em; }
</style>
{% endblock %}
{% block contents %}
<h1>Replay {{ replay_id | e }}</h1>
<p class="summary">{{ summary | e }}</p>
{% for note in notes %}
<p class="note">{{ note | e }}</p>
{% endfor %}
<section id="players">
<h2>Players</h2>
{% if players %}
<table class="players">
<tr><th>ally team</th><th>team id</th><th>name</th><th>faction</th></tr>
{% for player in players %}
<tr><td>{{ player.group | e }}</td><td>{{ player.team_id }}</td><td>{{ player.name | e }}</td>
<td>{{ player.faction | e }}</td></tr>
{% endfor %}
</table>
{% else %}
<p class="note">No table of this output and no replay file names a player.</p>
{% endif %}
</section>
{% for section in sections %}
<section id="{{ section.key }}">
<h2>{{ section.title | e }}</h2>
<p class="caption">{{ section.caption | e }}</p>
{% if section.note %}
<p class="note missing" data-table="{{ section.table }}">{{ section.note | e }}</p>
{% else %}
{{ embed(roots[section.key]) }}
{% endif %}
</section>
{% endfor %}
{% endblock %}
"""


def default_report_path(output_urlpath: str, replay_id: str) -> str:
    """Return where a replay's report goes by default: ``<output>/_reports/<id>.html``."""
    return posixpath.join(output_urlpath.rstrip("/"), REPORTS_FOLDER, f"{replay_id}.html")


def render_report(inputs: ReportInputs) -> str:
    """Return the report page of ``inputs`` as HTML."""
    roster = build_roster(_team_ids(inputs), inputs.start_pos, inputs.game_meta)

    sections = []
    roots = {}
    for section in SECTIONS:
        note = _missing_note(section.table, inputs)
        if note is None:
            models = section.draw(inputs.tables[section.table], inputs, roster)
            roots[section.key] = column(models, name=section.key)
        sections.append({"key": section.key, "title": section.title,
                         "caption": section.caption, "table": section.table, "note": note})

    variables = {"replay_id": inputs.replay_id, "summary": _summary(inputs),
                 "notes": [*_name_notes(inputs, roster), *inputs.notes],
                 "players": _players_rows(roster), "sections": sections}
    title = f"mpp-dask report: {inputs.replay_id}"
    if not roots:
        # file_html needs at least one model. An empty column draws nothing.
        roots["empty"] = column(name="empty")
    return file_html(list(roots.values()), resources=INLINE, title=title,
                     template=TEMPLATE, template_variables=variables)


def write_report(output_urlpath: str, replay_id: str, report_urlpath: str | None = None,
                 storage_options: dict | None = None) -> tuple[str, ReportInputs]:
    """Write the HTML report of one replay from the output of ``mpp-dask run``.

    Parameters
    ----------
    output_urlpath : str
        Output folder of the run (a path or an fsspec URL).
    replay_id : str
        The replay to report on.
    report_urlpath : str, optional
        The HTML file to write. Default: ``<output>/_reports/<replay_id>.html``.
    storage_options : dict, optional
        fsspec options for the output folder, the replay folder and the report.

    Returns
    -------
    tuple of (str, ReportInputs)
        Where the report was written, and what it was built from.

    Raises
    ------
    ConfigError
        If the output folder or the replay's complete output is not found.
    OutputError
        If the report file cannot be written.
    """
    inputs = load_inputs(output_urlpath, replay_id, COLUMNS, storage_options)
    page = render_report(inputs)

    target = report_urlpath or default_report_path(output_urlpath, replay_id)
    try:
        fs, path = fsspec.core.url_to_fs(target, **(storage_options or {}))
        parent = posixpath.dirname(path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "w", encoding="utf-8") as stream:
            stream.write(page)
    except OSError as exc:
        raise OutputError(f"writing the report {target} failed: {exc}") from exc
    logger.info("replay %s: wrote the report %s (%d bytes)", replay_id, target, len(page))
    return target, inputs


def _team_ids(inputs: ReportInputs) -> set[int]:
    ids: set[int] = set()
    for table in inputs.tables.values():
        for column_name in ("player_id", "team_id"):
            if column_name in table.columns:
                ids.update(int(team) for team in table[column_name].unique())
    return ids


def _missing_note(table: str, inputs: ReportInputs) -> str | None:
    if table in inputs.absent:
        kind = "stream" if table in STREAMS else "stat"
        note = f"Not shown: the {table} {kind} is not in this output ({inputs.absent[table]})."
        if table in inputs.manifest.get("skipped", {}):
            # Requesting the table again would not help, because the run skipped it
            # for an aspect file that the replay lacks.
            return note
        option = "-u" if table in STREAMS else "-s"
        return (f"{note} 'mpp-dask run' with {option} {table} writes it. A run replaces "
                "the replay's whole output, so name every stat and stream you want in it.")
    if inputs.tables[table].empty:
        return f"Not shown: the {table} table of this replay has no rows."
    return None


def _summary(inputs: ReportInputs) -> str:
    parts = []
    meta = inputs.game_meta or {}
    map_name = (meta.get("Map") or {}).get("scriptName")
    if map_name:
        parts.append(f"map {map_name}")
    duration_ms = meta.get("durationMs")
    if isinstance(duration_ms, (int, float)):
        minutes, seconds = divmod(round(duration_ms / 1000), 60)
        parts.append(f"{minutes} min {seconds:02d} s")
    if meta.get("gameVersion"):
        parts.append(str(meta["gameVersion"]))
    if inputs.start_pos_source is not None:
        parts.append(f"player names from {inputs.start_pos_source}")
    parts.append(f"output {inputs.output_dir}")
    parts.append(f"report by mpp-dask {mpp_dask.__version__}")
    return " · ".join(parts)


def _name_notes(inputs: ReportInputs, roster: Roster) -> list[str]:
    if roster.ally_teams_known:
        return []
    return ["Ally teams are unknown, so players are not grouped."]


def _players_rows(roster: Roster) -> list[dict]:
    rows = []
    for label, players in roster.groups(roster.players):
        for player in players:
            rows.append({"group": label, "team_id": player.team_id, "name": player.name,
                         "faction": player.faction or ""})
    return rows

