"""Shared helpers of the benchmark scripts: children measured with ``os.wait4``, servers, inputs.

Only public tools are used: the standard library (``os.wait4`` for a child's user+sys CPU and
peak RSS, ``/proc/PID/stat`` for a running server's CPU), the project's own CLI and ``curl``.
"""

from __future__ import annotations

import compileall
import contextlib
import importlib.util
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PYTHON = sys.executable
_SCRIPT = Path(PYTHON).parent / "bulkretry"
#: How a user launches bulkretry: the console script next to this interpreter.
BULKRETRY = [str(_SCRIPT)] if _SCRIPT.exists() else [PYTHON, "-m", "bulkretry"]
#: The simulator's fake credentials (good only on loopback).
CREDENTIALS = {
    "BULKRETRY_ACCESS_TOKEN": "sim-access-token",
    "BULKRETRY_API_KEY": "sim-api-key",
    "BULKRETRY_ORG_ID": "SIMORG0000000000000000@AdobeOrg",
    "BULKRETRY_SANDBOX": "prod",
}
_CLK_TCK = os.sysconf("SC_CLK_TCK")


#: Measure the bulkretry package found in this directory instead of the installed one (for
#: example a ``git archive`` snapshot, while the working tree is being edited).
SOURCE = os.environ.get("BENCH_BULKRETRY_SRC")


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a measured child: ours without BULKRETRY_* noise, plus credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKRETRY_")}
    if SOURCE:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE, env.get("PYTHONPATH")]))
    env.update(CREDENTIALS)
    env.update(extra)
    return env


