"""Goodput whatever the quota's shape: every shape of issue 16, side by side, in one run.

Each row runs each contender against a FRESH server (``bulkretry simulate``, or for the 503
storm ``_storm_server.py``) and measures launch to exit. Contenders: ``bulkretry run``; the
afternoon script (benchmarks/peers/aiohttp_tenacity.py: aiohttp + aiolimiter + tenacity); a
plain paced loop (benchmarks/peers/paced_loop.py: never two sends closer than 1/rate, Retry-After
honoured per run, no learning). Columns:

- goodput: ideal / wall time, the ideal being N/Q (for rows with no quota: N/rate);
- rejected: the share of all requests answered 429 (503 for the storm);
- learn: seconds from the first request until every later second re-triggers at least 85% of
  the quota (windows longer than a second: per window), to the last second of the batch;
- spread (rows with several processes): slowest / fastest process's wall time, minus one;
- start s: launch to the server's first request (the interpreter, imports, reading the input;
  with several processes, launched one after another, the first to reach the server); from
  1st: goodput from that request to exit, which leaves out this machine's start-up (both "—"
  after a batch before, whose requests come first, and for the storm's server, which does not
  say when its first request came);
- the bound (rows with rate-independent 429s, 503s, timeouts): the issue's limit for that row,
  and the row's own measure against it (seconds).

    .venv/bin/python benchmarks/quota_shapes.py                  # N=3000, Q=200/s
    .venv/bin/python benchmarks/quota_shapes.py --quick          # N=600, a smoke test
    .venv/bin/python benchmarks/quota_shapes.py --rows leaky,sliding --repeat 3 --only-bulkretry
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

from _common import BULKRETRY, HERE, PYTHON, child_env, print_machine

# The server's stats are sampled this often. Each sample holds the server's one loop for up to
# a millisecond: at 20 ms it pushed requests together enough for a quota with no burst (a
# leaky bucket refuses any request under 5 ms after the last) to refuse more of them.
POLL = 0.1
SEED = 20240601
PEERS = {
    "afternoon": HERE / "peers" / "aiohttp_tenacity.py",
    "paced": HERE / "peers" / "paced_loop.py",
}


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    sim: tuple[str, ...]  # the simulator's quota options ("storm": _storm_server.py)
    factor: float = 1.0  # --rate as a multiple of the share of each process
    processes: int = 1
    ids: int | None = None  # N for this row, if not the run's
    bucket: float = 1.0  # seconds per bin when judging "learned"
    kind: str = "quota"  # quota | free (no quota: ideal N/rate) | storm | timeouts
    target: str = ""
    #: bulkretry's processes split the whole input with --shard K/N and --rate for all of
    #: them; the peers, which cannot, get the share rows' pre-split inputs and rates.
    shard: bool = False
    #: A batch of this share of N run just before the one measured (the same contender, the
    #: same quota): the measured one starts while the quota still counts its last requests.
    before: float = 0.0
    #: Requests in flight for every contender, if not the run's (a slow server needs more).
    concurrency: int | None = None


def rows(q: float) -> list[Row]:
    rate = f"{q:g}"
    leaky = ("--quota-shape", "leaky-bucket", "--quota-rate", rate)
    sliding = ("--quota-shape", "sliding-window", "--quota-window", "1")
    sliding += ("--window-requests", rate, "--count-rejected")
    fixed = ("--quota-shape", "fixed-window", "--quota-window", "10")
    fixed += ("--window-requests", f"{10 * q:g}")
    bucket = ("--quota-rate", rate, "--quota-burst", "20")
    throttle = ("--throttle-rate", "0.2", "--throttle-retry-after", "3")
    return [
        Row("leaky", "leaky bucket, no burst, --rate right", leaky, target=">=0.90"),
        Row("leaky4", "leaky bucket, no burst, --rate 4x", leaky, 4.0, target=">=0.88"),
        Row("sliding", "sliding window counting rejects, right", sliding, target=">=0.95 <=2%"),
        Row("sliding4", "sliding window counting rejects, 4x", sliding, 4.0, target=">=0.93"),
        Row(
            "sliding4b",
            "sliding window counting rejects, 4x, straight after a batch of N/2",
            sliding,
            4.0,
            target=">=0.93",
            before=0.5,
        ),
        Row(
            "fixed",
            "fixed window 10 s, Retry-After to reset, right",
            fixed,
            bucket=10.0,
            target=">=0.95",
        ),
        Row(
            "fixed4",
            "fixed window 10 s, Retry-After to reset, 4x",
            fixed,
            4.0,
            bucket=10.0,
            target=">=0.95",
        ),
        Row(
            "sliding4l",
            "sliding window counting rejects, 4x, 200-280 ms latency, 256 in flight",
            (*sliding, "--latency-ms", "200", "--jitter-ms", "80"),
            4.0,
            target=">=0.93",
            concurrency=256,
        ),
        Row(
            "sliding4h",
            "sliding window counting rejects, 4x, RateLimit-* headers with a policy",
            (*sliding, "--rate-limit-headers", "ietf"),
            4.0,
            target=">=0.93",
        ),
        Row(
            "fixed4x",
            "fixed window 10 s, 4x, X-RateLimit-* headers (no policy)",
            (*fixed, "--rate-limit-headers", "x"),
            4.0,
            bucket=10.0,
            target=">=0.95",
        ),
        Row("bucket", "token bucket burst 20, right", bucket, target=">=0.97 <=2%"),
        Row("bucket4", "token bucket burst 20, 4x", bucket, 4.0, target=">=0.97 <=2%"),
        Row(
            "share2",
            "2 processes on one bucket, each 2x its share",
            bucket,
            2.0,
            2,
            target=">=0.93, spread<=0.20",
        ),
        Row(
            "share4",
            "4 processes on one bucket, each 2x its share",
            bucket,
            2.0,
            4,
            target=">=0.93, spread<=0.20",
        ),
        Row(
            "shard4",
            "4 processes on one bucket, --shard K/4, --rate right for all",
            bucket,
            1.0,
            4,
            target=">=0.93, spread<=0.20",
            shard=True,
        ),
        Row(
            "shard4x2",
            "4 processes on one bucket, --shard K/4, --rate 2x for all",
            bucket,
            2.0,
            4,
            target=">=0.93, spread<=0.20",
            shard=True,
        ),
        Row(
            "perrun",
            "20% 429 Retry-After 3 whatever the rate, no quota",
            throttle,
            ids=1000,
            kind="free",
            target="wall <= 1.3 N/rate + 3 s x longest run",
        ),
        Row(
            "storm",
            "503 storm (3 s) on a bucket burst 20",
            ("storm",),
            kind="storm",
            target="back at quota <= 10 s after",
        ),
        Row(
            "timeouts",
            "5% of requests time out (1 s), no quota",
            ("--hang-rate", "0.05"),
            ids=2000,
            kind="timeouts",
            target="wall <= N/rate + hangs x timeout / concurrency",
        ),
    ]


@dataclass
class Result:
    row: str
    who: str
    goodput: float | None = None
    rejected: float = 0.0
    learn: float | None = None
    spread: float | None = None
    measure: float | None = None  # the row's own measure (s), against `bound`
    bound: float | None = None
    #: Seconds from launch to the server's first request (start-up: the interpreter, imports,
    #: the input read), and the goodput counted from that request on (None: not measurable,
    #: as after a batch before).
    start: float | None = None
    running: float | None = None
    note: str = ""
    samples: list[tuple[float, int, int]] = field(default_factory=list, repr=False)


def poll(url: str, samples: list[tuple[float, int, int]], stop: threading.Event) -> None:
    """Sample (time, requests, re-triggers) from the server's stats until told to stop."""
    import urllib.request

    while not stop.is_set():
        with urllib.request.urlopen(f"{url}/_sim/stats", timeout=10) as resp:
            stats = json.loads(resp.read())
        samples.append((time.perf_counter(), int(stats["requests"]), int(stats["retriggers"])))
        stop.wait(POLL)


