"""Benchmark a corpus run against running the CLI once per replay.

Generates many small synthetic replays, times one ``mpp-dask run`` over the whole
corpus, then times ``mpp-dask run`` once per replay for a sample of the replays
and scales that to the corpus (running all of them one by one would take most of
an hour on 2 cores). Prints both figures and their ratio, measured in the same run.

Usage::

    python scripts/bench_corpus.py [--replays 200] [--sample 8] [--minutes 2]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mpp_dask.generate import generate_replay

CLI = [sys.executable, "-m", "mpp_dask"]
CLUSTER_OPTIONS = ["--dashboard-address", "127.0.0.1:0", "--log-level", "WARNING",
                   "--no-progress"]


def _run_cli(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([*CLI, "run", *args, *CLUSTER_OPTIONS], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replays", type=int, default=200)
    parser.add_argument("--sample", type=int, default=8,
                        help="Replays run one by one; the per-replay time is scaled up.")
    parser.add_argument("--minutes", type=float, default=2)
    parser.add_argument("--teams", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mpp-dask-bench-corpus-"))
    try:
        corpus = work / "corpus"
        started = time.perf_counter()
        for index in range(args.replays):
            generate_replay(corpus / f"match_{index:04d}", minutes=args.minutes,
                            teams=args.teams, seed=index)
        size = sum(p.stat().st_size for p in corpus.rglob("*.mpk"))
        print(f"generated {args.replays} replays ({size / 2**20:.1f} MiB of aspect files) "
              f"in {time.perf_counter() - started:.1f} s")

        corpus_seconds = _run_cli("-i", str(corpus), "-o", str(work / "out-corpus"))
        print(f"one corpus run:           {corpus_seconds:8.1f} s")

        sample = sorted(corpus.iterdir())[: args.sample]
        one_by_one = sum(_run_cli(p.name, "-i", str(p), "-o", str(work / "out-single"))
                         for p in sample)
        per_replay = one_by_one / len(sample)
        estimated = per_replay * args.replays
        print(f"CLI once per replay:      {per_replay:8.1f} s per replay "
              f"(mean of {len(sample)}), {estimated:.1f} s for {args.replays} (scaled)")
        print(f"speed-up of the corpus run: {estimated / corpus_seconds:.1f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
