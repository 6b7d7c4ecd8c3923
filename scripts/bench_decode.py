"""Measure the decode throughput of the reference and the compiled decoder per aspect file.

For each aspect file of a replay folder, and in total, the script prints MB/s of:

- ``A``: plain ``msgpack.Unpacker`` iteration over the file's bytes, rows not converted;
- ``python``: ``decode.decode_window`` over the whole file (rows, checks, clean frame);
- ``fast scan``: the compiled loop alone, writing raw int64 columns;
- ``fast``: ``fast.fast_decode_window``, which returns the same clean frame as ``python``.

Each figure is the best of ``--repeat`` runs, and the methods take turns within each
run, so that load from other processes hits them alike. A file the compiled decoder
declines (string fields) counts in the fast total with its ``python`` time, as the
reader would fall back to it.

Usage: python scripts/bench_decode.py [REPLAY_FOLDER] [--repeat N] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import msgpack

from mpp_dask.reading import fast
from mpp_dask.reading.decode import decode_window
from mpp_dask.schema import ASPECTS

DEFAULT_REPLAY = (Path(__file__).resolve().parents[2] / "shared" / "data" / "replays"
                  / "example_8v8")

CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def iterate_unpacker(data: bytes) -> None:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    for _ in unpacker:
        pass


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_REPLAY,
                        help="replay folder containing <aspect>.mpk files (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=7,
                        help="runs per method and file; the best counts (default: %(default)s)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: CPU time of this thread, which "
                             "ignores time the process waits for a core (default: %(default)s)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    clock = CLOCKS[args.clock]
    paths = [args.folder / ASPECTS[name].file_name for name in sorted(ASPECTS)]
    paths = [path for path in paths if path.exists()]
    if not paths:
        raise SystemExit(f"no aspect files found in {args.folder}")

    if fast.compiled_scan_window() is None:
        raise SystemExit("numba is not installed, so there is no compiled decoder to measure")
    started = time.perf_counter()
    first = paths[0].read_bytes()
    fast.fast_decode_window(memoryview(first), 0, 0, len(first), True,
                            ASPECTS[paths[0].stem])
    print(f"compiled loop ready after {time.perf_counter() - started:.2f} s "
          "(numba import, then compile or load from cache)\n")

    print("throughput in MB/s (1 MB = 10**6 bytes), and ratios of throughput")
    print(f"{'file':24} {'MB':>6} {'A':>8} {'python':>8} {'fast scan':>10} {'fast':>8}"
          f" {'fast/A':>7} {'fast/python':>12}")
    totals = {"A": 0.0, "python": 0.0, "scan": 0.0, "fast": 0.0}
    total_bytes = 0

    for path in paths:
        data = path.read_bytes()
        aspect = ASPECTS[path.stem]
        window = memoryview(data)
        methods = {
            "A": lambda: iterate_unpacker(data),
            "python": lambda: decode_window(window, 0, 0, len(data), True, aspect, False),
            "scan": lambda: fast.scan_window(window, 0, 0, len(data), True, aspect),
            "fast": lambda: fast.fast_decode_window(window, 0, 0, len(data), True, aspect),
        }
        declined = fast.fast_decode_window(window, 0, 0, len(data), True, aspect) is None
        if declined:
            del methods["scan"], methods["fast"]

        best = {name: float("inf") for name in methods}
        for _ in range(args.repeat):
            for name, method in methods.items():
                before = clock()
                method()
                best[name] = min(best[name], clock() - before)
        if declined:
            best["scan"] = best["fast"] = best["python"]

        megabytes = len(data) / 1e6
        total_bytes += len(data)
        for name in totals:
            totals[name] += best[name]
        rate = {name: megabytes / seconds for name, seconds in best.items()}
        note = "  (declined: string fields)" if declined else ""
        print(f"{path.name:24} {megabytes:6.2f} {rate['A']:8.0f} {rate['python']:8.1f}"
              f" {rate['scan']:10.0f} {rate['fast']:8.0f} {best['A'] / best['fast']:7.2f}"
              f" {best['python'] / best['fast']:12.1f}{note}")

    megabytes = total_bytes / 1e6
    rate = {name: megabytes / seconds for name, seconds in totals.items()}
    print(f"{'total':24} {megabytes:6.2f} {rate['A']:8.0f} {rate['python']:8.1f}"
          f" {rate['scan']:10.0f} {rate['fast']:8.0f} {totals['A'] / totals['fast']:7.2f}"
          f" {totals['python'] / totals['fast']:12.1f}")
    print(f"\nbest of {args.repeat} runs, {args.clock} clock")


if __name__ == "__main__":
    main()
