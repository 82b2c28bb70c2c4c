"""``bulkretry simulate``: serve the simulator until SIGINT or SIGTERM.

The first line on stdout is the Flow Service base URL, alone (then, with ``--print-failed``, the
failed run IDs, one a line); the credentials to use, which are fake, go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from ._config import SimulatorConfig
from ._options import UsageError, build_config, configure_parser
from ._server import Simulator

__all__ = [
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "build_config",
    "configure_parser",
    "run_from_args",
]

EXIT_OK, EXIT_USAGE = 0, 2


def _announce(sim: Simulator, ns: argparse.Namespace) -> None:
    failed = sim.failed_run_ids()
    if ns.ready_file:
        ready = Path(ns.ready_file)
        partial = ready.with_name(ready.name + ".partial")
        partial.write_text(sim.base_url + "\n", encoding="utf-8")
        # Readers polling for the file never see it half-written.
        os.replace(partial, ready)
    cfg = sim.config
    if ns.env:
        # eval-able: `bulkretry simulate --env > sim.env & sleep 1; . ./sim.env`
        exports = {
            "BULKRETRY_BASE_URL": sim.base_url,
            "BULKRETRY_ACCESS_TOKEN": cfg.access_token,
            "BULKRETRY_API_KEY": cfg.api_key,
            "BULKRETRY_ORG_ID": cfg.org_id,
            "BULKRETRY_SANDBOX": cfg.sandbox,
            "BULKRETRY_LIST_FAILED_FLOW_ID": ",".join(sim.flow_ids()),
        }
        sys.stdout.write("".join(f"export {k}={shlex.quote(v)}\n" for k, v in exports.items()))
        sys.stdout.write("".join(f"# flow {flow}\n" for flow in sim.flow_ids()))
        sys.stdout.flush()
    else:
        print(sim.base_url, flush=True)
    if ns.print_failed and not ns.env:
        sys.stdout.write("".join(f"{run_id}\n" for run_id in failed))
        sys.stdout.flush()
    mode = "any UUID is a failed run" if cfg.accept_any else f"{len(failed)} failed runs"
    print(
        f"bulkretry simulator: Flow Service at {sim.base_url} ({mode}); IMS at {sim.ims_url}\n"
        "Fake credentials, good only here:\n"
        f"  BULKRETRY_BASE_URL={sim.base_url}\n"
        f"  BULKRETRY_ACCESS_TOKEN={cfg.access_token}\n"
        f"  BULKRETRY_API_KEY={cfg.api_key}\n"
        f"  BULKRETRY_ORG_ID={cfg.org_id}\n"
        f"  BULKRETRY_SANDBOX={cfg.sandbox}\n"
        f"  or OAuth: BULKRETRY_CLIENT_ID={cfg.client_id} "
        f"BULKRETRY_CLIENT_SECRET={cfg.client_secret} BULKRETRY_IMS_URL={sim.ims_url}\n"
        f"Stats: GET {sim.origin}/_sim/stats. Stop with Ctrl-C.",
        file=sys.stderr,
        flush=True,
    )


async def serve(config: SimulatorConfig, ns: argparse.Namespace) -> None:
    """Serve `config` until SIGINT or SIGTERM, then print what was seen on stderr."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with Simulator(config) as sim:
        _announce(sim, ns)
        # The seeded runs stay to the end: a full collection that walked them held the loop
        # for 20 ms some 7 s into a batch at 200/s, and the requests queued meanwhile met the
        # quota at once (a sliding window refused three in a row): a stall, not a quota's shape.
        gc.collect()  # (what is garbage already would be kept for good)
        gc.freeze()
        await stop.wait()
    print(f"bulkretry simulator stopped: {sim.snapshot()}", file=sys.stderr, flush=True)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_from_args(ns: argparse.Namespace) -> int:
    """Serve the simulator as `ns` asks until SIGINT or SIGTERM; return the exit code."""
    try:
        config = build_config(ns)
    except UsageError as exc:
        print(f"bulkretry simulate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            runner.run(serve(config, ns))
        except OSError as exc:
            print(f"bulkretry simulate: error: cannot listen: {exc}", file=sys.stderr)
            return EXIT_USAGE
    return EXIT_OK
