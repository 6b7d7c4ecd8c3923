"""Figures of per-player measures: timelines, the action split and crisis response times.

Timelines get one figure per ally team, side by side with shared axes, so that the
lines of one figure are few and each has its own color. Per-player summaries put
every player on one categorical axis, grouped by ally team.
"""

from __future__ import annotations

import pandas as pd
from bokeh.layouts import row
from bokeh.models import (ColumnDataSource, DataRange1d, FactorRange, HoverTool, Legend,
                          LegendItem, NumeralTickFormatter, Range1d, Whisker)
from bokeh.plotting import figure

from mpp_dask.report.players import NO_ALLY_TEAM, Roster
from mpp_dask.schema import FRAMES_PER_SECOND

FRAMES_PER_MINUTE = 60 * FRAMES_PER_SECOND
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"
TIMELINE_WIDTH = 1100
TIMELINE_HEIGHT = 330
QUANTILE_COLUMNS = ["q05", "q25", "q50", "q75", "q95"]


def frame_source(frame: pd.DataFrame) -> ColumnDataSource:
    """Return a data source of the columns of ``frame``, without its index.

    Passing the frame itself would add an ``index`` column, which Bokeh 3.9 builds
    with a pandas call that pandas 3.1 deprecates.
    """
    return ColumnDataSource(frame.to_dict("list"))


