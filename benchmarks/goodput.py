"""Goodput under a server quota: how much of the quota each client turns into re-triggers.

Each scenario runs every contender against a FRESH simulator process (same seed, so the same
failed runs) with a quota of Q requests per second:

  (a) token bucket Q/s, burst B; the client's --rate set right (Q)
  (b) the same quota; the client's --rate four times too high (4Q)
  (c) the same quota, halved (rate Q/2, same burst) through POST /_sim/quota once N/2 runs
      were re-triggered; the client's --rate set right for the start (Q)
  (d) a fixed window: W requests per window of S seconds (Retry-After: the window's end)

Contenders: ``bulkretry run``; benchmarks/peers/aiohttp_tenacity.py (aiohttp + aiolimiter at
the same --rate + tenacity, what users write by hand); ``xargs -P 16 -I{} curl --retry 5``
(no rate limit at all: that is what users do).

Completion time is measured on the server's side: this harness polls ``GET /_sim/stats`` every
10 ms and takes the time from the first request the simulator saw to the N-th re-trigger, so
that interpreter start-up (the same for any Python client, and not the quota's business) is not
counted; the wall time from launch to exit is shown too. The ideal is the time the quota allows:
N/Q for (a) and (b), s/Q + (N-s)/(Q/2) for (c) (s: re-triggers when the quota was halved), and
N/W * S for (d). "Share of quota" is ideal/actual; "429 share" is the share of all requests
that the simulator answered 429. A contender that does not re-trigger all N runs, or not within
the time bound (``--bound`` x ideal), is reported as such.

    .venv/bin/python benchmarks/goodput.py            # N=3000, Q=200/s, burst 20: ~4 minutes
    .venv/bin/python benchmarks/goodput.py --quick    # N=300, a smoke test
    .venv/bin/python benchmarks/goodput.py --quick --scenarios a --only-bulkretry --json r.json

``BENCH_BULKRETRY_SRC=DIR`` (or ``--bulkretry-src DIR``) measures the bulkretry package in DIR
(for example a patched copy) instead of the installed one; the simulator is always the
installed one.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from _common import (
    BULKRETRY,
    CREDENTIALS,
    HERE,
    PYTHON,
    compile_measured,
    git_state,
    machine,
    stop,
)

PEER = HERE / "peers" / "aiohttp_tenacity.py"
POLL = 0.010
SEED = 20240601


# -- scenarios ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    rate_factor: float  # the --rate given to rate-limited contenders, as a multiple of Q
    window: bool = False
    halve: bool = False


def scenarios(rate_factors: dict[str, float]) -> dict[str, Scenario]:
    return {
        "a": Scenario("a", "token bucket, --rate set right", rate_factors["a"]),
        "b": Scenario("b", "token bucket, --rate four times too high", rate_factors["b"]),
        "c": Scenario("c", "token bucket halved at N/2 re-triggers", rate_factors["c"], halve=True),
        "d": Scenario(
            "d", "fixed window, Retry-After at the window's end", rate_factors["d"], window=True
        ),
    }


@dataclass
class Config:
    n: int
    quota: float
    burst: int
    window_requests: int
    window: float
    concurrency: int
    curl_parallel: int
    client_burst: int
    max_attempts: int
    bound: float
    retry_after: str
    workdir: Path
    bulkretry_src: str | None
    keep: bool = False

    def ideal(self, sc: Scenario, switched_at: int | None = None) -> float:
        if sc.window:
            return self.n / self.window_requests * self.window
        if sc.halve:
            s = self.n // 2 if switched_at is None else min(self.n, switched_at)
            return s / self.quota + (self.n - s) / (self.quota / 2)
        return self.n / self.quota

    def quota_text(self, sc: Scenario) -> str:
        if sc.window:
            return f"{self.window_requests} requests per {self.window:g} s window"
        text = f"token bucket {self.quota:g}/s, burst {self.burst}"
        if sc.halve:
            text += f", then {self.quota / 2:g}/s from {self.n // 2} re-triggers on"
        return text


# -- the simulator -----------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKRETRY_")}
    env.update(CREDENTIALS)
    env.update(extra)
    return env


class Simulator:
    """A fresh ``bulkretry simulate`` process; its failed run IDs are written to ``ids``."""

    def __init__(self, cfg: Config, sc: Scenario, ids: Path) -> None:
        flows = max(1, cfg.n // 100)
        per_flow = cfg.n // flows
        if flows * per_flow != cfg.n:
            raise SystemExit(f"N={cfg.n} must be a multiple of 100 (or below 100)")
        cmd = [
            *BULKRETRY,
            "simulate",
            "--seed",
            str(SEED),
            "--flows",
            str(flows),
            "--runs-per-flow",
            str(per_flow),
            "--print-failed",
            "--retry-after",
            cfg.retry_after,
        ]
        if sc.window:
            cmd += [
                "--quota-window",
                str(cfg.window),
                "--window-requests",
                str(cfg.window_requests),
            ]
        else:
            cmd += ["--quota-rate", str(cfg.quota), "--quota-burst", str(cfg.burst)]
        self.cmd = cmd
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env(), text=True
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.close()
            raise SystemExit(f"the simulator did not start: {' '.join(cmd)}")
        with open(ids, "w") as fh:
            for _ in range(cfg.n):
                fh.write(self.proc.stdout.readline())
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path.rstrip("/")

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=10)

    def stats(self, conn: http.client.HTTPConnection | None = None) -> dict[str, object]:
        own = conn is None
        conn = conn or self.connection()
        try:
            conn.request("GET", f"{self.path}/_sim/stats")
            return json.loads(conn.getresponse().read())  # type: ignore[no-any-return]
        finally:
            if own:
                conn.close()

    def set_quota(self, body: dict[str, float], conn: http.client.HTTPConnection) -> None:
        conn.request(
            "POST",
            f"{self.path}/_sim/quota",
            body=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        text = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST /_sim/quota answered {response.status}: {text!r}")

    def close(self) -> None:
        stop(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Poller(threading.Thread):
    """Poll /_sim/stats; note the first request, the N-th re-trigger, and halve the quota."""

    def __init__(self, sim: Simulator, n: int, halve_to: dict[str, float] | None) -> None:
        super().__init__(daemon=True)
        self.sim, self.n, self.halve_to = sim, n, halve_to
        self.stop = threading.Event()
        self.first: float | None = None
        self.done: float | None = None
        self.switched_at: int | None = None
        self.switched_time: float | None = None
        self.samples: list[tuple[float, int, int, int]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        conn = self.sim.connection()
        try:
            while not self.stop.is_set():
                stats = self.sim.stats(conn)
                now = time.perf_counter()
                requests = int(stats["requests"])  # type: ignore[call-overload]
                retriggers = int(stats["retriggers"])  # type: ignore[call-overload]
                answers: dict[str, int] = stats["answers"]  # type: ignore[assignment]
                self.samples.append((now, requests, retriggers, int(answers.get("429", 0))))
                if self.first is None and requests > 0:
                    self.first = now
                if (
                    self.halve_to is not None
                    and self.switched_at is None
                    and (retriggers >= self.n // 2)
                ):
                    self.sim.set_quota(self.halve_to, conn)
                    self.switched_time = time.perf_counter()
                    # Re-triggers when the new quota took effect: read just after the POST.
                    self.switched_at = int(self.sim.stats(conn)["retriggers"])  # type: ignore[call-overload]
                if self.done is None and retriggers >= self.n:
                    self.done = now
                self.stop.wait(POLL)
        except BaseException as exc:  # reported by the harness
            self.error = exc
        finally:
            conn.close()


# -- contenders --------------------------------------------------------------------------------


@dataclass
class Contender:
    name: str
    settings: str
    build: Callable[[str, Path, Path, float], tuple[list[str], dict[str, str], bool]]
    # -> (argv, env, argv reads the IDs on stdin)


def contenders(cfg: Config, only_bulkretry: bool) -> list[Contender]:
    def bulkretry(
        base: str, ids: Path, out: Path, rate: float
    ) -> tuple[list[str], dict[str, str], bool]:
        env = child_env()
        launcher = BULKRETRY
        if cfg.bulkretry_src:
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [cfg.bulkretry_src, env.get("PYTHONPATH")])
            )
        argv = [
            *launcher,
            "run",
            str(ids),
            "-o",
            str(out),
            "--overwrite",
            "--base-url",
            base,
            "--rate",
            f"{rate:g}",
            "--burst",
            str(cfg.client_burst),
            "--concurrency",
            str(cfg.concurrency),
            "--max-attempts",
            str(cfg.max_attempts),
            "-q",
        ]
        return argv, env, False

    def peer(
        base: str, ids: Path, out: Path, rate: float
    ) -> tuple[list[str], dict[str, str], bool]:
        argv = [
            PYTHON,
            str(PEER),
            base,
            str(ids),
            str(out),
            "--rate",
            f"{rate:g}",
            "--concurrency",
            str(cfg.concurrency),
            "--max-attempts",
            str(cfg.max_attempts),
        ]
        return argv, child_env(), False

    def curl(
        base: str, ids: Path, out: Path, rate: float
    ) -> tuple[list[str], dict[str, str], bool]:
        c = CREDENTIALS
        argv = [
            "xargs",
            "-P",
            str(cfg.curl_parallel),
            "-I{}",
            "curl",
            "-s",
            "-X",
            "POST",
            "--retry",
            "5",
            "-H",
            f"Authorization: Bearer {c['BULKRETRY_ACCESS_TOKEN']}",
            "-H",
            f"x-api-key: {c['BULKRETRY_API_KEY']}",
            "-H",
            f"x-gw-ims-org-id: {c['BULKRETRY_ORG_ID']}",
            "-H",
            f"x-sandbox-name: {c['BULKRETRY_SANDBOX']}",
            "-H",
            "Content-Type: application/json",
            f"{base}/runs/{{}}/action?op=re-trigger",
        ]
        return argv, child_env(), True

    found = [
        Contender(
            "bulkretry",
            f"--rate xQ --burst {cfg.client_burst} --concurrency "
            f"{cfg.concurrency} --max-attempts {cfg.max_attempts}",
            bulkretry,
        )
    ]
    if not only_bulkretry:
        found.append(
            Contender(
                "aiohttp+tenacity",
                f"AsyncLimiter(xQ, 1), {cfg.concurrency} "
                f"workers, stop_after_attempt({cfg.max_attempts})",
                peer,
            )
        )
        if shutil.which("curl") and shutil.which("xargs"):
            found.append(
                Contender(
                    "xargs+curl", f"xargs -P {cfg.curl_parallel} curl --retry 5, no rate", curl
                )
            )
        else:
            print("curl or xargs not found: the xargs+curl contender is left out", file=sys.stderr)
    return found


# -- one measurement ---------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    contender: str
    argv: str
    rate: float | None
    n: int
    retriggers: int = 0
    retriggered_runs: int = 0
    duplicates: int = 0
    requests: int = 0
    throttled: int = 0
    other_answers: dict[str, int] = field(default_factory=dict)
    time: float | None = None  # server side: first request to N-th re-trigger
    wall: float = 0.0  # launch to exit
    ideal: float = 0.0
    timed_out: bool = False
    exit_code: int | None = None
    output_ok: bool | None = None
    note: str = ""
    first_second_429: int = 0
    longest_stall: float = 0.0  # longest spell without a new request, before the N-th re-trigger

    @property
    def complete(self) -> bool:
        return self.retriggered_runs == self.n and self.time is not None and not self.timed_out

    @property
    def share(self) -> float | None:
        return self.ideal / self.time if self.complete and self.time else None

    @property
    def share_429(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0


def check_output(contender: str, out: Path, n: int) -> tuple[bool, str]:
    """Whether the contender's own output says every run was re-triggered (curl: no check)."""
    if contender == "xargs+curl":
        return True, ""
    try:
        lines = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        return False, f"output does not parse: {exc}"
    if len(lines) != n:
        return False, f"{len(lines)} output lines for {n} inputs"
    if contender == "bulkretry":
        bad = sum(1 for line in lines if line.get("outcome") != "retriggered")
    else:
        bad = sum(1 for line in lines if line.get("status") != 200)
    return (bad == 0), (f"{bad} lines not re-triggered" if bad else "")