def git_state() -> tuple[str, bool]:
    """The repository's short HEAD, and whether bulkretry/ has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "bulkretry"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?", False
    return head, bool(dirty)


def compile_measured(source: str | None = SOURCE) -> str:
    """Compile the measured package's bytecode, as installing it from a wheel does; say where.

    An editable install under ``PYTHONDONTWRITEBYTECODE`` (set on some CI and container images,
    and on this project's benchmark machine) never caches it: every launch compiled bulkretry's
    modules from source again, 140-180 ms of a 500 ms start-up, where the peers' libraries came
    compiled from their wheels. (``compileall`` writes whatever that variable says.)
    """
    if source:
        package = Path(source) / "bulkretry"
    else:
        spec = importlib.util.find_spec("bulkretry")
        if spec is None or spec.origin is None:
            return "bulkretry not found: bytecode not compiled"
        package = Path(spec.origin).parent
    if not compileall.compile_dir(str(package), quiet=1):
        return f"bytecode NOT compiled in {package}: start-up includes compiling it"
    return f"bytecode compiled in {package}"


def describe_source() -> str:
    """Which bulkretry is measured: the directory, and the git commit of the working tree."""
    where = SOURCE or str(REPO)
    head, dirty = git_state()
    if SOURCE:
        # A snapshot says which commit it is in a COMMIT file (see README: git archive).
        stamp = Path(SOURCE) / "COMMIT"
        what = stamp.read_text().strip() if stamp.exists() else "unknown commit"
        return f"bulkretry from {where} (snapshot of {what}; repository HEAD is {head})"
    state = " with uncommitted changes in bulkretry/" if dirty else ""
    return f"bulkretry from {where} (repository HEAD {head}{state})"


@dataclass
class Child:
    """One finished child process, measured by ``os.wait4``."""

    cmd: list[str]
    rc: int
    wall: float
    user: float
    sys: float
    maxrss_kb: int
    stderr: str

    @property
    def cpu(self) -> float:
        return self.user + self.sys


#: ``/usr/bin/time`` (GNU time), used to read a child's peak RSS, if installed: see run_child.
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def run_child(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    stdout: int | None = subprocess.DEVNULL,
    stdin: int | None = subprocess.DEVNULL,
    check: bool = True,
) -> Child:
    """Run ``cmd``; return its wall time (launch to exit), CPU and peak RSS.

    CPU (user+sys) comes from ``os.wait4``. Peak RSS does too, but Linux counts in a child's
    ``ru_maxrss`` the RSS of the parent it was forked from (recorded at ``exec``), so a parent
    bigger than the child would hide it; the child is therefore started under GNU
    ``/usr/bin/time -f %M`` (a small process) when installed, and its figure is used.
    """
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as timing:
        full = list(cmd)
        if GNU_TIME is not None:
            full = [GNU_TIME, "-q", "-f", "%M", "-o", timing.name, *full]
        started = time.perf_counter()
        proc = subprocess.Popen(full, env=env, stdout=stdout, stdin=stdin, stderr=err)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
        maxrss = usage.ru_maxrss
        if GNU_TIME is not None:
            lines = timing.read().split()
            if lines and lines[-1].isdigit():
                maxrss = int(lines[-1])
    child = Child(list(cmd), proc.returncode, wall, usage.ru_utime, usage.ru_stime, maxrss, text)
    if check and child.rc != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {child.rc}:\n{text[-2000:]}")
    return child


def proc_cpu(pid: int) -> float:
    """User+sys CPU seconds a running process has used so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a server process: SIGTERM, then SIGKILL if it is still there after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Server:
    """A loopback server in a child process: ``lean`` (benchmarks/_lean_server.py) or ``sim``."""

    def __init__(self, kind: str, workdir: Path, *extra: str) -> None:
        self.kind = kind
        ready = workdir / f"{kind}-ready-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            ready.unlink()
        if kind == "lean":
            cmd = [PYTHON, str(HERE / "_lean_server.py"), "--ready-file", str(ready), *extra]
        elif kind == "sim":
            cmd = [*BULKRETRY, "simulate", "--accept-any", "--ready-file", str(ready), *extra]
        else:
            raise ValueError(kind)
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env()
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{kind} server did not start ({' '.join(cmd)})")
            time.sleep(0.02)
        self.url = ready.read_text().strip()
        ready.unlink()

    @property
    def name(self) -> str:
        return (
            "lean stand-in (benchmarks/_lean_server.py, asyncio Protocol on uvloop)"
            if self.kind == "lean"
            else "built-in simulator (bulkretry simulate --accept-any)"
        )

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def stats(self, reset: bool = False) -> dict[str, object]:
        path = "/_stats" + ("?reset=1" if reset else "") if self.kind == "lean" else "/_sim/stats"
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def close(self) -> None:
        stop(self.proc)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def uuid_lines(count: int, rng: random.Random) -> Iterator[str]:
    """``count`` random version-4 UUIDs, lower case (repeatable for a given ``rng``)."""
    for _ in range(count):
        h = f"{rng.getrandbits(128) & ~(0xF << 76) | (4 << 76):032x}"
        yield f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def write_ids(path: Path, distinct: int, duplicates: int = 0, seed: int = 1) -> None:
    """Write ``distinct`` UUIDs plus ``duplicates`` repeats of earlier ones (every other one
    upper-cased, which bulkretry folds to the same run), each somewhere after its original.

    Streamed: only the duplicated IDs are held, so this process stays small (its RSS would
    otherwise leak into the children's ``ru_maxrss``, see run_child)."""
    rng = random.Random(seed)
    picks = rng.sample(range(distinct), duplicates) if duplicates else []
    wanted = set(picks)
    where: dict[int, list[int]] = {}
    for index in picks:
        where.setdefault(rng.randint(index, distinct - 1), []).append(index)
    upper = {index for n, index in enumerate(sorted(picks)) if n % 2}
    kept: dict[int, str] = {}
    with open(path, "w") as fh:
        for i, run_id in enumerate(uuid_lines(distinct, random.Random(seed + 1))):
            fh.write(run_id + "\n")
            if i in wanted:
                kept[i] = run_id
            for index in where.get(i, ()):
                original = kept.pop(index)
                fh.write((original.upper() if index in upper else original) + "\n")


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "?"
    return {
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "cpu": cpu,
        "loadavg": load,
        "kernel": platform.release(),
    }


def print_machine() -> None:
    m = machine()
    print(
        f"machine: nproc={m['nproc']} python={m['python']} cpu={m['cpu']!r} "
        f"kernel={m['kernel']} loadavg(1/5/15 min)={m['loadavg']}"
    )
    print(describe_source())
    print(compile_measured())


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def workdir(keep: str | None) -> Path:
    """benchmarks/out (git-ignored) or a temporary directory."""
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix="bulkretry-bench-"))


def curl_path() -> str | None:
    """curl, if installed and able to run transfers in parallel (7.66+)."""
    curl = shutil.which("curl")
    if curl is None:
        return None
    try:
        help_text = subprocess.run(
            [curl, "--help", "all"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return curl if "--parallel-max" in help_text else None


def fmt_ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"
