"""Time one synthetic replay and list its files: bytes and rows per aspect.

Usage: python scripts/time_generate.py OUT_DIR [MINUTES [TEAMS [UNITS_PER_TEAM]]]
The script does not measure peak memory, so run it under ``/usr/bin/time -v`` for that.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mpp_dask.generate import generate_replay


def main(argv: list[str]) -> None:
    if not 2 <= len(argv) <= 5:
        sys.exit(__doc__)
    out_dir = Path(argv[1])
    minutes = float(argv[2]) if len(argv) > 2 else 10
    teams = int(argv[3]) if len(argv) > 3 else 4
    units_per_team = int(argv[4]) if len(argv) > 4 else None

    started = time.perf_counter()
    rows = generate_replay(out_dir, minutes=minutes, teams=teams,
                           units_per_team=units_per_team)
    seconds = time.perf_counter() - started

    total_bytes = 0
    for path in sorted(out_dir.iterdir()):
        size = path.stat().st_size
        total_bytes += size
        print(f"{path.name:28} {size:>15,} bytes {rows.get(path.stem, ''):>12}")
    print(f"total {total_bytes:,} bytes and {sum(rows.values()):,} rows in {seconds:.1f} s "
          f"({total_bytes / seconds / 1e6:.1f} MB/s)")


if __name__ == "__main__":
    main(sys.argv)
