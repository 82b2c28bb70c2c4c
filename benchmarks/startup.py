"""Start-up: time from launching ``bulkretry run`` (one ID) until its request reaches the server,
compared with the wall time of ``python -c 'import aiohttp'``.

A tiny loopback server in a thread of this process records ``time.monotonic()`` when the first
bytes of the first request arrive; the launch time is taken just before ``subprocess.Popen``.
Both contenders run alternately ``--runs`` times (default 10); medians are reported, with the
ratio bulkretry(launch -> first request) / python(import aiohttp). Target: <= 1.5.
``python -c pass`` is measured as well, to show the interpreter's own share.

Usage: ``.venv/bin/python benchmarks/startup.py [--quick] [--runs N] [--importtime]``
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import BULKRETRY, PYTHON, child_env, median, print_machine, run_child

TARGET = 1.5
OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 93\r\n\r\n"
    b'{"id":"3fb0418e-1804-45d6-8d56-dd51f05c0baf","etag":"\\"1100c53e-0000-0200-0000-6271389800\\""}'
)
assert len(OK.split(b"\r\n\r\n", 1)[1]) == 93


class FirstRequestServer:
    """Answer every request 200; remember when the first bytes of a request arrived."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.first: float | None = None
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.first = None

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                now = time.monotonic()
                if not data:
                    return
                with self._lock:
                    if self.first is None:
                        self.first = now
                buf += data
                while b"\r\n\r\n" in buf:
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    conn.sendall(OK)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs each")
    parser.add_argument("--runs", type=int, help="runs of each contender [10]")
    parser.add_argument("--importtime", action="store_true", help="also show -X importtime top")
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 10)
    print_machine()
    server = FirstRequestServer()
    with tempfile.TemporaryDirectory(prefix="bulkretry-startup-") as tmp:
        ids = Path(tmp) / "one.txt"
        ids.write_text("4fb0418e-1804-45d6-8d56-dd51f05c0baf\n")
        out = Path(tmp) / "out.jsonl"
        bulk_cmd = [*BULKRETRY, "run", str(ids), "--base-url", server.url, "-q"]
        bulk_cmd += ["-o", str(out), "--overwrite"]
        imp_cmd = [PYTHON, "-c", "import aiohttp"]
        pass_cmd = [PYTHON, "-c", "pass"]
        env = child_env()
        print(f"bulkretry: {' '.join(bulk_cmd)}")
        print(f"baseline:  {' '.join(imp_cmd)}")
        first: list[float] = []
        bulk_wall: list[float] = []
        imp_wall: list[float] = []
        pass_wall: list[float] = []
        for r in range(runs):
            server.reset()
            launched = time.monotonic()
            child = run_child(bulk_cmd, env=env)
            if server.first is None:
                raise SystemExit("bulkretry sent no request")
            first.append(server.first - launched)
            bulk_wall.append(child.wall)
            imp_wall.append(run_child(imp_cmd, env=env).wall)
            pass_wall.append(run_child(pass_cmd, env=env).wall)
            print(
                f"run {r + 1:2d}: bulkretry first request {first[-1] * 1000:6.0f} ms "
                f"(exit {bulk_wall[-1] * 1000:6.0f} ms); import aiohttp {imp_wall[-1] * 1000:6.0f}"
                f" ms; python -c pass {pass_wall[-1] * 1000:5.0f} ms",
                flush=True,
            )
    f, b, i, p = median(first), median(bulk_wall), median(imp_wall), median(pass_wall)
    ratio = f / i
    print()
    print(f"medians of {runs} runs:")
    print(f"  bulkretry run, launch -> first request: {f * 1000:6.0f} ms")
    print(f"  bulkretry run, launch -> exit:          {b * 1000:6.0f} ms")
    print(f"  python -c 'import aiohttp':             {i * 1000:6.0f} ms")
    print(f"  python -c pass:                         {p * 1000:6.0f} ms")
    print(
        f"ratio first-request / import-aiohttp: {ratio:.2f}x; target <= {TARGET}x: "
        f"{'MET' if ratio <= TARGET else 'NOT MET'}"
    )
    print(f"  (above the bare interpreter: {(f - p) * 1000:.0f} ms vs {(i - p) * 1000:.0f} ms)")
    if args.importtime:
        show_importtime()
    return 0


def show_importtime() -> None:
    """The 15 slowest imports (cumulative) of the CLI's run path, from -X importtime.

    ``bulkretry._simulator._cli`` is included: ``build_parser`` imports it for every command.
    """
    code = "import bulkretry._cli.main, bulkretry._cli.run, bulkretry._simulator._cli"
    proc = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=child_env(),
    )
    rows = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, self_us, cum_us, name = (x.strip() for x in line.replace(":", "|", 1).split("|"))
            rows.append((int(cum_us), int(self_us), name))
    print(
        "\nslowest imports of bulkretry._cli.main + _run + _simulator._cli (cumulative / self, ms):"
    )
    for cum, own, name in sorted(rows, reverse=True)[:15]:
        print(f"  {cum / 1000:7.1f} {own / 1000:7.1f}  {name}")


if __name__ == "__main__":
    sys.exit(main())
