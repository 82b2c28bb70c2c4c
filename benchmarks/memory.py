"""Memory: peak RSS of ``bulkretry run`` at 100k and 1M distinct run IDs, and its slope per ID.

Inputs are generated to a temporary file: N distinct random UUIDs plus N/100 duplicates of
earlier lines (every other one upper-cased, which bulkretry folds to the same run), so that the
output's ``duplicate`` count checks that deduplication stays exact. Each size goes through

- ``bulkretry run --dry-run`` (no network), and
- a real run against the lean loopback server (``benchmarks/_lean_server.py``, which stores
  nothing per request) with ``--rate 1e6 --burst 64 --concurrency 64``,

each a child process whose peak RSS is ``ru_maxrss`` from ``os.wait4``. The slope is
(RSS(1M) - RSS(100k)) / 900k in bytes per distinct ID. Targets: peak RSS < 80 MB and a slope of
at most 40 bytes/ID. Every run also checks its output: one line per input line, as many
``duplicate`` records as duplicates injected, and (real runs) as many POSTs as distinct IDs.

Usage: ``.venv/bin/python benchmarks/memory.py [--quick] [--sizes 100000,1000000]
[--modes dry-run,real]``
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
from pathlib import Path

import orjson
from _common import BULKRETRY, Server, child_env, print_machine, run_child, workdir, write_ids

TARGET_RSS_MB = 80
TARGET_SLOPE = 40


def check_output(path: Path, lines_in: int, duplicates: int, mode: str) -> collections.Counter:
    outcomes: collections.Counter[str] = collections.Counter()
    with open(path, "rb") as fh:
        for line in fh:
            outcomes[orjson.loads(line)["outcome"]] += 1
    total = sum(outcomes.values())
    expected = "would_retrigger" if mode == "dry-run" else "retriggered"
    problems = []
    if total != lines_in:
        problems.append(f"{total} output lines for {lines_in} input lines")
    if outcomes["duplicate"] != duplicates:
        problems.append(f"{outcomes['duplicate']} duplicates reported, {duplicates} injected")
    if outcomes[expected] != lines_in - duplicates:
        problems.append(f"{outcomes[expected]} {expected}, expected {lines_in - duplicates}")
    if problems:
        raise SystemExit(f"{mode}: " + "; ".join(problems) + f" ({dict(outcomes)})")
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 2,000 and 20,000")
    parser.add_argument("--sizes", help="two comma-separated distinct-ID counts [100000,1000000]")
    parser.add_argument("--modes", default="dry-run,real", help="[dry-run,real]")
    parser.add_argument("--keep", metavar="DIR", help="keep inputs and outputs in DIR")
    args = parser.parse_args()
    if args.sizes:
        small, large = (int(x) for x in args.sizes.split(","))
    else:
        small, large = (2_000, 20_000) if args.quick else (100_000, 1_000_000)
    modes = args.modes.split(",")
    work = workdir(args.keep)
    print_machine()
    files = {}
    for n in (small, large):
        dups = n // 100
        path = work / f"ids-{n}.txt"
        write_ids(path, n, dups, seed=n)
        files[n] = (path, n + dups, dups)
        print(f"input: {path} = {n} distinct UUIDs + {dups} duplicates")
    results: dict[tuple[str, int], float] = {}
    server = Server("lean", work) if "real" in modes else None
    try:
        for mode in modes:
            for n in (small, large):
                path, lines_in, dups = files[n]
                out = work / f"out-{mode}-{n}.jsonl"
                cmd = [*BULKRETRY, "run", str(path), "-o", str(out), "--overwrite"]
                if mode == "dry-run":
                    cmd.append("--dry-run")
                else:
                    assert server is not None
                    server.stats(reset=True)
                    cmd += ["--base-url", server.url, "--rate", "1000000", "--burst", "64"]
                    cmd += ["--concurrency", "64"]
                child = run_child(cmd, env=child_env(), check=False)
                if child.rc != 0:
                    raise SystemExit(f"{' '.join(cmd)} exited {child.rc}:\n{child.stderr[-2000:]}")
                check_output(out, lines_in, dups, mode)
                if server is not None and mode == "real":
                    posts = server.stats()["posts"]
                    if posts != n:
                        raise SystemExit(f"real {n}: the server saw {posts} POSTs, not {n}")
                rss = child.maxrss_kb * 1024
                results[(mode, n)] = rss
                print(
                    f"{mode:8s} {n:>9,} distinct + {dups:,} dup: peak RSS {rss / 2**20:6.1f} MB, "
                    f"wall {child.wall:7.1f} s, cpu {child.cpu:7.1f} s, "
                    f"{dups} duplicates reported (exact)",
                    flush=True,
                )
                print(f"    {' '.join(cmd)}")
                out.unlink()
    finally:
        if server is not None:
            server.close()
    print()
    for mode in modes:
        lo, hi = results[(mode, small)], results[(mode, large)]
        slope = (hi - lo) / (large - small)
        peak = hi / 2**20
        print(
            f"{mode:8s}: peak RSS {lo / 2**20:.1f} MB at {small:,}, {peak:.1f} MB at {large:,}; "
            f"slope {slope:.1f} bytes/ID; target RSS < {TARGET_RSS_MB} MB: "
            f"{'MET' if peak < TARGET_RSS_MB else 'NOT MET'}; target slope <= {TARGET_SLOPE}: "
            f"{'MET' if slope <= TARGET_SLOPE else 'NOT MET'}"
        )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
