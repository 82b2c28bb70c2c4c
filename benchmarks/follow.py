"""Following new runs to their end: look-up requests per followed run, and wall time vs ideal.

Issue 15's speed target: 10,000 failed runs over 50 flows, re-triggered runs lasting seconds,
20% failing once; status look-ups must cost fewer requests than there are new runs to follow
(at most 0.5 per followed run, every GET counted, the pre-flight included), and the wall time
to the last final status is compared with the ideal. Every contender runs against a FRESH
``bulkretry simulate --port 0 --ready-file F`` (same seed, so the same failed runs and the same
fates; real time, no virtual clock), one after the other, in one invocation:

- **run --follow**: ``bulkretry run IDS --follow --rounds 2 --poll P --round-delay R --rate Q
  --concurrency C``: re-trigger, follow, re-trigger the runs that fail once, follow again;
- **run + watch**: ``bulkretry run IDS -o r.jsonl`` then ``bulkretry watch r.jsonl --poll P``
  (same rate and concurrency): one round only;
- **run + naive**: ``bulkretry run IDS -o r.jsonl`` then benchmarks/peers/naive_follow.py, the
  afternoon script (aiohttp + aiolimiter at the same rate: ``GET /runs/{id}`` for each new run
  every P seconds until it ended). One round only: compare it with the watch row.

Columns (medians over ``--repeat``):

- wall s: launch of the first ``bulkretry run`` to the exit of the last process of the row;
  follower s: the follower's own part (``watch``, the naive script);
- ideal s: N/Q (the first re-triggers at the rate) + the longest chain (the sum of the run
  durations of a record's chain, plus R for each further round) + P (one poll of
  granularity). The durations are the simulator's own (``completedAtUTC - startedAtUTC`` of
  each new run, read from a listing after the row). For the one-round rows the chain is the one
  new run, so the ideal is N/Q + the longest run + P;
- look-ups: every ``GET`` the simulator saw during the row (``get-run`` + ``list-runs`` of
  ``/_sim/stats`` ``endpoints``, the pre-flights of ``run`` and ``watch`` included); per run:
  look-ups / new runs followed (the sum of ``rounds`` over the output);
- success / failed / other: ``final_status`` counted from the row's output.

Checks (FAIL and exit 1 when one fails): one output line per input line, for every input run
ID; each line's ``final_status`` and ``rounds`` as the simulator's fate for that run says
(succeeds: ``success``; fails-once: ``success`` in 2 rounds with ``--follow --rounds 2``, else
``failed``); the simulator's ``new_runs`` agree (as many runs ended ``success`` as lines, none
still going, as many re-triggers as chain elements); ``duplicate_retriggers`` is 0; the exit
code is the one the fates call for. A process still running at 2 x the expected time + 60 s
(a hang) is killed with SIGKILL, which fails its row. ``--keep DIR`` keeps the inputs, outputs,
stderr and every run of each row's simulator (``runs-ROW-K.jsonl``) for a timeline.

    .venv/bin/python benchmarks/follow.py                # 10,000 IDs, 50 flows, D=5+5 s, P=2
    .venv/bin/python benchmarks/follow.py --quick        # 300 IDs, D=0.5+0.5 s, P=0.2: seconds
    .venv/bin/python benchmarks/follow.py --ids 3000 --repeat 3 --only follow,watch
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from _common import BULKRETRY, CREDENTIALS, HERE, PYTHON, SOURCE, child_env, print_machine, stop

SEED = 20241204
PEER = HERE / "peers" / "naive_follow.py"
CONTENDERS = ("follow", "watch", "naive")
TITLES = {"follow": "run --follow", "watch": "run + watch", "naive": "run + naive"}
LOOKUP_ENDPOINTS = ("get-run", "list-runs")


@dataclass
class Result:
    who: str
    n: int
    followed: int = 0
    wall: float = 0.0
    follower: float | None = None
    ideal: float = 0.0
    lookups: int = 0
    endpoints: dict[str, int] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    self_reported: int | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def per_run(self) -> float:
        return self.lookups / self.followed if self.followed else float("nan")


# -- the simulator -----------------------------------------------------------------------------


class Simulator:
    """A fresh ``bulkretry simulate`` child; its failed run IDs are in ``self.ids``."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        ready, printed = work / "sim-ready", work / "sim-stdout"
        for path in (ready, printed):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        cmd = [
            *BULKRETRY,
            "simulate",
            "--port",
            "0",
            "--ready-file",
            str(ready),
            "--seed",
            str(SEED),
            "--flows",
            str(args.flows),
            "--runs-per-flow",
            str(args.ids // args.flows),
            "--run-duration",
            f"{args.duration:g}",
            "--run-duration-jitter",
            f"{args.jitter:g}",
            "--fate-shares",
            f"fails-once={args.fails_once:g}",
            "--print-failed",
        ]
        self.cmd = cmd
        with open(printed, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.DEVNULL, env=child_env()
            )
        deadline = time.monotonic() + 60
        want = args.ids + 1  # the base URL, then one failed run ID a line
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise SystemExit(f"the simulator did not start: {' '.join(cmd)}")
            if ready.exists() and printed.read_bytes().count(b"\n") >= want:
                break
            time.sleep(0.05)
        self.url = ready.read_text().strip()
        self.ids = printed.read_text().split()[1:want]

    def get(self, path: str) -> dict[str, object]:
        url = path if path.startswith("http") else self.url + path
        headers = {
            "Authorization": f"Bearer {CREDENTIALS['BULKRETRY_ACCESS_TOKEN']}",
            "x-api-key": CREDENTIALS["BULKRETRY_API_KEY"],
            "x-gw-ims-org-id": CREDENTIALS["BULKRETRY_ORG_ID"],
            "x-sandbox-name": CREDENTIALS["BULKRETRY_SANDBOX"],
        }
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=60) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def stats(self) -> dict[str, object]:
        return self.get("/_sim/stats")

    def durations(self, keep: Path | None) -> dict[str, float]:
        """Seconds each run that ended took (the simulator's startedAtUTC -> completedAtUTC).

        Read from the listing, 1,000 runs a page, after the row's stats were taken; with
        `keep`, every run's times and status are written there (JSON lines)."""
        found: dict[str, float] = {}
        kept = []
        path: str | None = "/runs?limit=1000&orderby=createdAt"
        while path:
            page = self.get(path)
            for run in page.get("items", []):  # type: ignore[attr-defined]
                summary = run.get("metrics", {}).get("durationSummary", {})
                started, completed = summary.get("startedAtUTC"), summary.get("completedAtUTC")
                if started is not None and completed is not None:
                    found[run["id"]] = (completed - started) / 1e3
                if keep is not None:
                    status = run.get("metrics", {}).get("statusSummary", {}).get("status")
                    kept.append(
                        {
                            "id": run["id"],
                            "flowId": run.get("flowId"),
                            "createdAt": run.get("createdAt"),
                            "startedAtUTC": started,
                            "completedAtUTC": completed,
                            "status": status,
                        }
                    )
            nxt = page.get("_links", {}).get("next")  # type: ignore[attr-defined]
            path = nxt.get("href") if isinstance(nxt, dict) else None
        if keep is not None:
            keep.write_text("".join(json.dumps(run) + "\n" for run in kept))
        return found

    def close(self) -> None:
        stop(self.proc)


