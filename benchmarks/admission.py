"""Eager admission with ``--state``: how fast the input lands in the state file, and a resume.

With ``--state PATH``, ``bulkretry run`` admits its input into the state file by a task of its
own, as fast as it reads it, ahead of and independent from the requests. Two figures, measured
in one invocation with the contenders alternating over ``--rounds``, medians:

1. Eager admission: N distinct IDs piped on stdin (``cat IDS |``) into
   ``bulkretry run --state FRESH.db -o /dev/null --rate 50`` against the built-in simulator
   (``bulkretry simulate --accept-any``, a child). The state file is polled read-only every
   ``--poll`` seconds; the figure is the wall time from launch until it shows the whole input
   admitted (``sources``: ``complete = 1`` and ``lines = N``; ``runs``: N rows), and the peak RSS
   up to that moment (``VmHWM`` of ``/proc/PID/status``, read right then). The process is then
   killed (SIGKILL). Compared with ``bulkretry run --dry-run -o /dev/null`` over the same IDs
   piped the same way (wall time to exit, peak RSS by GNU ``time -f %M``). Targets: admission
   <= 1.5x the dry run's wall time; peak RSS < 80 MB.
2. Resume over done runs: the first round's killed state file, every run then set to
   ``retriggered`` by SQL (as a real run leaves them: new run ID, etag, request ID, 1 attempt, 200),
   then ``bulkretry run IDS --state DONE.db -o /dev/null`` (every record
   ``already_retriggered``, no request) against ``bulkretry run IDS --dry-run -o /dev/null``
   (the same file argument). Target: <= 1.5x the dry run's wall time.

Every contender runs under GNU ``/usr/bin/time -f %M`` (when installed); the admission run's
measured process is the one ``time`` started. Runs are checked: the dry runs and the resume
exit 0 with the summary they must print, the resume sends nothing (the simulator's request
count does not move), and the state file holds exactly N runs.

Usage: ``.venv/bin/python benchmarks/admission.py [--quick] [--ids N] [--rounds R] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import _common
from _common import GNU_TIME, PYTHON, Server, child_env, median, print_machine, run_child, write_ids

if _common.SOURCE:
    # The console script imports the entry point of the installed (working-tree) layout, which a
    # snapshot of another commit may not have: launch the snapshot's own ``python -m bulkretry``
    # instead, for every contender and the simulator alike.
    _common.BULKRETRY = [PYTHON, "-m", "bulkretry"]
BULKRETRY = _common.BULKRETRY

#: Targets of the issue.
ADMISSION_RATIO = 1.5
RESUME_RATIO = 1.5
PEAK_MB = 80.0


@dataclass
class Admitted:
    """One eager-admission run, stopped once the state file held the whole input."""

    wall: float  # launch -> the poll that saw the whole input admitted
    hwm_kb: int  # VmHWM at that moment
    time_kb: int  # GNU time's %M after the kill (the peak up to the kill): a cross-check
    polls: int
    requests: int  # POSTs the simulator saw meanwhile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", default="50", help="--rate of the admission run [50]")
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between two polls")
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds an admission run may take at most"
    )
    parser.add_argument("--keep", metavar="DIR", help="keep inputs and state files in DIR")
    parser.add_argument("--quick", action="store_true", help="5,000 IDs, one round: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.ids, args.rounds = 5_000, 1
    print_machine()
    print(f"launched as: {' '.join(BULKRETRY)}")
    if GNU_TIME is None:
        print("note: /usr/bin/time is missing: the dry runs' peak RSS is os.wait4's ru_maxrss")
    if args.keep:
        work = Path(args.keep)
        work.mkdir(parents=True, exist_ok=True)
        return measure(args, work)
    with tempfile.TemporaryDirectory(prefix="bulkretry-bench-admission-") as tmp:
        return measure(args, Path(tmp))


def measure(args: argparse.Namespace, work: Path) -> int:
    # Children start in the scratch directory: ``python -m`` puts its working directory first
    # on sys.path, ahead of PYTHONPATH, so from the repository it would import the working tree.
    work = work.resolve()
    os.chdir(work)
    where = subprocess.run(
        [PYTHON, "-c", "import bulkretry; print(bulkretry.__file__)"],
        env=child_env(),
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"children import: {where}")
    n = args.ids
    ids = work / "ids.txt"
    write_ids(ids, n, seed=11)
    done = work / "done.db"
    dry_pipe: list[tuple[float, int]] = []
    dry_file: list[float] = []
    admitted: list[Admitted] = []
    resumed: list[float] = []
    with Server("sim", work) as sim:
        env = child_env(BULKRETRY_BASE_URL=sim.url)
        print(f"server: {sim.name} at {sim.url}")
        print(
            f"{n:,} distinct IDs, {args.rounds} round(s); order in each round: dry run (stdin), "
            f"admission (stdin), dry run (file), resume (file)"
        )
        print()
        for round_ in range(args.rounds):
            dry_pipe.append(dry_run_piped(ids, n, env))
            fresh = work / f"fresh{round_}.db"
            admitted.append(admission(args, ids, fresh, env, sim))
            if round_ == 0:
                build_done(fresh, done, n)
            for path in _db_files(fresh):
                path.unlink(missing_ok=True)
            dry_file.append(dry_run_file(ids, n, env))
            resumed.append(resume(ids, done, n, env, sim))
            a = admitted[-1]
            print(
                f"round {round_ + 1}: dry(stdin) {dry_pipe[-1][0]:.2f} s "
                f"{dry_pipe[-1][1] / 1024:.1f} MB | admission {a.wall:.2f} s "
                f"{a.hwm_kb / 1024:.1f} MB ({a.polls} polls, "
                f"{a.requests} POSTs meanwhile) | dry(file) {dry_file[-1]:.2f} s | "
                f"resume {resumed[-1]:.2f} s",
                flush=True,
            )
    report(args, dry_pipe, dry_file, admitted, resumed)
    return 0


def _db_files(path: Path) -> list[Path]:
    return [path, *(Path(f"{path}{suffix}") for suffix in ("-wal", "-shm", ".lock"))]


def _cat(ids: Path) -> subprocess.Popen[bytes]:
    """``cat IDS``: its stdout is the pipe a contender reads (as ``cat IDS | bulkretry ...``)."""
    return subprocess.Popen(["cat", str(ids)], stdout=subprocess.PIPE)


def _summary(stderr: str, n: int, outcome: str, what: str) -> None:
    """Check the summary line: ``N records: N <outcome>``."""
    if not re.search(rf"\b{n} records: {n} {outcome}\b", stderr):
        raise SystemExit(f"{what}: expected '{n} records: {n} {outcome}' in:\n{stderr[-2000:]}")


def dry_run_piped(ids: Path, n: int, env: dict[str, str]) -> tuple[float, int]:
    """``cat IDS | bulkretry run --dry-run -o /dev/null``: wall time to exit, peak RSS (kB)."""
    cat = _cat(ids)
    assert cat.stdout is not None
    try:
        child = run_child(
            [*BULKRETRY, "run", "--dry-run", "-o", os.devnull], env=env, stdin=cat.stdout.fileno()
        )
    finally:
        cat.stdout.close()
        cat.wait()
    _summary(child.stderr, n, "would_retrigger", "dry run (stdin)")
    return child.wall, child.maxrss_kb


def dry_run_file(ids: Path, n: int, env: dict[str, str]) -> float:
    """``bulkretry run IDS --dry-run -o /dev/null``: wall time to exit."""
    child = run_child([*BULKRETRY, "run", str(ids), "--dry-run", "-o", os.devnull], env=env)
    _summary(child.stderr, n, "would_retrigger", "dry run (file)")
    return child.wall


def resume(ids: Path, done: Path, n: int, env: dict[str, str], sim: Server) -> float:
    """``bulkretry run IDS --state DONE.db -o /dev/null``: wall time; checks nothing was sent."""
    before = _requests(sim)
    child = run_child(
        # No pre-flight: the dry run it is compared with makes none, and nothing may be sent.
        [*BULKRETRY, "run", str(ids), "--state", str(done), "-o", os.devnull, "--no-preflight"],
        env=env,
    )
    after = _requests(sim)
    _summary(child.stderr, n, "already_retriggered", "resume")
    if after != before:
        raise SystemExit(f"resume: the simulator saw {after - before} requests (expected none)")
    return child.wall


def _requests(sim: Server) -> int:
    """Requests the simulator has seen so far (``GET /_sim/stats``)."""
    count = sim.stats()["requests"]
    assert isinstance(count, int), count
    return count


def _grandchild(pid: int, deadline: float) -> int:
    """The process ``time`` (pid) started: the one to read VmHWM of."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    while time.monotonic() < deadline:
        try:
            found = children.read_text().split()
        except OSError:
            found = []
        if found:
            return int(found[0])
        time.sleep(0.001)
    raise SystemExit(f"no child of /usr/bin/time (pid {pid}) appeared")


