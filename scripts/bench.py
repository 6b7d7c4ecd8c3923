"""Benchmark decoding and whole runs, as ratios against baselines measured in the same run.

Figures printed:

- baseline A: plain ``msgpack.Unpacker`` iteration over the aspect bytes (no columns);
- baseline B: ``pandas.read_parquet`` of the same clean tables;
- mpp-dask's decode of whole files into typed frames in this process, with the
  compiled decoder and with the reference (pure Python) path;
- ``mpp-dask run`` end to end (all default stats and every stream) on the real example
  and on a generated replay, with wall time and the peak resident memory of the
  client and of every worker process;
- a first run with ``--cache-dir`` versus a second run that reads the decoded
  partitions from the cache, on the real example and on a gzip copy of it, as wall
  time and as the time of the compute-and-commit stage;
- 1 versus 2 workers on the generated replay;
- the fixed cost of a run: ``mpp-dask run`` on a tiny replay.

Usage::

    python scripts/bench.py [--example DIR] [--generated-gb 1.0] [--skip-scaling]

The machine is shared and noisy: every ratio compares numbers taken minutes apart
in the same run, and each figure is the best of ``--repeat`` tries.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack
import pandas as pd
import psutil

from mpp_dask.generate import generate_replay
from mpp_dask.reading import fast
import mpp_dask.reading.decode as decode_module
from mpp_dask.reading.decode import decode_range
from mpp_dask.schema import ASPECTS

DEFAULT_EXAMPLE = Path(__file__).resolve().parents[2] / "shared/data/replays/example_8v8"
CLI = [sys.executable, "-m", "mpp_dask"]


def _aspect_files(folder: Path) -> list[Path]:
    return [folder / f"{name}.mpk" for name in ASPECTS if (folder / f"{name}.mpk").exists()]


def _best_of(repeat: int, work) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def time_unpacker(files: list[Path], repeat: int) -> float:
    """Return the seconds of plain Unpacker iteration over the files (baseline A)."""
    data = [path.read_bytes() for path in files]

    def iterate_plain() -> None:
        for blob in data:
            unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(blob) + 1)
            unpacker.feed(blob)
            for _ in unpacker:
                pass

    return _best_of(repeat, iterate_plain)


def time_decode(files: list[Path], repeat: int, compiled: bool) -> float:
    """Return the seconds of decoding the files whole into clean frames in this process."""
    def decode_all() -> None:
        for path in files:
            size = path.stat().st_size
            decode_range(str(path), aspect_name=path.stem, offset=0, stop=size, file_size=size)

    if compiled:
        decode_all()  # load or compile the decoder before timing
        return _best_of(repeat, decode_all)

    # The reference path runs wherever the compiled decoder declines a window.
    saved = decode_module.fast_decode_window
    decode_module.fast_decode_window = lambda *args, **kwargs: None
    try:
        return _best_of(repeat, decode_all)
    finally:
        decode_module.fast_decode_window = saved


def time_read_parquet(files: list[Path], work: Path, repeat: int) -> float:
    """Write the clean tables as Parquet, then time reading them back (baseline B)."""
    paths = []
    for path in files:
        size = path.stat().st_size
        frame = decode_range(str(path), aspect_name=path.stem, offset=0, stop=size,
                             file_size=size).frame
        target = work / f"{path.stem}.parquet"
        frame.to_parquet(target, index=False)
        paths.append(target)
    return _best_of(repeat, lambda: [pd.read_parquet(p) for p in paths])


class PeakMemory:
    """Sample the resident memory of a process and its children until stopped."""

    def __init__(self, pid: int, interval: float = 0.2):
        self._root = psutil.Process(pid)
        self._interval = interval
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self._root, *self._root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in processes:
                try:
                    label = "client" if process.pid == self._root.pid else _label(process)
                    rss = process.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                self.peaks[label] = max(self.peaks.get(label, 0), rss)
            time.sleep(self._interval)


def _label(process: psutil.Process) -> str:
    command = " ".join(process.cmdline())
    kind = "worker" if "spawn_main" in command else "helper"
    return f"{kind} {process.pid}"


def time_run(replay: Path, output: Path, *extra: str) -> tuple[float, dict[str, int]]:
    """Run ``mpp-dask run`` with every default stat and stream; return seconds and peaks."""
    shutil.rmtree(output, ignore_errors=True)
    command = [*CLI, "run", "bench", "-i", str(replay), "-o", str(output), "-u", "all",
               "--no-progress", "--log-level", "WARNING", "--dashboard-address",
               "127.0.0.1:0", *extra]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    with PeakMemory(process.pid) as memory:
        code = process.wait()
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"mpp-dask run failed with exit code {code}: {' '.join(command)}")
    return seconds, memory.peaks


def gzip_copy(replay: Path, target: Path) -> Path:
    """Write a copy of the replay's aspect files as ``.mpk.gz`` files and return its folder."""
    target.mkdir(parents=True, exist_ok=True)
    for path in _aspect_files(replay):
        with open(path, "rb") as source, gzip.open(target / f"{path.name}.gz", "wb") as sink:
            shutil.copyfileobj(source, sink)
    return target


_COMPUTE_STAGE = re.compile(r"stage compute and commit: .* in ([0-9.]+) s")


