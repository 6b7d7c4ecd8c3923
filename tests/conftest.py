import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import EXAMPLE_REPLAY  # noqa: E402


@pytest.fixture(scope="session")
def example_replay() -> Path:
    """The real example replay from ../shared, or skip where it is absent."""
    if not (EXAMPLE_REPLAY / "damage_log.mpk").exists():
        pytest.skip(f"the real example replay is not at {EXAMPLE_REPLAY} "
                    "(it lives in the shared folder beside the repository)")
    return EXAMPLE_REPLAY