def expected_fates(ids: list[str], share: float) -> dict[str, str] | None:
    """Each run's fate as the simulator draws it (its own code, seeded alike), or None."""
    if SOURCE:
        sys.path.insert(0, SOURCE)
    try:
        from bulkretry._simulator import SimulatorConfig

        life = SimulatorConfig(seed=SEED, fate_shares={"fails-once": share}).lifecycle()
        return {run_id: life.fate(run_id) for run_id in ids}
    except Exception as exc:  # the check falls back on the simulator's counts
        print(f"note: fates not computed ({exc!r}); checking against new_runs counts only")
        return None


# -- one row -----------------------------------------------------------------------------------


def launch(cmd: list[str], err: Path, timeout: float) -> tuple[int, float]:
    """Run `cmd` to its end (stderr to `err`); return its exit code and wall time.

    A child still running after `timeout` seconds is killed (SIGKILL: a hung bulkretry may not
    answer SIGTERM), and a line saying so is appended to `err`."""
    started = time.perf_counter()
    with open(err, "wb") as fh:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=fh, stdin=subprocess.DEVNULL, env=child_env()
        )
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
            fh.write(f"\n[follow.py] killed: still running after {timeout:.0f} s\n".encode())
    return rc, time.perf_counter() - started


def common(args: argparse.Namespace, url: str) -> list[str]:
    return [
        "--base-url",
        url,
        "--rate",
        f"{args.rate:g}",
        "--concurrency",
        str(args.concurrency),
    ]


