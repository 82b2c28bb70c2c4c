"""Instructions per request, counted by valgrind's callgrind: where bulkretry's CPU goes.

Wall-clock and CPU-time figures on a shared machine move by tens of percent; instruction counts
do not (to ~0.1%). Each contender re-triggers 1 ID and then N IDs against the lean loopback
server under ``valgrind --tool=callgrind``; per request = (I_N - I_1) / (N - 1), start-up = I_1.

Contenders: ``bulkretry run`` (as in throughput.py), ``bulkretry run --state``, ``bulkretry run
--dry-run`` (no HTTP: the pipeline alone), the plain aiohttp loop (``_plain_client.py``, the
throughput target's baseline) and the floor (``_floor_client.py``: aiohttp on uvloop with a lean
session and nothing else). From them the script derives how many instructions per request
bulkretry may spend besides aiohttp's request path to stay within 0.9x of the plain loop's CPU
over M requests (the throughput issue's target): the "room".

Usage: ``.venv/bin/python benchmarks/instructions.py [--ids N] [--requests M] [--only a,b]``
(about 2 minutes per contender at N = 2000, two at a time; valgrind must be installed).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import BULKRETRY, HERE, PYTHON, Server, child_env, print_machine, write_ids

_COLLECTED = re.compile(r"Collected : (\d+)")


def commands(name: str, base: str, ids: Path, out: Path, work: Path) -> list[str]:
    """The command line of contender ``name`` for input ``ids``."""
    run = [*BULKRETRY, "run", str(ids), "-q", "-o", str(out), "--overwrite"]
    fast = ["--base-url", base, "--rate", "1000000", "--burst", "64", "--concurrency", "64"]
    if name == "bulkretry":
        return [*run, *fast]
    if name == "bulkretry --state":
        return [*run, *fast, "--state", str(work / f"state-{ids.stem}.db")]
    if name == "bulkretry --dry-run":
        return [*run, "--dry-run"]
    script = {"plain": "_plain_client.py", "floor": "_floor_client.py"}[name]
    return [PYTHON, str(HERE / script), base, str(ids), str(out), "--concurrency", "64"]


CONTENDERS = ["bulkretry", "bulkretry --state", "bulkretry --dry-run", "plain", "floor"]


def count(cmd: list[str], work: Path, env: dict[str, str]) -> int:
    """Run ``cmd`` under callgrind and return the instructions it executed."""
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
        cwd=work,  # not the repository: ``python -m`` would import the package from cwd
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    found = _COLLECTED.search(proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=2000, help="N, the larger input [2000]")
    parser.add_argument(
        "--requests", type=int, default=20_000, help="M, the batch size of the target [20000]"
    )
    parser.add_argument("--only", help="comma-separated contenders (default: all)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: nothing measured")
        return 2
    names = args.only.split(",") if args.only else CONTENDERS
    unknown = set(names) - set(CONTENDERS)
    if unknown or args.ids < 2:
        parser.error(f"unknown contenders {sorted(unknown)} or --ids below 2")
    print_machine()
    with tempfile.TemporaryDirectory(prefix="bulkretry-bench-instr-") as tmp:
        work = Path(tmp)
        inputs = {1: work / "ids-1.txt", args.ids: work / f"ids-{args.ids}.txt"}
        for size, path in inputs.items():
            write_ids(path, size)
        with Server("lean", work) as server:
            env = child_env(BULKRETRY_BASE_URL=server.url)
            jobs = {
                (name, size): commands(name, server.url, path, work / f"out-{i}-{size}", work)
                for i, name in enumerate(names)
                for size, path in inputs.items()
            }
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                futures = {key: pool.submit(count, cmd, work, env) for key, cmd in jobs.items()}
                counted = {key: future.result() for key, future in futures.items()}
    n = args.ids
    per: dict[str, tuple[float, int]] = {}
    print(f"\ninstructions (callgrind), 1 and {n} IDs against the lean server")
    print(f"{'contender':<22}{'per request':>14}{'start-up':>14}")
    for name in names:
        one, many = counted[(name, 1)], counted[(name, n)]
        per[name] = ((many - one) / (n - 1), one)
        print(f"{name:<22}{per[name][0] / 1e3:>13.0f}k{one / 1e9:>13.2f}G")
    if {"bulkretry", "plain", "floor"} <= per.keys():
        m = args.requests
        plain = per["plain"][1] + m * per["plain"][0]
        budget = (0.9 * plain - per["bulkretry"][1]) / m
        room = budget - per["floor"][0]
        ratio = (per["bulkretry"][1] + m * per["bulkretry"][0]) / plain
        print(
            f"\nover {m} requests: bulkretry / plain loop = {ratio:.2f}x the instructions; "
            f"0.9x of the plain loop leaves bulkretry {budget / 1e3:.0f}k per request after its "
            f"start-up, of which the floor (aiohttp's request path) takes "
            f"{per['floor'][0] / 1e3:.0f}k: room for everything else {room / 1e3:.0f}k"
        )
        if "bulkretry --dry-run" in per:
            print(
                f"(a --dry-run record, no HTTP at all, costs "
                f"{per['bulkretry --dry-run'][0] / 1e3:.0f}k)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