def stats(url: str) -> dict[str, object]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/_sim/stats", timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def learned_at(samples: list[tuple[float, int, int]], rate: float, width: float) -> float | None:
    """Seconds from the first request until every later bin re-triggers >= 85% of *rate*."""
    start = next((t for t, r, _ in samples if r > 0), None)
    done = samples[-1][2] if samples else 0
    end = next((t for t, _, g in samples if g >= done), None)
    if start is None or end is None or end - start < 2 * width:
        return None
    ok_from = start
    t = start
    while t + width <= end - width:
        lo = max((g for s, _, g in samples if s <= t), default=0)
        hi = max((g for s, _, g in samples if s <= t + width), default=0)
        if hi - lo < 0.85 * rate * width:
            ok_from = t + width
        t += width / 4
    return ok_from - start


def launch(
    args: argparse.Namespace,
    who: str,
    url: str,
    ids: Path,
    out: Path,
    rate: float,
    key: str,
    extra: list[str],
    concurrency: int,
) -> subprocess.Popen[bytes]:
    env = child_env(BULKRETRY_API_KEY=key)
    common = ["--concurrency", str(concurrency), "--max-attempts", "50"]
    if who == "bulkretry":
        argv = [
            *BULKRETRY,
            "run",
            str(ids),
            "-o",
            str(out),
            "--overwrite",
            "--base-url",
            url,
            "--rate",
            f"{rate:g}",
            *common,
            "--progress-every",
            "3600",
            *extra,
        ]
    else:
        argv = [PYTHON, str(PEERS[who]), url, str(ids), str(out), "--rate", f"{rate:g}", *common]
        if who == "paced" and extra:
            argv += ["--timeout", extra[-1]]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=out.parent
    )