def measure(
    args: argparse.Namespace,
    who: str,
    work: Path,
    cache: dict[str, dict[str, str] | None],
    k: int,
) -> Result:
    sim = Simulator(args, work)
    result = Result(who, len(sim.ids))
    try:
        ids = work / "ids.txt"
        ids.write_text("\n".join(sim.ids) + "\n")
        if "fates" not in cache:
            cache["fates"] = expected_fates(sim.ids, args.fails_once)
        known = cache["fates"]
        fates = known or {}
        out = work / f"out-{who}-{k}.jsonl"
        summary = work / f"summary-{who}-{k}.json"
        # Generous bounds, so that a contender that hangs is reported, not waited for: a
        # --follow-timeout for the followers, and a kill by the harness a little later.
        expected = args.ids / args.rate + 2 * (args.duration + args.jitter)
        expected += args.round_delay + args.poll
        budget = 30 + 2 * expected
        kill = budget + 30
        quiet = ["--progress-every", "0", "--follow-timeout", f"{budget:g}"]
        if who == "follow":
            cmd = [*BULKRETRY, "run", str(ids), "-o", str(out), "--overwrite"]
            cmd += [*common(args, sim.url), "--follow", "--rounds", "2"]
            cmd += ["--poll", f"{args.poll:g}", "--round-delay", f"{args.round_delay:g}"]
            cmd += ["--summary-json", str(summary), *quiet]
            rc, result.wall = launch(cmd, work / f"err-{who}-{k}.txt", kill)
            rcs = [("run --follow", rc, _exit(known, follow=True), f"err-{who}-{k}.txt")]
        else:
            first = work / f"retriggered-{who}-{k}.jsonl"
            cmd = [*BULKRETRY, "run", str(ids), "-o", str(first), "--overwrite"]
            cmd += [*common(args, sim.url), "--progress-every", "0"]
            started = time.perf_counter()
            rc1, _ = launch(cmd, work / f"err-{who}-run-{k}.txt", kill)
            if who == "watch":
                cmd = [*BULKRETRY, "watch", str(first), "-o", str(out), "--overwrite"]
                cmd += [*common(args, sim.url), "--poll", f"{args.poll:g}", *quiet[2:]]
            else:
                cmd = [PYTHON, str(PEER), sim.url, str(first), str(out)]
                cmd += ["--rate", f"{args.rate:g}", "--concurrency", str(args.concurrency)]
                cmd += ["--poll", f"{args.poll:g}", "--follow-timeout", f"{budget:g}"]
            rc2, result.follower = launch(cmd, work / f"err-{who}-{k}.txt", kill)
            result.wall = time.perf_counter() - started
            rcs = [
                ("run", rc1, 0, f"err-{who}-run-{k}.txt"),
                (
                    TITLES[who].split(" + ")[1],
                    rc2,
                    _exit(known, follow=False),
                    f"err-{who}-{k}.txt",
                ),
            ]
        stats = sim.stats()
        durations = sim.durations(work / f"runs-{who}-{k}.jsonl" if args.keep else None)
    finally:
        sim.close()
    check(result, sim.ids, out, stats, fates, rcs, work, who)
    endpoints: dict[str, int] = stats["endpoints"]  # type: ignore[assignment]
    result.endpoints = {e: endpoints.get(e, 0) for e in LOOKUP_ENDPOINTS}
    result.lookups = sum(v for e, v in endpoints.items() if e not in ("re-trigger", "token"))
    if summary.exists():
        followed = json.loads(summary.read_text()).get("followed") or {}
        result.self_reported = followed.get("lookups")
    result.ideal = ideal(args, out, durations, result)
    return result


def _exit(fates: dict[str, str] | None, *, follow: bool) -> int | None:
    """The follower's exit code: 1 when some chain ends other than success; None: unknown."""
    if fates is None:
        return None
    bad = {"always-fails"} if follow else {"fails-once", "always-fails"}
    return 1 if any(f in bad for f in fates.values()) else 0