def time_run_stage(replay: Path, output: Path, *extra: str) -> tuple[float, float]:
    """Run ``mpp-dask run`` with every default stat and stream.

    Returns the wall seconds and the seconds of the compute-and-commit stage, as
    the run logs them.
    """
    shutil.rmtree(output, ignore_errors=True)
    command = [*CLI, "run", "bench", "-i", str(replay), "-o", str(output), "-u", "all",
               "--no-progress", "--log-level", "INFO", "--dashboard-address",
               "127.0.0.1:0", *extra]
    started = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    seconds = time.perf_counter() - started
    match = _COMPUTE_STAGE.search(result.stderr)
    if result.returncode != 0 or match is None:
        raise SystemExit(f"mpp-dask run failed with exit code {result.returncode}: "
                         f"{' '.join(command)}\n{result.stderr}")
    return seconds, float(match.group(1))


def print_cached_rerun(label: str, replay: Path, work: Path, repeat: int) -> None:
    """Print the best of ``repeat`` first runs into an empty cache and of the re-runs after each."""
    cache = work / "cache"
    first_runs, cached_runs = [], []
    for _ in range(repeat):
        shutil.rmtree(cache, ignore_errors=True)
        first_runs.append(time_run_stage(replay, work / "out-cache", "--cache-dir", str(cache)))
        cached_runs.append(time_run_stage(replay, work / "out-cache", "--cache-dir", str(cache)))
    first_wall = min(wall for wall, _ in first_runs)
    first_stage = min(stage for _, stage in first_runs)
    cached_wall = min(wall for wall, _ in cached_runs)
    cached_stage = min(stage for _, stage in cached_runs)
    print(f"     --cache-dir, {label}: first run {first_wall:.1f} s (compute {first_stage:.1f} s), "
          f"cached re-run {cached_wall:.1f} s (compute {cached_stage:.1f} s)  = "
          f"{first_wall / cached_wall:.2f}x wall, {first_stage / cached_stage:.2f}x compute")


def _mb(size: float) -> str:
    return f"{size / 1e6:8.1f} MB"


def _print_peaks(peaks: dict[str, int]) -> None:
    for label, rss in sorted(peaks.items()):
        print(f"      peak RSS {label:<16} {_mb(rss)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", type=Path, default=DEFAULT_EXAMPLE)
    parser.add_argument("--generated-gb", type=float, default=1.0,
                        help="Approximate size of the generated replay in GB.")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-scaling", action="store_true",
                        help="Skip the 1-versus-2-worker runs on the generated replay.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mpp-dask-bench-"))
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
          f"python {sys.version.split()[0]}; compiled decoder: "
          f"{'yes' if fast.compiled_scan_window() is not None else 'no'}")
    try:
        if args.example.exists():
            files = _aspect_files(args.example)
            size = sum(p.stat().st_size for p in files)
            print(f"\nexample replay {args.example} ({_mb(size).strip()})")
            unpacker = time_unpacker(files, args.repeat)
            compiled = time_decode(files, args.repeat, compiled=True)
            reference = time_decode(files, 1, compiled=False)
            parquet = time_read_parquet(files, work, args.repeat)
            print(f"  A  msgpack.Unpacker iteration   {unpacker:7.3f} s  {size / unpacker / 1e6:7.0f} MB/s")
            print(f"  B  pandas.read_parquet          {parquet:7.3f} s")
            print(f"     decode, compiled             {compiled:7.3f} s  {size / compiled / 1e6:7.0f} MB/s"
                  f"  = {unpacker / compiled:.1f}x A, {parquet / compiled:.2f}x B")
            print(f"     decode, reference path       {reference:7.3f} s  {size / reference / 1e6:7.0f} MB/s"
                  f"  = {unpacker / reference:.2f}x A")
            seconds, peaks = time_run(args.example, work / "out-example")
            print(f"     mpp-dask run (defaults + all streams), LocalCluster: {seconds:.1f} s")
            _print_peaks(peaks)
            print_cached_rerun("example", args.example, work, args.repeat)
            print_cached_rerun("gzip copy", gzip_copy(args.example, work / "example-gz"), work,
                               args.repeat)
        else:
            print(f"example replay not found at {args.example}; skipping its figures")

        tiny = work / "tiny"
        generate_replay(tiny, minutes=1, teams=2)
        seconds, _ = time_run(tiny, work / "out-tiny", "--n-workers", "1")
        print(f"\nfixed cost: mpp-dask run on a 1-minute, 2-team replay: {seconds:.1f} s")

        units = max(10, int(13500 * args.generated_gb))
        generated = work / "generated"
        started = time.perf_counter()
        generate_replay(generated, minutes=60, teams=16, units_per_team=units)
        files = _aspect_files(generated)
        size = sum(p.stat().st_size for p in files)
        print(f"\ngenerated replay: {_mb(size).strip()} in {time.perf_counter() - started:.0f} s")
        unpacker = time_unpacker(files, 1)
        compiled = time_decode(files, 1, compiled=True)
        print(f"  A  msgpack.Unpacker iteration   {unpacker:7.1f} s  {size / unpacker / 1e6:7.0f} MB/s")
        print(f"     decode, compiled             {compiled:7.1f} s  {size / compiled / 1e6:7.0f} MB/s"
              f"  = {unpacker / compiled:.1f}x A")
        if not args.skip_scaling:
            one, peaks_one = time_run(generated, work / "out-1", "--n-workers", "1")
            print(f"     mpp-dask run, 1 worker:  {one:7.1f} s")
            _print_peaks(peaks_one)
            two, peaks_two = time_run(generated, work / "out-2", "--n-workers", "2")
            print(f"     mpp-dask run, 2 workers: {two:7.1f} s  = {one / two:.2f}x faster")
            _print_peaks(peaks_two)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
