"""Figures of combat: damage by unit type and engagements on the map and over time."""

from __future__ import annotations

import numpy as np
import pandas as pd
from bokeh.models import (ColorBar, ColumnDataSource, DataRange1d, HoverTool, LabelSet,
                          NumeralTickFormatter)
from bokeh.palettes import Viridis256
from bokeh.plotting import figure
from bokeh.transform import linear_cmap

from mpp_dask.report.player_plots import FRAMES_PER_MINUTE, TOOLS, frame_source
from mpp_dask.report.players import Roster

TOP_UNIT_TYPES = 20

# A Spring map square, the unit of the map size in game_meta.json, is 512 elmos,
# the unit of the x and z coordinates.
ELMOS_PER_MAP_SQUARE = 512

# Marker diameters in screen pixels of the smallest and the largest engagement.
MIN_MARKER_PIXELS = 3
MAX_MARKER_PIXELS = 40


def unit_type_labels(unit_def_ids, unit_names: dict[int, str]) -> list[str]:
    """Return one distinct label per unit def id: its name from defs.csv, or its id."""
    labels = []
    for unit_def_id in unit_def_ids:
        name = unit_names.get(int(unit_def_id))
        labels.append(f"{name} [{unit_def_id}]" if name else f"unit def {unit_def_id}")
    return labels


def damage_by_unit_figure(damage: pd.DataFrame, unit_names: dict[int, str]):
    """Draw the total damage of the 20 unit types that dealt the most, largest on top."""
    top = damage.nlargest(TOP_UNIT_TYPES, "total_damage_dealt").copy()
    top["unit"] = unit_type_labels(top["unit_def_id"], unit_names)

    plot = figure(y_range=list(reversed(top["unit"].tolist())), width=1100,
                  height=60 + 24 * len(top), tools=TOOLS, name="damage-by-unit",
                  title=f"Damage dealt by unit type (top {len(top)} of {len(damage)})",
                  x_axis_label="total damage dealt")
    plot.hbar(y="unit", right="total_damage_dealt", height=0.8, source=frame_source(top),
              color="#1f77b4")
    plot.x_range.start = 0
    plot.xaxis.formatter = NumeralTickFormatter(format="0.[0]a")
    plot.ygrid.grid_line_color = None
    plot.add_tools(HoverTool(tooltips=[("unit type", "@unit"),
                                       ("damage", "@total_damage_dealt{0,0}"),
                                       ("hits", "@hits{0,0}")]))
    return plot


def marker_sizes(damage: np.ndarray) -> np.ndarray:
    """Return marker diameters in pixels whose areas grow with ``damage``.

    The largest damage gets MAX_MARKER_PIXELS and no damage MIN_MARKER_PIXELS.
    """
    largest = float(damage.max()) if len(damage) else 0.0
    if largest <= 0:
        return np.full(len(damage), float(MIN_MARKER_PIXELS))
    return MIN_MARKER_PIXELS + (MAX_MARKER_PIXELS - MIN_MARKER_PIXELS) * np.sqrt(damage / largest)


def engagement_map_figure(engagements: pd.DataFrame, roster: Roster,
                          start_pos: pd.DataFrame | None, game_meta: dict | None):
    """Draw engagements at their mean victim position, sized by damage, colored by time.

    The z axis points down, as z grows from the top edge of the map in the engine.
    Start positions from start_pos are marked with the player's name. The map's
    outline is drawn when game_meta.json gives its size.
    """
    minutes = engagements["start_frame"].to_numpy() / FRAMES_PER_MINUTE
    # float32 halves the data embedded in the page and keeps about 7 digits.
    source = ColumnDataSource({
        "x": engagements["location_x"].to_numpy(np.float32),
        "z": engagements["location_z"].to_numpy(np.float32),
        "size": marker_sizes(engagements["total_damage"].to_numpy()).astype(np.float32),
        "minute": minutes.astype(np.float32),
        "damage": engagements["total_damage"].to_numpy(np.float32),
        "duration": engagements["duration_seconds"].to_numpy(np.float32),
        "hits": engagements["hits"].to_numpy(np.int32),
    })

    plot = figure(width=760, height=760, match_aspect=True, tools=TOOLS,
                  x_range=DataRange1d(), y_range=DataRange1d(flipped=True),
                  title="Engagements on the map (size: damage, color: start minute)",
                  x_axis_label="x", y_axis_label="z", name="engagement-map")
    color = linear_cmap("minute", Viridis256, low=0, high=float(max(minutes.max(), 1)))
    markers = plot.scatter("x", "z", size="size", source=source, fill_color=color,
                           fill_alpha=0.45, line_color=None)
    plot.add_layout(ColorBar(color_mapper=color.transform, title="start minute"), "right")
    plot.add_tools(HoverTool(renderers=[markers], tooltips=[
        ("start minute", "@minute{0.0}"), ("duration", "@duration{0.0} s"),
        ("damage", "@damage{0,0}"), ("hits", "@hits"), ("x, z", "@x{0}, @z{0}")]))

    _draw_map_outline(plot, game_meta)
    _draw_start_positions(plot, roster, start_pos)
    return plot


def _draw_map_outline(plot, game_meta: dict | None) -> None:
    size = (game_meta or {}).get("Map") or {}
    try:
        width = float(size["width"]) * ELMOS_PER_MAP_SQUARE
        height = float(size["height"]) * ELMOS_PER_MAP_SQUARE
    except (KeyError, TypeError, ValueError):
        return
    plot.rect(x=width / 2, y=height / 2, width=width, height=height, fill_color=None,
              line_color="#888888", line_dash="dashed")


def _draw_start_positions(plot, roster: Roster, start_pos: pd.DataFrame | None) -> None:
    if start_pos is None or start_pos.empty:
        return
    players = [roster.player(int(team)) for team in start_pos["player_id"]]
    source = ColumnDataSource({"x": start_pos["x"].to_numpy(), "z": start_pos["z"].to_numpy(),
                               "name": [player.name for player in players],
                               "color": [player.color for player in players]})
    plot.scatter("x", "z", source=source, marker="triangle", size=12, fill_color="color",
                 line_color="black")
    plot.add_layout(LabelSet(x="x", y="z", text="name", source=source, x_offset=6,
                             y_offset=-6, text_font_size="8pt"))


def engagements_per_minute(engagements: pd.DataFrame) -> pd.DataFrame:
    """Return per game minute the engagements that start in it and their damage and hits."""
    minute = engagements["start_frame"] // FRAMES_PER_MINUTE
    per_minute = engagements.groupby(minute).agg(engagements=("start_frame", "size"),
                                                 damage=("total_damage", "sum"),
                                                 hits=("hits", "sum"))
    per_minute.index.name = "minute"
    return per_minute.reset_index()


def engagement_timeline_figure(engagements: pd.DataFrame):
    """Draw the damage of the engagements that start in each game minute."""
    per_minute = engagements_per_minute(engagements)
    plot = figure(width=1100, height=320, tools=TOOLS, name="engagement-timeline",
                  title="Damage of the engagements starting in each game minute",
                  x_axis_label="game minute", y_axis_label="damage")
    plot.vbar(x="minute", top="damage", width=0.9, source=frame_source(per_minute),
              color="#ff7f0e")
    plot.y_range.start = 0
    plot.yaxis.formatter = NumeralTickFormatter(format="0.[0]a")
    plot.add_tools(HoverTool(tooltips=[("minute", "@minute"),
                                       ("engagements", "@engagements"),
                                       ("damage", "@damage{0,0}"), ("hits", "@hits{0,0}")]))
    return plot