def measure(cfg: Config, sc: Scenario, who: Contender) -> Result:
    rate = cfg.quota * sc.rate_factor
    tag = f"{sc.key}-{who.name.replace('+', '-')}"
    ids, out = cfg.workdir / f"ids-{tag}.txt", cfg.workdir / f"out-{tag}.jsonl"
    sim = Simulator(cfg, sc, ids)
    try:
        halve_to = {"rate": cfg.quota / 2, "burst": cfg.burst} if sc.halve else None
        poller = Poller(sim, cfg.n, halve_to)
        poller.start()
        argv, env, on_stdin = who.build(sim.url, ids, out, rate)
        result = Result(
            sc.key,
            who.name,
            " ".join(argv),
            None if who.name == "xargs+curl" else rate,
            cfg.n,
            ideal=cfg.ideal(sc),
        )
        bound = cfg.bound * cfg.ideal(sc) + 5.0
        with open(ids) as stdin, open(out, "w") as stdout:
            started = time.perf_counter()
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=stdin if on_stdin else subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.PIPE,
                start_new_session=True,
                # Not the repository: `python -m` would put it before PYTHONPATH on sys.path.
                cwd=cfg.workdir,
            )
            try:
                _, err = proc.communicate(timeout=bound)
            except subprocess.TimeoutExpired:
                result.timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    _, err = proc.communicate(timeout=5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    _, err = proc.communicate()
            result.wall = time.perf_counter() - started
        result.exit_code = proc.returncode
        time.sleep(3 * POLL)
        poller.stop.set()
        poller.join(10)
        if poller.error is not None:
            raise RuntimeError(f"polling the simulator failed: {poller.error!r}")
        stats = sim.stats()
    finally:
        sim.close()
    answers: dict[str, int] = stats["answers"]  # type: ignore[assignment]
    result.retriggers = int(stats["retriggers"])  # type: ignore[call-overload]
    result.retriggered_runs = int(stats["retriggered_runs"])  # type: ignore[call-overload]
    result.duplicates = int(stats["duplicate_retriggers"])  # type: ignore[call-overload]
    result.requests = int(stats["requests"])  # type: ignore[call-overload]
    result.throttled = int(answers.get("429", 0))
    result.other_answers = {k: v for k, v in answers.items() if k not in ("200", "429")}
    result.ideal = cfg.ideal(sc, poller.switched_at)
    if poller.first is not None and poller.done is not None:
        result.time = poller.done - poller.first
        # 429s answered in the first second of traffic: the start-up burst, if any.
        cutoff = poller.first + 1.0
        result.first_second_429 = max((s[3] for s in poller.samples if s[0] <= cutoff), default=0)
        result.longest_stall = longest_stall(poller.samples, poller.first, poller.done)
    if cfg.keep:
        with open(cfg.workdir / f"trace-{tag}.csv", "w") as fh:
            fh.write("seconds,requests,retriggers,throttled\n")
            t0 = poller.first or 0.0
            fh.writelines(f"{t - t0:.4f},{q},{r},{x}\n" for t, q, r, x in poller.samples)
    result.output_ok, note = check_output(who.name, out, cfg.n)
    notes = [note] if note else []
    if result.timed_out:
        notes.append(f"killed after {bound:.0f} s")
    if result.retriggered_runs < cfg.n:
        notes.append(f"only {result.retriggered_runs}/{cfg.n} runs re-triggered")
    if result.other_answers:
        notes.append(
            "other answers " + ", ".join(f"{k}: {v}" for k, v in result.other_answers.items())
        )
    if proc.returncode not in (0, None) and not result.timed_out:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] if err else []
        notes.append(f"exit {proc.returncode}" + (f" ({tail[0][:80]})" if tail else ""))
    result.note = "; ".join(notes)
    return result


