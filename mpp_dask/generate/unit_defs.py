"""Define the made-up unit types of a synthetic replay: roles, stats and ``defs.csv`` ids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpp_dask.schema import FRAMES_PER_SECOND

COMMANDER, FACTORY, CONSTRUCTOR, GROUND, AIRCRAFT, ECONOMY, DEFENSE = range(7)
_MOBILE_ROLES = (COMMANDER, CONSTRUCTOR, GROUND, AIRCRAFT)
_ARMED_ROLES = (COMMANDER, GROUND, AIRCRAFT, DEFENSE)
_BUILT_BY_FACTORY = (CONSTRUCTOR, GROUND, AIRCRAFT)

# Share of each role among the units a team builds after its first factory.
_ROLE_SHARES = {FACTORY: 0.03, CONSTRUCTOR: 0.08, GROUND: 0.50, AIRCRAFT: 0.08,
                ECONOMY: 0.24, DEFENSE: 0.07}

_FACTIONS = (("aur", "Aurora"), ("kro", "Krona"))

_WEAPON_BEAM, _WEAPON_PARALYZER, _WEAPON_SHELL = 1, 2, 3


@dataclass(frozen=True)
class _DefTemplate:
    """One made-up unit type, built by each faction under its own prefix."""

    suffix: str
    human_name: str
    tooltip: str
    role: int
    max_health: int
    max_range: int
    speed: float          # elmos per frame at full speed; 0 for buildings
    build_seconds: int
    weapon: int = 0       # 0 unarmed, else _WEAPON_BEAM, _WEAPON_PARALYZER or _WEAPON_SHELL
    altitude: int = 0     # cruise height above ground, aircraft only
    metal_make: int = 0   # unit_economy rates in tenths per second
    metal_use: int = 0
    energy_make: int = 0
    energy_use: int = 0
    weight: float = 1.0   # how often a team builds it, relative to its role's other types


_DEF_TEMPLATES = (
    _DefTemplate("com", "Commander", "Commander", COMMANDER, 3700, 300, 1.3, 0,
                 weapon=_WEAPON_BEAM, metal_make=20, energy_make=250),
    _DefTemplate("botyard", "Bot Yard", "Produces light bots", FACTORY, 2900, 0, 0, 40,
                 metal_use=60, energy_use=800),
    _DefTemplate("motorpool", "Motor Pool", "Produces light vehicles", FACTORY, 3600, 0, 0, 55,
                 metal_use=90, energy_use=1100),
    _DefTemplate("hangar", "Hangar", "Produces light aircraft", FACTORY, 2100, 0, 0, 70,
                 metal_use=70, energy_use=1800),
    _DefTemplate("mason", "Mason", "Construction bot", CONSTRUCTOR, 600, 0, 1.1, 14),
    _DefTemplate("hauler", "Hauler", "Construction vehicle", CONSTRUCTOR, 1100, 0, 1.5, 18),
    _DefTemplate("runner", "Runner", "Fast raider bot", GROUND, 280, 180, 2.8, 6,
                 weapon=_WEAPON_BEAM),
    _DefTemplate("lancer", "Lancer", "Light laser bot", GROUND, 700, 260, 1.6, 10,
                 weapon=_WEAPON_BEAM),
    _DefTemplate("mortar", "Mortar", "Artillery bot", GROUND, 450, 700, 1.3, 14,
                 weapon=_WEAPON_SHELL),
    _DefTemplate("crawler", "Crawler", "Light tank", GROUND, 1600, 300, 1.9, 18,
                 weapon=_WEAPON_SHELL),
    _DefTemplate("jolt", "Jolt", "Paralyzer bot", GROUND, 500, 250, 1.7, 12,
                 weapon=_WEAPON_PARALYZER, weight=0.05),
    _DefTemplate("bastion", "Bastion", "Heavy assault tank", GROUND, 4200, 380, 1.0, 45,
                 weapon=_WEAPON_SHELL, weight=0.3),
    _DefTemplate("kestrel", "Kestrel", "Fighter aircraft", AIRCRAFT, 200, 500, 7.0, 12,
                 weapon=_WEAPON_SHELL, altitude=110),
    _DefTemplate("condor", "Condor", "Bomber aircraft", AIRCRAFT, 900, 80, 5.5, 25,
                 weapon=_WEAPON_SHELL, altitude=150),
    _DefTemplate("drill", "Metal Drill", "Extracts metal", ECONOMY, 300, 0, 0, 8,
                 metal_make=20, energy_use=30),
    _DefTemplate("solar", "Solar Panel", "Produces energy", ECONOMY, 500, 0, 0, 10,
                 energy_make=200),
    _DefTemplate("turbine", "Wind Turbine", "Produces energy from wind", ECONOMY, 200, 0, 0, 8),
    _DefTemplate("watch", "Watch Tower", "Light laser turret", DEFENSE, 900, 450, 0, 16,
                 weapon=_WEAPON_BEAM),
    _DefTemplate("spire", "Flak Spire", "Anti-air turret", DEFENSE, 1400, 800, 0, 25,
                 weapon=_WEAPON_SHELL),
)

# Wind turbines make energy in proportion to map_envir_econ.wind_strength.
_TURBINE_SUFFIX = "turbine"


@dataclass(frozen=True)
class UnitDefs:
    """The made-up unit definitions of ``defs.csv``, as parallel arrays."""

    ids: np.ndarray
    names: list[str]
    human_names: list[str]
    tooltips: list[str]
    faction: np.ndarray
    role: np.ndarray
    max_health: np.ndarray
    max_range: np.ndarray
    speed: np.ndarray
    build_frames: np.ndarray
    weapon_id: np.ndarray   # 0 for unarmed defs
    beam: np.ndarray
    paralyzer: np.ndarray
    altitude: np.ndarray
    turbine: np.ndarray
    metal_make: np.ndarray
    metal_use: np.ndarray
    energy_make: np.ndarray
    energy_use: np.ndarray
    weight: np.ndarray

    def of_role(self, faction: int, role: int) -> np.ndarray:
        """Return the def rows of one faction and role."""
        return np.flatnonzero((self.faction == faction) & (self.role == role))


def _unit_defs() -> UnitDefs:
    entries = [(prefix + template.suffix, faction, label, template)
               for faction, (prefix, label) in enumerate(_FACTIONS)
               for template in _DEF_TEMPLATES]
    entries.sort(key=lambda entry: entry[0])  # Real defs.csv ids follow name order.
    templates = [entry[3] for entry in entries]

    def column(attribute: str, dtype: type = np.int64) -> np.ndarray:
        return np.array([getattr(t, attribute) for t in templates], dtype=dtype)

    weapon_kind = column("weapon")
    armed = weapon_kind > 0
    # Weapon ids are made up: the armed defs numbered in name order from 101.
    weapon_id = np.where(armed, 100 + np.cumsum(armed), 0)
    return UnitDefs(
        ids=np.arange(1, len(entries) + 1, dtype=np.int64),
        names=[entry[0] for entry in entries],
        human_names=[f"{entry[2]} {entry[3].human_name}" for entry in entries],
        tooltips=[t.tooltip for t in templates],
        faction=np.array([entry[1] for entry in entries], dtype=np.int64),
        role=column("role"),
        max_health=column("max_health"),
        max_range=column("max_range"),
        speed=column("speed", np.float64),
        build_frames=column("build_seconds") * FRAMES_PER_SECOND,
        weapon_id=weapon_id,
        beam=weapon_kind == _WEAPON_BEAM,
        paralyzer=weapon_kind == _WEAPON_PARALYZER,
        altitude=column("altitude"),
        turbine=np.array([t.suffix == _TURBINE_SUFFIX for t in templates]),
        metal_make=column("metal_make"),
        metal_use=column("metal_use"),
        energy_make=column("energy_make"),
        energy_use=column("energy_use"),
        weight=column("weight", np.float64),
    )
