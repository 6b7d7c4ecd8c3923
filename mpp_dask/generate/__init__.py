"""Write deterministic synthetic replays shaped like real Beyond All Reason exports.

A synthetic replay is a folder with every aspect file of :data:`mpp_dask.schema.ASPECTS`,
``defs.csv`` and ``game_meta.json``. The data follows one simulated match, so ids and
frames agree across aspects: a unit is CREATED before it moves, is hit, builds or is
given commands, and it appears in no time series after the frame it is DESTROYED.
``team_stats`` damage and death counters are the running sums of ``damage_log`` and
``unit_events``.

Rows are built as numpy columns in time windows and encoded to MessagePack with
numpy (:func:`encode_block`), so even gigabyte replays are written at tens of MB/s
with bounded memory.

The modules, in the order the data flows:

- ``unit_defs``: the made-up unit types of ``defs.csv``;
- ``plan``: the simulated match (:func:`plan_replay`);
- ``geometry``: ground height and unit motion on the made-up map;
- ``aspects``: the rows of each aspect, built from the plan (:func:`aspect_blocks`);
- ``encode``: the numpy MessagePack encoder (:func:`encode_block`);
- ``files``: :func:`generate_replay`, which writes the replay folder.
"""

from mpp_dask.generate.aspects import aspect_blocks
from mpp_dask.generate.encode import RowBlock, encode_block
from mpp_dask.generate.files import generate_replay
from mpp_dask.generate.plan import ReplayPlan, plan_replay

__all__ = ["ReplayPlan", "RowBlock", "aspect_blocks", "encode_block", "generate_replay",
           "plan_replay"]