def read_lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check(
    result: Result,
    ids: list[str],
    out: Path,
    stats: dict[str, object],
    fates: dict[str, str],
    rcs: list[tuple[str, int, int | None, str]],
    work: Path,
    who: str,
) -> None:
    fail = result.failures
    for name, rc, want, errname in rcs:
        if rc != want and not (want is None and rc in (0, 1)):
            err = work / errname
            tail = err.read_text(errors="replace")[-1500:] if err.exists() else ""
            fail.append(f"{name} exited {rc}, expected {want}:\n{tail}")
    lines = read_lines(out)
    result.statuses = Counter(str(line.get("final_status")) for line in lines)
    result.followed = sum(int(line.get("rounds") or 0) for line in lines)  # type: ignore[call-overload]
    if len(lines) != len(ids):
        fail.append(f"{len(lines)} output lines for {len(ids)} input lines")
    seen = Counter(str(line.get("run_id")) for line in lines)
    if seen != Counter(ids):
        missing = set(ids) - set(seen)
        extra = {r for r, c in seen.items() if c > 1 or r not in set(ids)}
        fail.append(f"output run IDs differ: {len(missing)} missing, {len(extra)} extra/repeated")
    follow = who == "follow"
    wrong = []
    for line in lines:
        fate = fates.get(str(line.get("run_id")))
        if fate is None:
            continue
        ends: tuple[object, object] = ("success", 1) if fate == "succeeds" else ("failed", 1)
        if fate == "fails-once" and follow:
            ends = ("success", 2)
        got = (line.get("final_status"), line.get("rounds"))
        if got != ends:
            wrong.append(f"{line.get('run_id')} ({fate}): {got} expected {ends}")
    if wrong:
        fail.append(f"{len(wrong)} lines end otherwise than their fate, e.g. {wrong[:3]}")
    if stats.get("duplicate_retriggers") != 0:
        fail.append(f"duplicate_retriggers = {stats.get('duplicate_retriggers')}")
    new_runs: dict[str, int] = stats.get("new_runs") or {}  # type: ignore[assignment]
    if set(new_runs) - {"success", "failed"}:
        fail.append(f"runs still going or unexpected at the end: {new_runs}")
    if new_runs.get("success", 0) != result.statuses.get("success", 0):
        fail.append(
            f"simulator: {new_runs.get('success', 0)} new runs ended success; "
            f"output: {result.statuses.get('success', 0)} lines success"
        )
    if stats.get("retriggers") != result.followed:
        fail.append(
            f"simulator: {stats.get('retriggers')} re-triggers; output: {result.followed} "
            "runs in chains"
        )


def ideal(
    args: argparse.Namespace, out: Path, durations: dict[str, float], result: Result
) -> float:
    """N/Q + the longest chain (its runs' durations, R per further round) + P."""
    longest = 0.0
    for line in read_lines(out):
        chain = line.get("chain") or []
        if not isinstance(chain, list) or not chain:
            continue
        known = [durations.get(str(run)) for run in chain]
        if any(d is None for d in known):
            result.failures.append(f"no duration for a run of {line.get('run_id')}'s chain")
            return float("nan")
        total = sum(d for d in known if d is not None) + (len(chain) - 1) * args.round_delay
        longest = max(longest, total)
    return float(result.n / args.rate + longest + args.poll)


# -- the table ---------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def row(who: str, got: list[Result]) -> str:
    last = got[-1]
    follower = [g.follower for g in got if g.follower is not None]
    wall, ideal_s = med([g.wall for g in got]), med([g.ideal for g in got])
    lookups = med([g.lookups for g in got])
    per_run = med([g.per_run for g in got])
    other = sum(v for k, v in last.statuses.items() if k not in ("success", "failed"))
    return (
        f"{TITLES[who]:<13} {last.n:>6} {last.followed:>8} {wall:>7.1f} {ideal_s:>7.1f} "
        f"{wall / ideal_s:>10.2f} {(f'{med(follower):.1f}' if follower else '—'):>10} "
        f"{lookups:>8.0f} {per_run:>7.3f} {last.statuses.get('success', 0):>7} "
        f"{last.statuses.get('failed', 0):>6} {other:>5}"
    )