def _vm_hwm_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmHWM in /proc/{pid}/status")


def _admitted(path: Path, n: int, pid: int) -> tuple[float, int] | None:
    """When the state file shows all ``n`` lines read and ``n`` runs (in one read transaction),
    return the moment the ``sources`` row showed it and ``pid``'s VmHWM read right then (both
    before the slower ``count(*)``); else None (also while the file is not readable yet)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return None
    try:
        conn.execute("BEGIN")
        rows = conn.execute("SELECT complete, lines FROM sources").fetchall()
        if not rows or not all(complete == 1 and lines == n for complete, lines in rows):
            return None
        seen = time.perf_counter()
        hwm = _vm_hwm_kb(pid)
        if conn.execute("SELECT count(*) FROM runs").fetchone()[0] != n:
            return None
        return seen, hwm
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def admission(
    args: argparse.Namespace, ids: Path, fresh: Path, env: dict[str, str], sim: Server
) -> Admitted:
    """``cat IDS | bulkretry run --state FRESH.db -o /dev/null --rate R``, until all admitted."""
    n = args.ids
    requests_before = _requests(sim)
    cmd = [*BULKRETRY, "run", "--state", str(fresh), "-o", os.devnull, "--rate", args.rate]
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as timing:
        full = [GNU_TIME, "-q", "-f", "%M", "-o", timing.name, *cmd] if GNU_TIME else cmd
        cat = _cat(ids)
        assert cat.stdout is not None
        started = time.perf_counter()
        proc = subprocess.Popen(
            full, env=env, stdin=cat.stdout, stdout=subprocess.DEVNULL, stderr=err
        )
        cat.stdout.close()
        deadline = time.monotonic() + args.timeout
        pid: int | None = None
        try:
            pid = _grandchild(proc.pid, deadline) if GNU_TIME else proc.pid
            polls = 0
            while True:
                polls += 1
                # The sources row and the runs it covers are committed together.
                seen = _admitted(fresh, n, pid)
                if seen is not None:
                    wall, hwm = seen[0] - started, seen[1]
                    break
                if proc.poll() is not None:
                    err.seek(0)
                    text = err.read().decode(errors="replace")
                    raise SystemExit(
                        f"{' '.join(cmd)} exited {proc.returncode} before admitting "
                        f"all {n} IDs:\n{text[-2000:]}"
                    )
                if time.monotonic() > deadline:
                    raise SystemExit(f"admission of {n} IDs took over {args.timeout} s")
                time.sleep(args.poll)
            os.kill(pid, signal.SIGKILL)
            proc.wait(60)
        finally:
            if proc.poll() is None:  # a failure above: leave nothing running
                if pid is not None and pid != proc.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                proc.kill()
                proc.wait()
            if cat.poll() is None:
                cat.kill()
            cat.wait()
        words = timing.read().split()
        time_kb = int(words[-1]) if words and words[-1].isdigit() else 0
    requests = _requests(sim) - requests_before
    return Admitted(wall, hwm, time_kb, polls, requests)


def build_done(fresh: Path, done: Path, n: int) -> None:
    """Turn the killed run's state file into one whose N runs are all re-triggered.

    Each run gets what a re-trigger leaves: a new run ID (the simulator's for runs it answered,
    else one of the same shape), an etag, an attempt, HTTP 200. The WAL is folded in and the
    file renamed, so that every round resumes the same file.
    """
    conn = sqlite3.connect(fresh)
    try:
        with conn:
            # Shapes as the simulator answers: a UUID, an etag, a request ID (by seq).
            conn.execute(
                "UPDATE runs SET state = 'retriggered', doubt = 0, ambiguous = 0, error = NULL, "
                "new_run_id = coalesce(new_run_id, substr(run_id, 25, 8) || '-' || "
                "substr(run_id, 33, 4) || '-' || substr(run_id, 15, 4) || '-' || "
                "substr(run_id, 20, 4) || '-' || substr(run_id, 1, 8) || substr(run_id, 10, 4)), "
                "etag = coalesce(etag, printf('\"%08x-0000-0200-0000-6b12978d0000\"', seq)), "
                "request_id = coalesce(request_id, printf('db370e38-d907-46ca-1f20-%012x', seq)), "
                "attempts = max(attempts, 1), http_status = 200"
            )
        states = dict(conn.execute("SELECT state, count(*) FROM runs GROUP BY state").fetchall())
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    if states != {"retriggered": n}:
        raise SystemExit(f"the done state file holds {states}, not {n} retriggered runs")
    for path in _db_files(done):
        path.unlink(missing_ok=True)
    shutil.move(str(fresh), str(done))
    for path in _db_files(fresh)[1:]:
        path.unlink(missing_ok=True)


def _mmm(values: list[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in (min(values), median(values), max(values)))


def report(
    args: argparse.Namespace,
    dry_pipe: list[tuple[float, int]],
    dry_file: list[float],
    admitted: list[Admitted],
    resumed: list[float],
) -> None:
    n = args.ids
    dry_wall = [w for w, _ in dry_pipe]
    dry_mb = [kb / 1024 for _, kb in dry_pipe]
    adm_wall = [a.wall for a in admitted]
    adm_mb = [a.hwm_kb / 1024 for a in admitted]
    kill_mb = [a.time_kb / 1024 for a in admitted]
    print()
    print(f"## eager admission of {n:,} IDs on stdin, {args.rounds} round(s): min / median / max")
    print(f"{'contender':<40}{'wall s':>24}{'peak RSS MB':>24}")
    print(f"{'run --dry-run (stdin)':<40}{_mmm(dry_wall, '.2f'):>24}{_mmm(dry_mb, '.1f'):>24}")
    print(
        f"{'run --state --rate ' + args.rate + ' (stdin), admitted':<40}"
        f"{_mmm(adm_wall, '.2f'):>24}{_mmm(adm_mb, '.1f'):>24}"
    )
    print(
        f"peak RSS of the admission run up to its kill (GNU time %M): {_mmm(kill_mb, '.1f')} MB; "
        f"POSTs sent while admitting: {', '.join(str(a.requests) for a in admitted)}"
    )
    ratio = median(adm_wall) / median(dry_wall)
    verdict = "met" if ratio <= ADMISSION_RATIO else "NOT met"
    print(
        f"ratio admission/dry-run wall: {ratio:.2f}x "
        f"(target <= {ADMISSION_RATIO:.2f}x: {verdict}); "
        f"admission rate {n / median(adm_wall):,.0f} IDs/s"
    )
    peak = max(adm_mb)
    verdict = "met" if peak < PEAK_MB else "NOT met"
    print(
        f"admission peak RSS: median {median(adm_mb):.1f} MB, max {peak:.1f} MB "
        f"(target < {PEAK_MB:.0f} MB: {verdict})"
    )
    print()
    print(f"## resume over {n:,} runs already retriggered in --state, {args.rounds} round(s)")
    print(f"{'contender':<40}{'wall s':>24}")
    print(f"{'run IDS --dry-run':<40}{_mmm(dry_file, '.2f'):>24}")
    print(f"{'run IDS --state DONE.db':<40}{_mmm(resumed, '.2f'):>24}")
    ratio = median(resumed) / median(dry_file)
    verdict = "met" if ratio <= RESUME_RATIO else "NOT met"
    print(
        f"ratio resume/dry-run wall: {ratio:.2f}x (target <= {RESUME_RATIO:.2f}x: {verdict}); "
        f"vs the dry run on stdin: {median(resumed) / median(dry_wall):.2f}x; "
        f"records not already_retriggered on resume: 0"
    )


if __name__ == "__main__":
    sys.exit(main())
