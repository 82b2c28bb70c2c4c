"""Throughput: bulkretry vs a plain aiohttp loop vs ``curl --parallel``, on a quota-free server.

Each contender is a child process sending the same N re-trigger POSTs (distinct run IDs) to
the same loopback server, with 64 requests in flight, its output written to a file:

- ``bulkretry``: ``bulkretry run IDS -o OUT --rate 1e6 --burst 64 --concurrency 64`` with every
  feature on (dedup, throttle, retry policy, results lines, summary);
- ``plain``: ``benchmarks/_plain_client.py``, a semaphore + ``session.post`` + orjson lines on the
  default asyncio loop, no retries: what a user writes by hand;
- ``curl``: ``curl --parallel --parallel-max 64 --config CFG`` (one ``url`` line per ID, the
  same headers), skipped with a note if curl is missing or too old for ``--parallel``.

Contenders run alternately (A B C A B C ...) for ``--rounds`` rounds; medians are reported.
Figures: requests/s over the wall time (launch to exit, what a user waits for), requests/s
as the server saw them (first to last request, excluding start-up), client CPU seconds
(user+sys from ``os.wait4``) per 10,000 requests, peak RSS, and the server's CPU share over the
run, which shows whether the server was the bottleneck.

The server: with ``--server auto`` (default) a short probe runs against the built-in simulator;
if it is near saturation under any contender (its CPU >= 80% of a core, or its capacity
under 1.5x the client's),
the lean stand-in ``benchmarks/_lean_server.py`` is used instead, and the output says why.

Usage: ``.venv/bin/python benchmarks/throughput.py [--quick] [--ids N] [--rounds R]
[--server auto|sim|lean] [--profile cprofile|py-spy]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    BULKRETRY,
    CREDENTIALS,
    HERE,
    PYTHON,
    Child,
    Server,
    child_env,
    curl_path,
    fmt_ratio,
    median,
    print_machine,
    run_child,
    workdir,
    write_ids,
)

TARGET_SPEED = 1.2  # bulkretry req/s >= 1.2 x plain
TARGET_CPU = 0.9  # bulkretry CPU per request <= 0.9 x plain


@dataclass
class Sample:
    child: Child
    server_cpu: float
    server_window: float | None  # first -> last request as the server saw them

    def rps(self, n: int) -> float:
        return n / self.child.wall

    def server_rps(self, n: int) -> float | None:
        if not self.server_window:
            return None
        return (n - 1) / self.server_window

    def cpu_per_10k(self, n: int) -> float:
        return self.child.cpu / n * 10_000

    def server_share(self) -> float:
        return self.server_cpu / self.child.wall


@dataclass
class Contender:
    name: str
    cmd: list[str]
    out: Path
    stdout_to_out: bool = False
    samples: list[Sample] = field(default_factory=list)


def curl_config(path: Path, base: str, ids: list[str]) -> None:
    headers = [
        f"Authorization: Bearer {CREDENTIALS['BULKRETRY_ACCESS_TOKEN']}",
        f"x-api-key: {CREDENTIALS['BULKRETRY_API_KEY']}",
        f"x-gw-ims-org-id: {CREDENTIALS['BULKRETRY_ORG_ID']}",
        f"x-sandbox-name: {CREDENTIALS['BULKRETRY_SANDBOX']}",
        "Content-Type: application/json",
    ]
    with open(path, "w") as fh:
        fh.write('silent\nshow-error\ndata = ""\nwrite-out = "\\t%{http_code}\\n"\n')
        for header in headers:
            fh.write(f'header = "{header}"\n')
        for run_id in ids:
            fh.write(f'url = "{base}/runs/{run_id}/action?op=re-trigger"\n')


def run_once(contender: Contender, server: Server, n: int) -> Sample:
    if server.kind == "lean":
        server.stats(reset=True)
    before = server.cpu()
    if contender.stdout_to_out:
        with open(contender.out, "wb") as out:
            child = run_child(contender.cmd, env=child_env(), stdout=out.fileno())
    else:
        child = run_child(contender.cmd, env=child_env())
    server_cpu = server.cpu() - before
    window = None
    if server.kind == "lean":
        stats = server.stats()
        if stats["posts"] != n:
            raise SystemExit(f"{contender.name}: the server saw {stats['posts']} POSTs, not {n}")
        window = float(stats["last"]) - float(stats["first"])  # type: ignore[arg-type]
    with open(contender.out, "rb") as fh:
        lines = sum(1 for _ in fh)
    if lines != n:
        raise SystemExit(f"{contender.name}: {lines} output lines, not {n}")
    if contender.name == "bulkretry" and f"{n} retriggered" not in child.stderr:
        raise SystemExit(f"bulkretry did not retrigger all {n}:\n{child.stderr}")
    return Sample(child, server_cpu, window)


def contenders(
    base: str, ids_file: Path, ids: list[str], work: Path, concurrency: int, burst: int
) -> list[Contender]:
    out = [
        Contender(
            "bulkretry",
            [
                *BULKRETRY,
                "run",
                str(ids_file),
                "--base-url",
                base,
                "--rate",
                "1000000",
                "--burst",
                str(burst),
                "--concurrency",
                str(concurrency),
                "-o",
                str(work / "out-bulkretry.jsonl"),
                "--overwrite",
            ],
            work / "out-bulkretry.jsonl",
        ),
        Contender(
            "plain",
            [
                PYTHON,
                str(HERE / "_plain_client.py"),
                base,
                str(ids_file),
                str(work / "out-plain.jsonl"),
                "--concurrency",
                str(concurrency),
            ],
            work / "out-plain.jsonl",
        ),
    ]
    curl = curl_path()
    if curl is None:
        print("note: curl missing or without --parallel (needs 7.66+): curl contender skipped")
    else:
        cfg = work / "curl.cfg"
        curl_config(cfg, base, ids)
        out.append(
            Contender(
                "curl",
                [curl, "--parallel", "--parallel-max", str(concurrency), "--config", str(cfg)],
                work / "out-curl.txt",
                stdout_to_out=True,
            )
        )
    return out


def probe_simulator(args: argparse.Namespace, work: Path) -> tuple[bool, str]:
    """Measure whether the built-in simulator saturates under any of the contenders."""
    n = args.probe
    ids_file = work / f"probe-{n}.txt"
    write_ids(ids_file, n, seed=7)
    ids = ids_file.read_text().split()
    lines = []
    saturated = False
    with Server("sim", work) as sim:
        for c in contenders(sim.url, ids_file, ids, work, args.concurrency, args.burst):
            s = run_once(c, sim, n)
            share = s.server_share()
            capacity = n / s.server_cpu if s.server_cpu else float("inf")
            client_capacity = n / s.child.cpu
            lines.append(
                f"  {c.name:9s} {s.rps(n):7.0f} req/s; simulator CPU {share:4.0%} of a core over "
                f"the run, {s.server_cpu / n * 1e6:.0f} us/request = {capacity:.0f} req/s per "
                f"core at most; the client alone could do {client_capacity:.0f} req/s per core"
            )
            if share >= 0.8 or capacity < 1.5 * client_capacity:
                saturated = True
    return saturated, "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 IDs, 1 round, lean server")
    parser.add_argument("--ids", type=int, help="run IDs per contender [20000]")
    parser.add_argument("--rounds", type=int, help="rounds of all contenders [3]")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--burst", type=int, help="bulkretry --burst [= concurrency]")
    parser.add_argument("--server", choices=["auto", "sim", "lean"], help="[auto]")
    parser.add_argument("--probe", type=int, default=5000, help="IDs of the simulator probe")
    parser.add_argument("--keep", metavar="DIR", help="keep inputs and outputs in DIR")
    parser.add_argument(
        "--profile",
        choices=["cprofile", "py-spy"],
        help="also profile one bulkretry run (written to the work directory)",
    )
    args = parser.parse_args()
    n = args.ids or (2000 if args.quick else 20_000)
    rounds = args.rounds or (1 if args.quick else 3)
    args.burst = args.burst or args.concurrency
    server_kind = args.server or ("lean" if args.quick else "auto")
    work = workdir(args.keep)
    print_machine()
    print(f"throughput: {n} IDs per contender, {rounds} round(s), concurrency {args.concurrency}")

    why = f"--server {server_kind}"
    if server_kind == "auto":
        saturated, detail = probe_simulator(args, work)
        print(f"simulator probe ({args.probe} IDs each):\n{detail}")
        server_kind = "lean" if saturated else "sim"
        why = (
            "the simulator saturates (>= 80% of a core, or under 1.5x a client's capacity, "
            "for at least one contender) and would cap the clients"
            if saturated
            else "the simulator keeps up"
        )

    ids_file = work / f"ids-{n}.txt"
    write_ids(ids_file, n, seed=11)
    ids = ids_file.read_text().split()
    with Server(server_kind, work) as server:
        print(f"server: {server.name} at {server.url} ({why})")
        entrants = contenders(server.url, ids_file, ids, work, args.concurrency, args.burst)
        for c in entrants:
            print(f"  {c.name}: {' '.join(c.cmd)}")
        for r in range(rounds):
            for c in entrants:
                s = run_once(c, server, n)
                c.samples.append(s)
                srv = s.server_rps(n)
                print(
                    f"round {r + 1} {c.name:9s} wall {s.child.wall:6.2f} s "
                    f"{s.rps(n):7.0f} req/s (server-side {srv or 0:7.0f}) "
                    f"cpu {s.child.cpu:6.2f} s = {s.cpu_per_10k(n):5.2f} s/10k "
                    f"rss {s.child.maxrss_kb / 1024:5.1f} MB server-cpu {s.server_share():4.0%}",
                    flush=True,
                )
        if args.profile:
            profile(args.profile, entrants[0], server, work)

    print()
    print(f"medians of {rounds} round(s), {n} requests each, server: {server.name}")
    header = (
        f"{'contender':10s} {'req/s wall':>10s} {'req/s srv':>10s} {'CPU s/10k':>10s} "
        f"{'peak RSS MB':>11s} {'server CPU':>10s}"
    )
    print(header)
    med: dict[str, dict[str, float]] = {}
    for c in entrants:
        m = {
            "rps": median([s.rps(n) for s in c.samples]),
            "srps": median([s.server_rps(n) or 0.0 for s in c.samples]),
            "cpu": median([s.cpu_per_10k(n) for s in c.samples]),
            "rss": median([s.child.maxrss_kb / 1024 for s in c.samples]),
            "srv": median([s.server_share() for s in c.samples]),
        }
        med[c.name] = m
        print(
            f"{c.name:10s} {m['rps']:10.0f} {m['srps']:10.0f} {m['cpu']:10.2f} "
            f"{m['rss']:11.1f} {m['srv']:10.0%}"
        )
    print()
    b = med["bulkretry"]
    for other in ("plain", "curl"):
        if other in med:
            o = med[other]
            print(
                f"bulkretry/{other}: req/s (wall) {fmt_ratio(b['rps'], o['rps'])}, "
                f"req/s (server-side) {fmt_ratio(b['srps'], o['srps'])}, "
                f"CPU per request {fmt_ratio(b['cpu'], o['cpu'])}"
            )
    p = med["plain"]
    speed = b["rps"] / p["rps"]
    cpu = b["cpu"] / p["cpu"]
    print(
        f"target req/s >= {TARGET_SPEED}x plain: {speed:.2f}x "
        f"{'MET' if speed >= TARGET_SPEED else 'NOT MET'}; "
        f"CPU per request <= {TARGET_CPU}x plain: {cpu:.2f}x "
        f"{'MET' if cpu <= TARGET_CPU else 'NOT MET'}"
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def profile(kind: str, bulk: Contender, server: Server, work: Path) -> None:
    """One more bulkretry run under a profiler; the report goes to the work directory."""
    run_args = bulk.cmd[len(BULKRETRY) :]
    if kind == "cprofile":
        out = work / "bulkretry.prof"
        cmd = [PYTHON, "-m", "cProfile", "-o", str(out), "-m", "bulkretry", *run_args]
    else:
        spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
        out = work / "bulkretry-py-spy.txt"
        cmd = [spy, "record", "-f", "raw", "-r", "500", "-o", str(out), "--", PYTHON]
        cmd += ["-m", "bulkretry", *run_args]
    child = run_child(cmd, env=child_env(), check=False)
    print(f"profile ({kind}): {' '.join(cmd)} -> {out} (exit {child.rc}, {child.wall:.1f} s)")
    if kind == "cprofile" and out.exists():
        import pstats

        pstats.Stats(str(out), stream=sys.stdout).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    sys.exit(main())
