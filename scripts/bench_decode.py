"""Measure the decode throughput of the compiled decoder against plain msgpack per aspect file.

For each aspect file of a replay folder, and in total, the script prints MB/s of:

- ``A``: plain ``msgpack.Unpacker`` iteration over the file's bytes, rows not converted;
- ``loops``: the compiled loops alone (``fast.scan_window``), writing the clean columns;
- ``full``: ``decode.decode_window``, the reader's path: the compiled loops, all
  checks (types, nulls, row length, enum codes, frame order) and the clean frame;
- ``reference`` (with ``--reference``): the pure-Python path, ``rows.scan_rows`` and
  ``columns.build_clean_frame``, which the reader uses for windows with problems.

All methods run on the same bytes in the same process. Each figure is the best of
``--repeat`` runs, and the methods take turns within each run, so that load from
other processes hits them alike. A file the compiled decoder declines (string
fields) counts in the totals with the reference path's time, as the reader would
fall back to it.

A second table repeats ``A`` and ``full`` on a small window at the start of each
file (``--small-bytes``), which shows the fixed cost per call of a small partition.

Usage: python scripts/bench_decode.py [REPLAY_FOLDER] [--repeat N] [--clock cpu|wall]
       [--reference] [--small-bytes N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import msgpack
import numpy as np

from mpp_dask.reading import fast
from mpp_dask.reading.columns import build_clean_frame
from mpp_dask.reading.decode import decode_window
from mpp_dask.reading.rows import scan_rows
from mpp_dask.schema import ASPECTS, Aspect

DEFAULT_REPLAY = (Path(__file__).resolve().parents[2] / "shared" / "data" / "replays"
                  / "example_8v8")

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def iterate_unpacker(data: bytes) -> None:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    for _ in unpacker:
        pass


def decode_reference(window: memoryview, stop: int, aspect: Aspect) -> None:
    scan = scan_rows(window, 0, 0, stop, True, aspect, False)
    build_clean_frame(scan.rows, np.asarray(scan.offsets, dtype=np.int64), aspect, row_base=0)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_REPLAY,
                        help="replay folder containing <aspect>.mpk files (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=9,
                        help="runs per method and file; the best counts (default: %(default)s)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: CPU time of this process (time.process_time), which "
                             "ignores time the process waits for a core; wall: elapsed "
                             "time (default: %(default)s)")
    parser.add_argument("--reference", action="store_true",
                        help="also measure the pure-Python reference path, which takes "
                             "about 5 s per run on the example replay")
    parser.add_argument("--small-bytes", type=int, default=65536,
                        help="size in bytes of the small window per file (default: %(default)s)")
    return parser.parse_args()


def best_times(methods: dict, repeat: int, clock) -> dict:
    """Return the best time of each method over ``repeat`` runs that take turns."""
    best = {name: float("inf") for name in methods}
    for _ in range(repeat):
        for name, method in methods.items():
            before = clock()
            method()
            best[name] = min(best[name], clock() - before)
    return best


def measure_files(paths: list[Path], args: argparse.Namespace) -> None:
    clock = CLOCKS[args.clock]
    columns = ["A", "loops", "full"] + (["reference"] if args.reference else [])
    header = f"{'file':24} {'MB':>6} " + " ".join(f"{name:>9}" for name in columns)
    print("throughput in MB/s (1 MB = 10**6 bytes), and the ratio of full to A")
    print(header + f" {'full/A':>7}")
    totals = dict.fromkeys(columns, 0.0)
    total_bytes = 0

    for path in paths:
        data = path.read_bytes()
        aspect = ASPECTS[path.stem]
        window = memoryview(data)
        methods = {
            "A": lambda: iterate_unpacker(data),
            "loops": lambda: fast.scan_window(window, 0, 0, len(data), True, aspect),
            "full": lambda: decode_window(window, 0, 0, len(data), True, aspect, False),
        }
        declined = fast.fast_decode_window(window, 0, 0, len(data), True, aspect) is None
        if declined:
            del methods["loops"]
        if args.reference:
            methods["reference"] = lambda: decode_reference(window, len(data), aspect)

        best = best_times(methods, args.repeat, clock)
        if declined:
            best["loops"] = best["full"]
        megabytes = len(data) / 1e6
        total_bytes += len(data)
        for name in columns:
            totals[name] += best[name]
        rates = " ".join(f"{megabytes / best[name]:9.0f}" for name in columns)
        note = "  (declined: string fields)" if declined else ""
        print(f"{path.name:24} {megabytes:6.2f} {rates} {best['A'] / best['full']:7.2f}{note}")

    megabytes = total_bytes / 1e6
    rates = " ".join(f"{megabytes / totals[name]:9.0f}" for name in columns)
    print(f"{'total':24} {megabytes:6.2f} {rates} {totals['A'] / totals['full']:7.2f}")


def measure_small_windows(paths: list[Path], args: argparse.Namespace) -> None:
    clock = CLOCKS[args.clock]
    print(f"\nsmall windows: the rows that start in the first {args.small_bytes} bytes "
          "of each file, in microseconds per call")
    print(f"{'file':24} {'rows':>6} {'A':>9} {'full':>9} {'full/A':>7}")
    for path in paths:
        data = path.read_bytes()
        aspect = ASPECTS[path.stem]
        stop = min(args.small_bytes, len(data))
        # The window reaches past the stop, as the reader's windows do, to finish
        # the last row.
        window = memoryview(data[:stop + 4096])
        at_eof = stop + 4096 >= len(data)
        decoded = decode_window(window, 0, 0, stop, at_eof, aspect, False)
        rows_bytes = data[:decoded.end]

        best = best_times({
            "A": lambda: iterate_unpacker(rows_bytes),
            "full": lambda: decode_window(window, 0, 0, stop, at_eof, aspect, False),
        }, args.repeat, clock)
        print(f"{path.name:24} {len(decoded.frame):6d} {best['A'] * 1e6:9.0f}"
              f" {best['full'] * 1e6:9.0f} {best['A'] / best['full']:7.2f}")


def main() -> None:
    args = parse_args()
    paths = [args.folder / ASPECTS[name].file_name for name in sorted(ASPECTS)]
    paths = [path for path in paths if path.exists()]
    if not paths:
        raise SystemExit(f"no aspect files found in {args.folder}")
    if fast.compiled_scan_window() is None:
        raise SystemExit("numba is not installed, so there is no compiled decoder to measure")

    started = time.perf_counter()
    for path in paths:
        data = path.read_bytes()
        fast.fast_decode_window(memoryview(data), 0, 0, len(data), True, ASPECTS[path.stem])
    print(f"compiled loops ready after {time.perf_counter() - started:.2f} s "
          "(numba import, then compile or load from the disk cache)\n")

    measure_files(paths, args)
    measure_small_windows(paths, args)
    print(f"\nbest of {args.repeat} runs, {args.clock} clock")


if __name__ == "__main__":
    main()