def calibrate_curl(cfg: Config, parallel: int) -> str:
    """Measure how fast xargs+curl re-triggers N runs at ``xargs -P parallel`` with no quota."""
    free = replace(cfg, quota=1e6, burst=10**6, curl_parallel=parallel, bound=1e6)
    sc = Scenario("a", "no quota", 1.0)
    who = next(c for c in contenders(free, False) if c.name == "xargs+curl")
    r = measure(free, sc, who)
    rate = f"{r.n / r.time:.0f} req/s" if r.time else "did not finish"
    return (
        f"xargs -P {parallel:<3} curl, no quota: {r.retriggered_runs}/{r.n} runs in "
        f"{fmt(r.time, '.2f')} s: {rate} ({rate_vs(r, cfg.quota)} of Q={cfg.quota:g}/s) "
        f"{r.note}".rstrip()
    )


def rate_vs(r: Result, quota: float) -> str:
    return fmt(r.n / r.time / quota if r.time else None, ".2f") + "x"


def longest_stall(samples: list[tuple[float, int, int, int]], first: float, done: float) -> float:
    """The longest time between two polls that saw the request count change."""
    longest, last_change, last_count = 0.0, first, -1
    for t, requests, _, _ in samples:
        if t < first or t > done:
            continue
        if requests != last_count:
            longest = max(longest, t - last_change)
            last_change, last_count = t, requests
    return longest


