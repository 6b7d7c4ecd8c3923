"""Compute ground height and unit motion on the made-up map of a synthetic replay."""

from __future__ import annotations

import numpy as np

from mpp_dask.generate.plan import Units
from mpp_dask.generate.unit_defs import UnitDefs

def terrain_height(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Return the made-up map's ground height (y) at map points (x, z)."""
    return 175 + 40 * np.sin(x / 900 + 0.6) * np.cos(z / 1400) + 15 * np.sin((x + z) / 500)


def _terrain_slope(x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ridge = 15 / 500 * np.cos((x + z) / 500)
    slope_x = 40 / 900 * np.cos(x / 900 + 0.6) * np.cos(z / 1400) + ridge
    slope_z = -40 / 1400 * np.sin(x / 900 + 0.6) * np.sin(z / 1400) + ridge
    return slope_x, slope_z


def unit_motion(units: Units, defs: UnitDefs, rows: np.ndarray,
                frames: np.ndarray) -> tuple[np.ndarray, ...]:
    """Return position (x, y, z) and velocity (elmos per frame) of units at frames.

    A unit waits at its spawn point until finished, travels to its goal on a smooth
    step and wanders around it on a Lissajous curve.

    Parameters
    ----------
    units, defs
        The plan's units and unit definitions.
    rows : numpy.ndarray
        Unit rows.
    frames : numpy.ndarray
        One frame per row.

    Returns
    -------
    tuple of numpy.ndarray
        x, y, z, vx, vy, vz as float64.
    """
    elapsed = frames - units.finished[rows]
    moving = elapsed > 0
    travel = units.travel_frames[rows]
    progress = np.clip(elapsed / travel, 0, 1)
    ease = progress * progress * (3 - 2 * progress)
    ease_rate = 6 * progress * (1 - progress) / travel
    wander = np.where(moving, units.wander[rows], 0.0)
    angle_x = units.omega_x[rows] * elapsed + units.phase_x[rows]
    angle_z = units.omega_z[rows] * elapsed + units.phase_z[rows]

    dx = units.goal_x[rows] - units.spawn_x[rows]
    dz = units.goal_z[rows] - units.spawn_z[rows]
    x = units.spawn_x[rows] + dx * ease + wander * (np.sin(angle_x) - np.sin(units.phase_x[rows]))
    z = units.spawn_z[rows] + dz * ease + wander * (np.sin(angle_z) - np.sin(units.phase_z[rows]))
    vx = dx * ease_rate + wander * units.omega_x[rows] * np.cos(angle_x)
    vz = dz * ease_rate + wander * units.omega_z[rows] * np.cos(angle_z)
    slope_x, slope_z = _terrain_slope(x, z)
    y = terrain_height(x, z) + defs.altitude[units.def_row[rows]]
    vy = slope_x * vx + slope_z * vz
    return x, y, z, vx, vy, vz


def _heading(vx: np.ndarray, vz: np.ndarray) -> np.ndarray:
    # Spring headings map a full turn to the int16 range; 0 faces +z.
    heading = np.round(np.arctan2(vx, vz) * 32768 / np.pi).astype(np.int64)
    return np.clip(heading, -32768, 32767)


def _rounded(*arrays: np.ndarray) -> list[np.ndarray]:
    return [np.round(array).astype(np.int64) for array in arrays]
