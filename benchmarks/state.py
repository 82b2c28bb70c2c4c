"""The ledger's cost: ``run --state`` against ``run`` without state, and a resume over done runs.

Two figures, each measured in one invocation with the contenders alternating:

1. Throughput with and without ``--state``: N distinct IDs against a quota-free loopback server,
   ``bulkretry run IDS -o OUT --rate 1e6 --burst 64 --concurrency 64`` with and without
   ``--state FRESH.db`` (a new state file each round). Target: with state >= 0.8x the req/s of
   without.
2. Resume: a state file in which all N runs are already re-triggered, then
   ``bulkretry run IDS --state DONE.db`` (nothing to send: every record is
   ``already_retriggered``) against ``bulkretry run IDS --dry-run``. Target: resume <= 1.5x the
   dry run's wall time.

Usage: ``.venv/bin/python benchmarks/state.py [--quick] [--ids N] [--rounds R] [--server lean|sim]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from _common import BULKRETRY, CREDENTIALS, Server, child_env, print_machine, run_child, write_ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=20_000)
    parser.add_argument("--resume-ids", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server", choices=["lean", "sim"], default="lean")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.ids, args.resume_ids, args.rounds = 500, 2_000, 1
    print_machine()
    with tempfile.TemporaryDirectory(prefix="bulkretry-bench-state-") as tmp:
        work = Path(tmp)
        ids = work / "ids.txt"
        write_ids(ids, args.ids)
        with Server(args.server, work) as server:
            env = child_env(**CREDENTIALS, BULKRETRY_BASE_URL=server.url)
            throughput(args, work, ids, env, server.name)
            resume(args, work, env)
    return 0


def _run(cmd: list[str], env: dict[str, str]) -> float:
    child = run_child(cmd, env=env)
    return child.wall


def throughput(
    args: argparse.Namespace, work: Path, ids: Path, env: dict[str, str], name: str
) -> None:
    base = [
        *BULKRETRY,
        "run",
        str(ids),
        "--rate",
        "1e6",
        "--burst",
        "64",
        "--concurrency",
        "64",
        "-q",
    ]
    plain: list[float] = []
    stated: list[float] = []
    for round_ in range(args.rounds):
        plain.append(_run([*base, "-o", str(work / f"p{round_}.jsonl")], env))
        state = work / f"s{round_}.db"
        stated.append(
            _run([*base, "-o", str(work / f"s{round_}.jsonl"), "--state", str(state)], env)
        )
    n = args.ids
    rate_plain = n / statistics.median(plain)
    rate_state = n / statistics.median(stated)
    print(f"## run --state vs run, {n} IDs against the {name}, {args.rounds} round(s), medians")
    print(f"{'contender':<22}{'wall s':>10}{'req/s':>12}")
    print(f"{'run':<22}{statistics.median(plain):>10.2f}{rate_plain:>12.0f}")
    print(f"{'run --state':<22}{statistics.median(stated):>10.2f}{rate_state:>12.0f}")
    ratio = rate_state / rate_plain
    verdict = "met" if ratio >= 0.8 else "NOT met"
    print(f"ratio --state/plain req/s: {ratio:.2f} (target >= 0.80: {verdict})")
    print()


def resume(args: argparse.Namespace, work: Path, env: dict[str, str]) -> None:
    n = args.resume_ids
    ids = work / "resume-ids.txt"
    write_ids(ids, n, seed=7)
    state = work / "done.db"
    # Fill the state file: one real run against the server re-triggers every ID.
    run_child(
        [
            *BULKRETRY,
            "run",
            str(ids),
            "--state",
            str(state),
            "--rate",
            "1e6",
            "--burst",
            "64",
            "--concurrency",
            "64",
            "-q",
            "-o",
            str(work / "fill.jsonl"),
        ],
        env=env,
    )
    dry: list[float] = []
    resumed: list[float] = []
    for round_ in range(args.rounds):
        dry.append(
            _run(
                [
                    *BULKRETRY,
                    "run",
                    str(ids),
                    "--dry-run",
                    "-q",
                    "-o",
                    str(work / f"d{round_}.jsonl"),
                ],
                env,
            )
        )
        resumed.append(
            _run(
                [
                    *BULKRETRY,
                    "run",
                    str(ids),
                    "--state",
                    str(state),
                    "-q",
                    "--no-preflight",  # as the dry run it is compared with
                    "-o",
                    str(work / f"r{round_}.jsonl"),
                ],
                env,
            )
        )
    with open(work / "r0.jsonl", "rb") as fh:
        sent = sum(1 for line in fh if b'"already_retriggered"' not in line)
    print(
        f"## resume over {n} IDs already done in --state vs --dry-run, "
        f"{args.rounds} round(s), medians"
    )
    print(f"{'contender':<22}{'wall s':>10}")
    print(f"{'run --dry-run':<22}{statistics.median(dry):>10.2f}")
    print(f"{'resume (--state)':<22}{statistics.median(resumed):>10.2f}")
    ratio = statistics.median(resumed) / statistics.median(dry)
    verdict = "met" if ratio <= 1.5 else "NOT met"
    print(
        f"ratio resume/dry-run wall: {ratio:.2f} (target <= 1.50: {verdict}); "
        f"records not already_retriggered on resume: {sent}"
    )


if __name__ == "__main__":
    sys.exit(main())