# -- report ------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str, missing: str = "—") -> str:
    return missing if value is None else format(value, spec)


def table(cfg: Config, sc: Scenario, results: list[Result]) -> str:
    rate = cfg.quota * sc.rate_factor
    lines = [
        f"({sc.key}) {sc.title}: {cfg.quota_text(sc)}; N={cfg.n}; "
        f"rate-limited contenders get --rate {rate:g} ({sc.rate_factor:g}Q)",
        f"{'contender':<17} {'done':>11} {'time s':>7} {'wall s':>7} {'ideal s':>7} "
        f"{'share':>6} {'429 share':>9} {'requests':>8} {'dups':>4} {'429 1st s':>9} "
        f"{'stall s':>7}  note",
    ]
    for r in results:
        lines.append(
            f"{r.contender:<17} {f'{r.retriggered_runs}/{r.n}':>11} {fmt(r.time, '7.2f'):>7} "
            f"{r.wall:7.2f} {r.ideal:7.2f} {fmt(r.share, '6.3f'):>6} {r.share_429:9.1%} "
            f"{r.requests:8d} {r.duplicates:4d} {r.first_second_429:9d} {r.longest_stall:7.2f}  "
            f"{r.note}"
        )
    ours = next((r for r in results if r.contender == "bulkretry"), None)
    if ours is not None:
        for peer in results:
            if peer is ours:
                continue
            if ours.share is not None and peer.share is not None:
                share = f"share of quota {ours.share / peer.share:.2f}x"
            elif ours.share is not None:
                share = "share of quota: the peer did not finish"
            else:
                share = "share of quota: n/a (bulkretry did not finish)"
            if peer.share_429:
                throttled = f"429 share {ours.share_429 / peer.share_429:.3f}x"
            else:
                throttled = "429 share: the peer got none"
            lines.append(
                f"bulkretry vs {peer.contender}: {share}, {throttled} "
                f"({ours.share_429:.1%} vs {peer.share_429:.1%})"
            )
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def targets(results: dict[str, list[Result]]) -> list[str]:
    """The issue's targets, for (a) and (b): share >= 0.97, 429 share <= 2%, better than peers."""
    lines = []
    for key in ("a", "b"):
        rows = results.get(key)
        if not rows:
            continue
        ours = next((r for r in rows if r.contender == "bulkretry"), None)
        if ours is None:
            continue
        peers = [r for r in rows if r is not ours]
        share_ok = ours.share is not None and ours.share >= 0.97
        t429_ok = ours.share_429 <= 0.02
        better_share = all(
            ours.share is not None and (p.share is None or ours.share > p.share) for p in peers
        )
        better_429 = all(
            ours.share_429 < p.share_429 or (ours.share_429 == p.share_429 == 0) for p in peers
        )
        lines.append(
            f"({key}) share of quota {fmt(ours.share, '.3f')} >= 0.97: {verdict(share_ok)}; "
            f"429 share {ours.share_429:.2%} <= 2%: {verdict(t429_ok)}"
            + (
                f"; better than every peer: share {verdict(better_share)}, "
                f"429 share {verdict(better_429)}"
                if peers
                else ""
            )
            + ("; no duplicates: " + verdict(ours.duplicates == 0))
        )
    return lines