def start_server(row: Row, n: int, keys: list[str], q: float) -> tuple[subprocess.Popen[str], str]:
    if row.kind == "storm":
        cmd = [PYTHON, str(HERE / "_storm_server.py"), "--quota-rate", f"{q:g}"]
    else:
        flows = max(1, n // 100)
        cmd = [
            *BULKRETRY,
            "simulate",
            "--seed",
            str(SEED),
            "--flows",
            str(flows),
            "--runs-per-flow",
            str(n // flows),
            "--print-failed",
            *row.sim,
        ]
        if len(keys) > 1:
            cmd += ["--extra-api-keys", ",".join(keys[1:])]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env(), text=True
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit(f"the server did not start: {' '.join(cmd)}")
    if row.kind == "storm":
        run_ids = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(n)]
    else:
        run_ids = [proc.stdout.readline().strip() for _ in range(n)]
    (Path(tmp_dir()) / "all.txt").write_text("\n".join(run_ids) + "\n")
    return proc, url


_TMP: list[str] = []


def tmp_dir() -> str:
    return _TMP[0]


def wait_all(
    children: list[subprocess.Popen[bytes]], timeout: float
) -> list[tuple[float, bytes, bool]]:
    """Wait for every child at once: each one's exit time (perf_counter), stderr, and whether
    it had to be killed. (Waited for in turn, a child that ended early would be timed at the
    end of the one before it, and the spread between them would read too small.)"""
    ended: list[tuple[float, bytes, bool]] = [(0.0, b"", False)] * len(children)

    def wait(i: int, child: subprocess.Popen[bytes]) -> None:
        try:
            _, err = child.communicate(timeout=timeout)
            ended[i] = (time.perf_counter(), err, False)
        except subprocess.TimeoutExpired:
            child.kill()
            _, err = child.communicate()
            ended[i] = (time.perf_counter(), err, True)

    waiters = [threading.Thread(target=wait, args=(i, c)) for i, c in enumerate(children)]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join()
    return ended


def measure(args: argparse.Namespace, row: Row, who: str) -> Result:
    q, n = args.quota, row.ids or args.n
    n -= n % (100 * row.processes) if n >= 100 * row.processes else 0
    # Whole flows of 100, as the simulator makes them (any other count hangs the read below).
    before = int(row.before * n) // 100 * 100
    n += before
    keys = ["sim-api-key", *(f"sim-api-key-{i}" for i in range(2, row.processes + 1))]
    proc, url = start_server(row, n, keys, q)
    result = Result(row.key, who)
    conc = row.concurrency or args.concurrency
    work = Path(tmp_dir())
    run_ids = (work / "all.txt").read_text().split()
    prefix = ""
    if before:  # the batch before, to its end; the measured one starts at once after it
        before_ids, before_out = work / "before.txt", work / "before.jsonl"
        before_ids.write_text("\n".join(run_ids[:before]) + "\n")
        first = launch(args, who, url, before_ids, before_out, q * row.factor, keys[0], [], conc)
        if wait_all([first], max(120.0, 10 * before / q))[0][2]:
            prefix = "the batch before was killed; "
        (work / "all.txt").write_text("\n".join(run_ids[before:]) + "\n")
        run_ids, n = run_ids[before:], n - before
    base = (
        stats(url)
        if before
        else {"requests": 0, "retriggers": 0, "answers": {}, "retriggered_runs": 0}
    )
    share = n // row.processes
    rate = (q / row.processes) * row.factor
    if row.kind in ("free", "timeouts"):
        rate = q
    extra = ["--timeout", "1"] if row.kind == "timeouts" else []
    if row.kind == "storm" and who == "bulkretry":
        extra = ["--no-preflight"]  # the storm server answers re-triggers only, not GET /runs
    stop = threading.Event()
    poller = threading.Thread(target=poll, args=(url, result.samples, stop), daemon=True)
    poller.start()
    try:
        children, walls, outs = [], [], []
        started, launched = time.perf_counter(), time.time()
        for i, key in enumerate(keys):
            ids, out = work / f"ids-{i}.txt", work / f"out-{i}.jsonl"
            ids.write_text("\n".join(run_ids[i * share : (i + 1) * share]) + "\n")
            outs.append(out)
            if row.shard and who == "bulkretry":
                sharded = ["--shard", f"{i + 1}/{row.processes}"]
                whole = rate * row.processes
                all_ids = work / "all.txt"
                children.append(
                    launch(args, who, url, all_ids, out, whole, key, [*extra, *sharded], conc)
                )
            else:
                children.append(launch(args, who, url, ids, out, rate, key, extra, conc))
        for wall, err, killed in wait_all(children, max(120.0, 10 * n / q)):
            walls.append(wall - started)
            if killed:
                result.note = "killed"
            if who == "bulkretry":
                learned = [
                    ln for ln in err.decode(errors="replace").splitlines() if "learned" in ln
                ]
                if learned:
                    result.note = learned[-1].strip()[:70]
        time.sleep(3 * POLL)
        stop.set()
        poller.join(5)
        final = stats(url)
    finally:
        proc.terminate()
        proc.wait(10)
    answers: dict[str, int] = final["answers"]  # type: ignore[assignment]
    was: dict[str, int] = base["answers"]  # type: ignore[assignment]
    requests = int(final["requests"]) - int(base["requests"])  # type: ignore[call-overload]
    bad = "503" if row.kind == "storm" else "429"
    result.rejected = (answers.get(bad, 0) - was.get(bad, 0)) / requests if requests else 0.0
    r0, g0 = int(base["requests"]), int(base["retriggers"])  # type: ignore[call-overload]
    result.samples = [(t, r - r0, g - g0) for t, r, g in result.samples]
    wall = max(walls)
    retriggered = int(final["retriggered_runs"]) - int(base["retriggered_runs"])  # type: ignore[call-overload]
    if retriggered < n:
        result.note = f"only {retriggered}/{n} re-triggered " + result.note
    else:
        result.goodput = (n / q) / wall
    result.note = prefix + result.note
    if row.processes > 1:
        result.spread = max(walls) / min(walls) - 1
    first = final.get("first_request_at")
    if not before and isinstance(first, float) and result.goodput is not None:
        # (Wall clocks of two processes on one machine: comparable to a millisecond.)
        result.start = first - launched
        result.running = (n / q) / (wall - result.start)
    result.learn = learned_at(result.samples, q, row.bucket) if row.kind == "quota" else None
    if row.kind == "free":
        longest = (
            max(
                (
                    json.loads(ln).get("attempts", 1)
                    for o in outs
                    for ln in o.read_text().splitlines()
                    if ln.strip()
                ),
                default=1,
            )
            - 1
        )
        result.measure, result.bound = wall, 1.3 * n / rate + 3 * longest
    elif row.kind == "timeouts":
        hangs = answers.get("hang", 0) or int(final.get("hangs", 0) or 0)  # type: ignore[call-overload]
        result.measure, result.bound = wall, n / rate + hangs * 1.0 / args.concurrency + 1.0
    elif row.kind == "storm" and final.get("storm_end"):
        result.measure, result.bound = recovered(result.samples, q), 10.0
    return result


def recovered(samples: list[tuple[float, int, int]], q: float) -> float | None:
    """Seconds after the storm until a second of re-triggers reaches 90% of the quota."""
    start = next((t for t, r, _ in samples if r > 0), None)
    if start is None:
        return None
    storm_end = start + 8.0  # _storm_server.py's defaults: 5 s in, 3 s long
    for t, _, g in samples:
        if t < storm_end:
            continue
        later = [s for s in samples if s[0] >= t + 1.0]
        if not later:
            return None
        if later[0][2] - g >= 0.9 * q * (later[0][0] - t):
            return t - storm_end
    return None


def fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def median(values: list[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="IDs per row [3000]")
    parser.add_argument("--quota", type=float, default=200.0, help="Q [200/s]")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rows", help="comma-separated row keys (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; medians shown")
    parser.add_argument("--only-bulkretry", action="store_true")
    parser.add_argument("--quick", action="store_true", help="N=600, a smoke test")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args()
    if args.quick:
        args.n = 600
    table = rows(args.quota)
    if args.rows:
        wanted = args.rows.split(",")
        table = [r for r in table if r.key in wanted]
    contenders = ["bulkretry"] if args.only_bulkretry else ["bulkretry", "afternoon", "paced"]
    print_machine()
    print(
        f"N={args.n}, Q={args.quota:g}/s, concurrency {args.concurrency}, medians of "
        f"{args.repeat}\n"
    )
    head = (
        f"{'row':<9} {'contender':<10} {'goodput':>7} {'rejected':>8} {'learn s':>7} "
        f"{'spread':>6} {'start s':>7} {'from 1st':>8} {'measure/bound s':>15}  target / note"
    )
    print(head)
    print("-" * len(head))
    everything = []
    with TemporaryDirectory(prefix="bulkretry-bench-shapes-") as tmp:
        _TMP.append(tmp)
        for row in table:
            for who in contenders:
                got = [measure(args, row, who) for _ in range(args.repeat)]
                everything += got
                m = median([g.measure for g in got])
                bound = f"{fmt(m, '.1f')}/{fmt(got[0].bound, '.1f')}" if got[0].bound else ""
                note = row.target if who == "bulkretry" else ""
                notes = [g.note for g in got if g.note]
                if notes:
                    note = f"{note}; {notes[-1]}" if note else notes[-1]
                print(
                    f"{row.key:<9} {who:<10} {fmt(median([g.goodput for g in got]), '.3f'):>7} "
                    f"{fmt(median([g.rejected for g in got]), '.1%'):>8} "
                    f"{fmt(median([g.learn for g in got]), '.1f'):>7} "
                    f"{fmt(median([g.spread for g in got]), '.2f'):>6} "
                    f"{fmt(median([g.start for g in got]), '.2f'):>7} "
                    f"{fmt(median([g.running for g in got]), '.3f'):>8} {bound:>15}  {note}",
                    flush=True,
                )
    if args.json:
        args.json.write_text(
            json.dumps(
                [{k: v for k, v in vars(r).items() if k != "samples"} for r in everything], indent=1
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