def timeline_row(frame: pd.DataFrame, roster: Roster, *, x: str, y: str, name: str,
                 title: str, x_label: str, y_label: str):
    """Draw one line per player of ``y`` over ``x``, one figure per ally team.

    Parameters
    ----------
    frame : pandas.DataFrame
        Rows with a ``player_id`` column and the ``x`` and ``y`` columns.
    roster : Roster
        Names, groups and colors of the players.
    x, y : str
        Columns of the horizontal and vertical axis.
    name : str
        Bokeh name of the returned row. Its figures are named ``<name>-<n>``.
    title, x_label, y_label : str
        Title prefix of every figure and the axis labels.

    Returns
    -------
    bokeh.models.Row
        Figures share both ranges, so zooming one zooms all of them.
    """
    groups = roster.groups(frame["player_id"].unique())
    groups = [group for group in groups if not _all_zero_outsiders(frame, y, group[1])] or groups
    x_range, y_range = DataRange1d(), DataRange1d(start=0)
    width = max(360, TIMELINE_WIDTH // len(groups))
    figures = []
    for index, (label, players) in enumerate(groups):
        plot = figure(title=f"{title}: {label}", width=width, height=TIMELINE_HEIGHT,
                      x_range=x_range, y_range=y_range, tools=TOOLS,
                      x_axis_label=x_label, y_axis_label=y_label, name=f"{name}-{index}")
        plot.yaxis.formatter = NumeralTickFormatter(format="0.[0]a")
        items = []
        for player in players:
            rows = frame[frame["player_id"] == player.team_id].sort_values(x)
            source = ColumnDataSource({"x": rows[x].to_numpy(), "y": rows[y].to_numpy(),
                                       "player": [player.name] * len(rows)})
            line = plot.line("x", "y", source=source, color=player.color, line_width=2)
            items.append(LegendItem(label=player.name, renderers=[line]))
        plot.add_tools(HoverTool(tooltips=[("player", "@player"), (x_label, "@x{0.[0]}"),
                                           (y_label, "@y{0,0.[00]}")]))
        legend = Legend(items=items, click_policy="hide", label_text_font_size="8pt",
                        spacing=0, padding=4)
        plot.add_layout(legend, "right")
        figures.append(plot)
    return row(figures, name=name)


def _all_zero_outsiders(frame: pd.DataFrame, y: str, players: list) -> bool:
    """Return True for a group of teams outside every ally team whose ``y`` is always 0.

    The engine's Gaia team is such a group in most timelines, and an empty figure
    for it would only take space.
    """
    if any(player.ally_team != NO_ALLY_TEAM for player in players):
        return False
    values = frame.loc[frame["player_id"].isin([p.team_id for p in players]), y]
    return bool((values.fillna(0) == 0).all())


def resources_timelines(team_stats: pd.DataFrame, roster: Roster) -> list:
    """Draw cumulative metal and energy produced per player, from team_stats rows."""
    frame = team_stats.rename(columns={"team_id": "player_id"})
    frame = frame.assign(minute=frame["frame"] / FRAMES_PER_MINUTE)
    return [
        timeline_row(frame, roster, x="minute", y="metal_produced", name="resources-metal",
                     title="Metal produced", x_label="game minute",
                     y_label="metal produced (cumulative)"),
        timeline_row(frame, roster, x="minute", y="energy_produced", name="resources-energy",
                     title="Energy produced", x_label="game minute",
                     y_label="energy produced (cumulative)"),
    ]


def action_split(apm: pd.DataFrame) -> pd.DataFrame:
    """Return each player's mean actions per game minute, split into categories.

    ``combat``, ``economy`` and ``other`` add up to ``total``. Each is the player's
    actions of that category over the whole game divided by the game's length in
    minutes, which is the last minute of any player plus one. Counts per minute are
    ``actions_per_minute`` times the focus percentage, so they are exact up to
    floating-point rounding.
    """
    game_minutes = int(apm["minute"].max()) + 1
    combat = apm["actions_per_minute"] * apm["combat_focus_pct"] / 100
    economy = apm["actions_per_minute"] * apm["economy_focus_pct"] / 100
    counts = pd.DataFrame({"player_id": apm["player_id"],
                           "total": apm["actions_per_minute"].astype("float64"),
                           "combat": combat, "economy": economy})
    split = counts.groupby("player_id").sum() / game_minutes
    split["other"] = (split["total"] - split["combat"] - split["economy"]).clip(lower=0)
    return split.reset_index()


def _player_factors(roster: Roster, team_ids) -> tuple[list[tuple[str, str]], dict[int, tuple]]:
    factors = []
    factor_of = {}
    for label, players in roster.groups(team_ids):
        for player in players:
            factor_of[player.team_id] = (label, player.name)
            factors.append(factor_of[player.team_id])
    return factors, factor_of


def action_split_figure(apm: pd.DataFrame, roster: Roster):
    """Draw each player's mean actions per minute as combat, economy and other stacks."""
    split = action_split(apm)
    factors, factor_of = _player_factors(roster, split["player_id"])
    split["player"] = [factor_of[int(team)] for team in split["player_id"]]
    split["name"] = [roster.player(int(team)).name for team in split["player_id"]]

    plot = figure(x_range=FactorRange(*factors, group_padding=1.0), width=TIMELINE_WIDTH,
                  height=360, title="Mean actions per game minute by category", tools=TOOLS,
                  y_axis_label="actions per minute", name="apm-split")
    plot.xaxis.major_label_orientation = 1.0
    plot.xgrid.grid_line_color = None
    plot.y_range.start = 0
    categories = ["combat", "economy", "other"]
    plot.vbar_stack(categories, x="player", width=0.8, source=frame_source(split),
                    color=["#d62728", "#2ca02c", "#c7c7c7"], legend_label=categories)
    plot.add_tools(HoverTool(tooltips=[("player", "@name"), ("total", "@total{0.0}"),
                                       ("combat", "@combat{0.0}"),
                                       ("economy", "@economy{0.0}"),
                                       ("other", "@other{0.0}")]))
    plot.legend.location = "top_right"
    plot.legend.orientation = "horizontal"
    return plot


def response_quantiles(crisis: pd.DataFrame) -> pd.DataFrame:
    """Return per player the quantiles of the response time in seconds and the counts.

    Crises without a response (``time_to_response_frames`` of -1) are counted in
    ``unanswered`` and left out of the quantiles. A player whose crises all went
    unanswered has NaN quantiles.
    """
    seconds = crisis["time_to_response_frames"] / FRAMES_PER_SECOND
    answered = crisis.assign(seconds=seconds.where(crisis["time_to_response_frames"] >= 0))
    grouped = answered.groupby("player_id")["seconds"]
    summary = grouped.quantile([0.05, 0.25, 0.5, 0.75, 0.95]).unstack()
    summary.columns = QUANTILE_COLUMNS
    summary["maximum"] = grouped.max()
    summary["crises"] = crisis.groupby("player_id").size()
    summary["unanswered"] = grouped.apply(lambda values: int(values.isna().sum()))
    return summary.reset_index()


def crisis_response_figure(crisis: pd.DataFrame, roster: Roster):
    """Draw a box plot of each player's crisis response times on a log scale.

    Boxes span the quartiles with a line at the median, and whiskers reach the 5th
    and 95th percentiles. The axis is logarithmic because the median response in
    the example replay is under a second while a few responses take minutes. A response in the crisis's own frame
    (0 s) is drawn at one frame, 1/30 s, which the log axis can show. The hover
    shows the exact values and the maximum.
    """
    summary = response_quantiles(crisis)
    factors, factor_of = _player_factors(roster, summary["player_id"])
    summary["player"] = [factor_of[int(team)] for team in summary["player_id"]]
    summary["name"] = [roster.player(int(team)).name for team in summary["player_id"]]
    summary["color"] = [roster.player(int(team)).color for team in summary["player_id"]]
    drawn = summary.dropna(subset=["q50"]).copy()
    for quantile in QUANTILE_COLUMNS:
        drawn[f"{quantile}_drawn"] = drawn[quantile].clip(lower=1 / FRAMES_PER_SECOND)
    source = frame_source(drawn)

    plot = figure(x_range=FactorRange(*factors, group_padding=1.0), y_axis_type="log",
                  title="Time from a unit's first hit to its team's response "
                        "(box: quartiles, whiskers: 5th to 95th percentile)",
                  width=TIMELINE_WIDTH, height=360, tools=TOOLS,
                  y_axis_label="seconds to response", name="crisis-response-box")
    plot.xaxis.major_label_orientation = 1.0
    plot.xgrid.grid_line_color = None
    plot.yaxis.formatter = NumeralTickFormatter(format="0.[00]")
    if len(drawn):
        # Whiskers are annotations, which automatic ranges ignore.
        plot.y_range = Range1d(float(drawn["q05_drawn"].min()) / 1.5,
                               float(drawn["q95_drawn"].max()) * 1.5)
    # Two boxes that meet at the median draw the median line as their shared edge.
    lower = plot.vbar(x="player", bottom="q25_drawn", top="q50_drawn", width=0.7,
                      source=source, fill_color="color", fill_alpha=0.6, line_color="black")
    upper = plot.vbar(x="player", bottom="q50_drawn", top="q75_drawn", width=0.7,
                      source=source, fill_color="color", fill_alpha=0.6, line_color="black")
    plot.add_layout(Whisker(base="player", lower="q05_drawn", upper="q95_drawn",
                            source=source))
    plot.add_tools(HoverTool(renderers=[lower, upper], tooltips=[
        ("player", "@name"), ("crises", "@crises"), ("no response", "@unanswered"),
        ("median", "@q50{0.00} s"), ("quartiles", "@q25{0.00} to @q75{0.00} s"),
        ("5th to 95th percentile", "@q05{0.00} to @q95{0.00} s"),
        ("maximum", "@maximum{0.0} s")]))
    return plot