def machine_line() -> str:
    """One line on the machine and the commit measured, for the report's head."""
    m = machine()
    head, dirty = git_state()
    return (
        f"machine: nproc={m['nproc']} python={m['python']} cpu={m['cpu']!r} "
        f"loadavg={m['loadavg']}; repository HEAD {head}"
        + (" with uncommitted changes in bulkretry/" if dirty else "")
    )


def parse_factors(text: str) -> dict[str, float]:
    factors = {"a": 1.0, "b": 4.0, "c": 1.0, "d": 1.0}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in factors:
            raise argparse.ArgumentTypeError(f"unknown scenario {key!r}")
        factors[key] = float(value)
    return factors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="N=300: a smoke test")
    add("-n", type=int, help="failed runs to re-trigger [default 3000, --quick 300]")
    add("--quota", type=float, default=200.0, help="Q, the quota's rate [default 200/s]")
    add("--burst", type=int, default=20, help="the quota's burst [default 20]")
    add("--window-requests", type=int, default=200, help="(d): requests per window [200]")
    add("--window", type=float, default=1.0, help="(d): window length in seconds [1]")
    add("--concurrency", type=int, default=16, help="bulkretry and aiohttp peer [16]")
    add("--curl-parallel", type=int, default=16, help="xargs -P [16, as --concurrency]")
    add(
        "--curl-calibrate",
        metavar="P,P,...",
        help="only measure xargs+curl's own rate (no quota) at each xargs -P, then exit",
    )
    add(
        "--client-burst",
        type=int,
        default=1,
        help="bulkretry --burst [default 1, bulkretry's own default: what a user leaves]",
    )
    add("--max-attempts", type=int, default=50, help="bulkretry and the aiohttp peer [50]")
    add(
        "--rate-factors",
        type=parse_factors,
        default=parse_factors(""),
        help="--rate per scenario as a multiple of Q [a=1,b=4,c=1,d=1]",
    )
    add("--bound", type=float, default=5.0, help="give up after this x ideal (+5 s) [5]")
    add("--retry-after", choices=("seconds", "http-date", "none"), default="seconds")
    add("--scenarios", default="abcd", help="which scenarios, e.g. a or ab [abcd]")
    add("--only-bulkretry", action="store_true", help="leave the peers out")
    add(
        "--bulkretry-src",
        default=os.environ.get("BENCH_BULKRETRY_SRC"),
        help="measure the bulkretry package in this directory (PYTHONPATH)",
    )
    add("--json", metavar="PATH", help="also write the results as JSON")
    add("--keep", metavar="DIR", help="keep inputs and outputs in DIR")
    args = parser.parse_args()

    n = args.n or (300 if args.quick else 3000)
    workdir = (
        Path(args.keep).resolve()
        if args.keep
        else Path(tempfile.mkdtemp(prefix="bulkretry-goodput-"))
    )
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = Config(
        n=n,
        quota=args.quota,
        burst=args.burst,
        window_requests=args.window_requests,
        window=args.window,
        concurrency=args.concurrency,
        curl_parallel=args.curl_parallel,
        client_burst=args.client_burst,
        max_attempts=args.max_attempts,
        bound=args.bound,
        retry_after=args.retry_after,
        workdir=workdir,
        bulkretry_src=args.bulkretry_src,
        keep=bool(args.keep),
    )
    all_scenarios = scenarios(args.rate_factors)
    chosen = [all_scenarios[k] for k in args.scenarios.replace(",", "") if k in all_scenarios]
    if not chosen:
        parser.error(f"--scenarios {args.scenarios!r} names none of a, b, c, d")
    if args.curl_calibrate:
        print(machine_line())
        for p in (int(x) for x in args.curl_calibrate.split(",")):
            print(calibrate_curl(cfg, p), flush=True)
        return 0
    who = contenders(cfg, args.only_bulkretry)

    print(machine_line())
    if cfg.bulkretry_src:
        print(f"bulkretry measured from {cfg.bulkretry_src}")
    print(compile_measured(cfg.bulkretry_src))
    print("contenders: " + "; ".join(f"{c.name} ({c.settings})" for c in who))
    print(
        "time: server side, first request to N-th re-trigger; wall: launch to exit; "
        "share = ideal/time; 429 1st s: 429s in the first second of traffic; "
        "stall s: the longest spell without a new request\n"
    )
    results: dict[str, list[Result]] = {}
    failed = False
    for sc in chosen:
        rows = []
        for contender in who:
            r = measure(cfg, sc, contender)
            rows.append(r)
            if r.contender != "xargs+curl" and r.output_ok is False and not r.timed_out:
                failed = failed or r.contender == "bulkretry"
            print(f"  ({sc.key}) {r.contender}: {r.argv}", file=sys.stderr, flush=True)
        results[sc.key] = rows
        print(table(cfg, sc, rows) + "\n", flush=True)
    verdicts = targets(results)
    if verdicts:
        print(
            "targets (issue): bulkretry >= 0.97 of the quota and <= 2% 429s in (a) and (b), "
            "better than every peer on both"
        )
        print("\n".join(verdicts))
    if args.json:
        payload = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "results": {
                k: [
                    {
                        **asdict(r),
                        "share": r.share,
                        "share_429": r.share_429,
                        "complete": r.complete,
                    }
                    for r in rows
                ]
                for k, rows in results.items()
            },
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    # Only a broken bulkretry run (wrong output) is an error; missed targets are figures.
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