HEAD = (
    f"{'contender':<13} {'N':>6} {'followed':>8} {'wall s':>7} {'ideal s':>7} {'wall/ideal':>10} "
    f"{'follower s':>10} {'look-ups':>8} {'per run':>7} {'success':>7} {'failed':>6} {'other':>5}"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--ids", type=int, default=10_000, help="failed runs to re-trigger and follow [10000]")
    add("--flows", type=int, default=50, help="flows they belong to [50]")
    add("--duration", type=float, default=5.0, help="run duration D, seconds [5]")
    add("--jitter", type=float, default=5.0, help="random extra duration, up to J s [5]")
    add("--fails-once", type=float, default=0.2, help="share of runs failing once [0.2]")
    add("--poll", type=float, default=2.0, help="--poll P, seconds [2]")
    add("--round-delay", type=float, default=1.0, help="--round-delay R, seconds [1]")
    add("--rate", type=float, default=500.0, help="--rate Q of every contender [500]")
    add("--concurrency", type=int, default=32, help="--concurrency C of every contender [32]")
    add("--repeat", type=int, default=1, help="runs per contender, alternating; medians shown")
    add("--only", help="comma-separated contenders among follow,watch,naive (default: all)")
    add("--quick", action="store_true", help="300 IDs, D=0.5+0.5 s, P=0.2 s, R=0.2 s: seconds")
    add("--keep", type=Path, help="keep inputs, outputs, stderr and runs in this directory")
    add("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args()
    if args.quick:
        args.ids, args.duration, args.jitter = 300, 0.5, 0.5
        args.poll, args.round_delay = 0.2, 0.2
    args.flows = max(1, min(args.flows, args.ids))
    args.ids -= args.ids % args.flows
    contenders = args.only.split(",") if args.only else list(CONTENDERS)
    unknown = set(contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contender(s) {sorted(unknown)}: choose among {CONTENDERS}")

    print_machine()
    print(
        f"N={args.ids} failed runs over {args.flows} flows; runs last D={args.duration:g} s + up "
        f"to J={args.jitter:g} s; {args.fails_once:.0%} fail once; --rate {args.rate:g} "
        f"--concurrency {args.concurrency} --poll {args.poll:g} (--follow: --rounds 2 "
        f"--round-delay {args.round_delay:g}); medians of {args.repeat}"
    )
    print("ideal = N/rate + longest chain (its runs' durations + R per further round) + P\n")
    results: dict[str, list[Result]] = {who: [] for who in contenders}
    failures: list[str] = []
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            work = args.keep
        else:
            work = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="bulkretry-follow-"))
            )
        # The same seed gives every fresh simulator the same runs, and the same fates.
        fates: dict[str, dict[str, str] | None] = {}
        for k in range(args.repeat):
            for who in contenders:
                got = measure(args, who, work, fates, k)
                results[who].append(got)
                endpoints = ", ".join(f"{e} {v}" for e, v in got.endpoints.items())
                told = f"; bulkretry says {got.self_reported}" if got.self_reported else ""
                print(
                    f"  {TITLES[who]} #{k + 1}: wall {got.wall:.1f} s, ideal {got.ideal:.1f} s, "
                    f"GETs {got.lookups} ({endpoints}{told}), {got.followed} runs followed, "
                    f"{dict(got.statuses)}",
                    flush=True,
                )
                for problem in got.failures:
                    failures.append(f"{TITLES[who]} #{k + 1}: {problem}")
                    print(f"  FAIL {TITLES[who]} #{k + 1}: {problem}", flush=True)
    print()
    print(HEAD)
    print("-" * len(HEAD))
    for who in contenders:
        print(row(who, results[who]))
    print()
    for who in contenders:
        if who == "naive":
            continue
        per_run = med([g.per_run for g in results[who]])
        verdict = "met" if per_run <= 0.5 else "NOT met"
        print(f"{TITLES[who]}: {per_run:.3f} look-up requests per followed run (<= 0.5: {verdict})")
    if "watch" in results and "naive" in results:
        w, n = results["watch"], results["naive"]
        lookups = med([g.lookups for g in w]) / med([g.lookups for g in n])
        follower = med([g.follower or 0 for g in w]) / med([g.follower or 0 for g in n])
        print(f"watch vs naive: look-ups {lookups:.3f}x, follower wall {follower:.2f}x")
    if args.json:
        args.json.write_text(
            json.dumps({w: [vars(g) for g in got] for w, got in results.items()}, indent=1)
        )
    if failures:
        print(f"\nFAIL: {len(failures)} check(s) failed")
        for problem in failures:
            print(f"  {problem}")
        return 1
    print(
        "\nall checks passed: one line per input line, final statuses as the fates say, no "
        "duplicate re-trigger"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
