import sys
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

sys.path.insert(0, str(Path(__file__).parent))

from helpers import EXAMPLE_REPLAY  # noqa: E402
from mpp_dask.stats.registry import build_registry  # noqa: E402


@pytest.fixture(scope="session")
def example_replay() -> Path:
    """The real example replay from ../shared, or skip where it is absent."""
    if not (EXAMPLE_REPLAY / "damage_log.mpk").exists():
        pytest.skip(f"the real example replay is not at {EXAMPLE_REPLAY} "
                    "(it lives in the shared folder beside the repository)")
    return EXAMPLE_REPLAY


@pytest.fixture(scope="module")
def client():
    """A client of a real LocalCluster of 2 worker processes, one per test module."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, host="127.0.0.1") as cluster:
        with Client(cluster) as client:
            yield client


@pytest.fixture(scope="module")
def registry():
    """The registry of the built-in stats."""
    return build_registry()
