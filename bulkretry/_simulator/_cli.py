"""``bulkretry simulate``: serve the simulator until SIGINT or SIGTERM.

The first line on stdout is the Flow Service base URL, alone (then, with ``--print-failed``, the
failed run IDs, one a line); the credentials to use, which are fake, go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from ._config import (
    DEFAULT_FLOWS,
    DEFAULT_HOST,
    DEFAULT_OTHER_RUNS_PER_FLOW,
    DEFAULT_PORT,
    DEFAULT_RUNS_PER_FLOW,
    DEFAULT_SEED,
    DEFAULT_TOKEN_LIFETIME,
    SimulatorConfig,
)
from ._server import Simulator
from ._trouble import Quota, TokenBucketQuota, WindowQuota

EXIT_OK, EXIT_USAGE = 0, 2


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} cannot be negative")
    return value


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to `parser`."""
    add = parser.add_argument
    add("--host", default=DEFAULT_HOST, help=f"address to bind [default {DEFAULT_HOST}]")
    add("--port", type=int, default=DEFAULT_PORT, help="port; 0 picks a free one [default 0]")
    add("--allow-remote", action="store_true", help="allow binding an address not on loopback")
    add(
        "--base-path",
        default="",
        help="service base path, e.g. /data/foundation/flowservice",
    )
    add(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"random seed [default {DEFAULT_SEED}]",
    )
    add("--flows", type=int, default=DEFAULT_FLOWS, help=f"flows to seed [default {DEFAULT_FLOWS}]")
    add(
        "--runs-per-flow",
        type=int,
        default=DEFAULT_RUNS_PER_FLOW,
        help=f"failed runs per flow [default {DEFAULT_RUNS_PER_FLOW}]",
    )
    add(
        "--other-runs-per-flow",
        type=int,
        default=DEFAULT_OTHER_RUNS_PER_FLOW,
        help=f"runs per flow that are not failed [default {DEFAULT_OTHER_RUNS_PER_FLOW}]",
    )
    add(
        "--run-ids-file",
        metavar="PATH",
        help="failed run IDs to serve, one a line (-: stdin)",
    )
    add(
        "--accept-any",
        action="store_true",
        help="accept any UUID as a failed run, every time, storing counts only (for benchmarks)",
    )
    add("--allow-repeat-retrigger", action="store_true", help="accept re-triggering a run again")
    add(
        "--response-shape",
        choices=("docs", "spec"),
        default="docs",
        help="re-trigger answer: {id, etag} as documented, or a whole run as specified",
    )
    add(
        "--sandbox-header",
        choices=("required", "optional"),
        default="required",
        help="refuse requests without x-sandbox-name, or serve them in the sandbox",
    )
    add(
        "--token-lifetime",
        type=float,
        default=DEFAULT_TOKEN_LIFETIME,
        help=f"seconds an IMS token lives [default {DEFAULT_TOKEN_LIFETIME:g}]",
    )
    add("--quota-rate", type=float, help="token-bucket quota: requests per second")
    add("--quota-burst", type=int, default=1, help="token-bucket quota: burst [default 1]")
    add("--quota-window", type=float, help="fixed-window quota: window length in seconds")
    add("--window-requests", type=int, help="fixed-window quota: requests per window")
    add(
        "--retry-after",
        choices=("seconds", "http-date", "none"),
        default="seconds",
        help="how a 429 says when to come back [default seconds]",
    )
    add("--error-rate", type=_rate, default=0.0, help="share of 500/502/503/504 answers")
    add("--reset-rate", type=_rate, default=0.0, help="share of connections reset unanswered")
    add("--hang-rate", type=_rate, default=0.0, help="share of requests never answered")
    add(
        "--in-doubt-rate",
        type=_rate,
        default=0.0,
        help="share of re-triggers performed whose answer is lost or replaced by an error",
    )
    add("--malformed-rate", type=_rate, default=0.0, help="share of 200s with a malformed body")
    add("--trouble-on-listing", action="store_true", help="inflict faults on GET requests too")
    add("--latency-ms", type=_non_negative, default=0.0, help="added to every answer")
    add("--jitter-ms", type=_non_negative, default=0.0, help="random extra latency, up to this")
    add("--ready-file", metavar="PATH", help="write the base URL there once listening")
    add("--print-failed", action="store_true", help="print the failed run IDs after the base URL")
    add(
        "--env",
        action="store_true",
        help="print `export BULKRETRY_...=...` lines for eval instead of the base URL: the fake "
        "credentials, and BULKRETRY_LIST_FAILED_FLOW_ID naming the flows served",
    )


class UsageError(ValueError):
    """The options do not make sense together."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_run_ids(path: str) -> tuple[str, ...]:
    with contextlib.ExitStack() as stack:
        lines: TextIO = (
            sys.stdin if path == "-" else stack.enter_context(open(path, encoding="utf-8"))
        )
        return tuple(_ids(lines))


def _ids(lines: TextIO) -> Iterator[str]:
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            yield text


def _quota(ns: argparse.Namespace) -> Quota | None:
    if ns.quota_rate is not None and ns.quota_window is not None:
        raise UsageError("choose --quota-rate or --quota-window, not both")
    if ns.quota_rate is not None:
        return TokenBucketQuota(rate=ns.quota_rate, burst=ns.quota_burst)
    if ns.quota_window is not None or ns.window_requests is not None:
        if ns.quota_window is None or ns.window_requests is None:
            raise UsageError("--quota-window and --window-requests go together")
        return WindowQuota(requests=ns.window_requests, window=ns.quota_window)
    return None


def build_config(ns: argparse.Namespace) -> SimulatorConfig:
    """Build the simulator's configuration from parsed options; raise UsageError if they clash."""
    if not _is_loopback(ns.host) and not ns.allow_remote:
        raise UsageError(f"{ns.host} is not a loopback address; add --allow-remote to bind it")
    try:
        return SimulatorConfig(
            host=ns.host,
            port=ns.port,
            base_path=ns.base_path.rstrip("/"),
            seed=ns.seed,
            flows=ns.flows,
            runs_per_flow=ns.runs_per_flow,
            other_runs_per_flow=ns.other_runs_per_flow,
            run_ids=_read_run_ids(ns.run_ids_file) if ns.run_ids_file else None,
            accept_any=ns.accept_any,
            allow_repeat_retrigger=ns.allow_repeat_retrigger,
            response_shape=ns.response_shape,
            sandbox_header=ns.sandbox_header,
            token_lifetime=ns.token_lifetime,
            quota=_quota(ns),
            retry_after=ns.retry_after,
            error_rate=ns.error_rate,
            reset_rate=ns.reset_rate,
            hang_rate=ns.hang_rate,
            in_doubt_rate=ns.in_doubt_rate,
            malformed_rate=ns.malformed_rate,
            trouble_on_listing=ns.trouble_on_listing,
            latency=ns.latency_ms / 1000,
            jitter=ns.jitter_ms / 1000,
            # Nobody reads a standalone server's request log, and it would grow without bound.
            record_requests=False,
        )
    except OSError as exc:
        raise UsageError(f"cannot read run IDs: {exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


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
