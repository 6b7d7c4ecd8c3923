"""The registry declarations of the per-player, per-unit-def and timeline stats."""

from __future__ import annotations

import pytest

from mpp_dask.stats import build_registry

DECLARED_ASPECTS = {
    "damage_by_unit_def": ("damage_log",),
    "resources_by_player": ("team_stats",),
    "player_collaboration": ("team_stats",),
    "player_economic_efficiency": ("team_stats",),
    "calculate_player_apm_and_focus": ("commands_log",),
    "map_control_timeline": ("unit_positions",),
    "force_composition_timeline": ("unit_events",),
}


@pytest.mark.parametrize(("name", "aspects"), DECLARED_ASPECTS.items())
def test_stat_registered_as_default(name, aspects):
    registry = build_registry()

    assert name in registry
    assert registry[name].default
    assert registry[name].aspects == aspects
    assert registry[name].source == "mpp_dask"
    assert name in [stat.name for stat in registry.defaults()]
