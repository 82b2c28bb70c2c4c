"""``bulkretry simulate``'s options, and the `SimulatorConfig` they make."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import sys
from collections.abc import Iterator
from typing import TextIO

from ._config import (
    DEFAULT_CLIENT_HEADER,
    DEFAULT_FLOWS,
    DEFAULT_HOST,
    DEFAULT_IN_PROGRESS_STATUS,
    DEFAULT_OTHER_RUNS_PER_FLOW,
    DEFAULT_PORT,
    DEFAULT_RUN_DURATION,
    DEFAULT_RUNS_PER_FLOW,
    DEFAULT_SEED,
    DEFAULT_THROTTLE_RETRY_AFTER,
    DEFAULT_TOKEN_LIFETIME,
    SimulatorConfig,
)
from ._lifecycle import FATES, Fate
from ._quota import (
    MINUTE,
    QUOTA_SHAPES,
    LeakyBucketQuota,
    Quota,
    SlidingWindowQuota,
    TokenBucketQuota,
    WindowQuota,
)


class UsageError(ValueError):
    """The options do not make sense together."""


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


def _fate(text: str) -> Fate:
    for fate in FATES:
        if text == fate:
            return fate
    raise argparse.ArgumentTypeError(f"{text!r} is not a fate: choose from {', '.join(FATES)}")


def _pairs(text: str, form: str) -> Iterator[tuple[str, str]]:
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"{part.strip()!r} is not {form}")
        yield key.strip(), value.strip()


def _run_fates(text: str) -> dict[str, Fate]:
    # Comma-separated rather than repeated: BULKRETRY_SIMULATE_FATES can then hold them all.
    return {run_id: _fate(fate) for run_id, fate in _pairs(text, "RUN_ID=FATE")}


def _fate_shares(text: str) -> dict[Fate, float]:
    return {_fate(fate): _rate(share) for fate, share in _pairs(text, "FATE=SHARE")}


def _keys(text: str) -> tuple[str, ...]:
    return tuple(key.strip() for key in text.split(",") if key.strip())


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to `parser`."""
    add = parser.add_argument
    add("--host", default=DEFAULT_HOST, help=f"address to bind [default {DEFAULT_HOST}]")
    add("--port", type=int, default=DEFAULT_PORT, help="port; 0 picks a free one [default 0]")
    add("--allow-remote", action="store_true", help="allow binding an address not on loopback")
    add("--base-path", default="", help="service base path, e.g. /data/foundation/flowservice")
    add("--seed", type=int, default=DEFAULT_SEED, help=f"random seed [default {DEFAULT_SEED}]")
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
    add("--run-ids-file", metavar="PATH", help="failed run IDs to serve, one a line (-: stdin)")
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
    add(
        "--extra-api-keys",
        type=_keys,
        default=(),
        metavar="KEY,...",
        help="other API keys to accept, e.g. one per client",
    )
    _add_lifecycle_options(parser)
    _add_quota_options(parser)
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


def _add_lifecycle_options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--run-duration",
        type=_non_negative,
        default=DEFAULT_RUN_DURATION,
        metavar="SECONDS",
        help=f"how long a re-triggered run is in progress [default {DEFAULT_RUN_DURATION:g}]",
    )
    add(
        "--run-duration-jitter",
        type=_non_negative,
        default=0.0,
        metavar="SECONDS",
        help="random extra duration, up to this [default 0]",
    )
    add(
        "--in-progress-status",
        default=DEFAULT_IN_PROGRESS_STATUS,
        metavar="WORD",
        help="status of a re-triggered run in progress, e.g. IN_PROGRESS "
        f"[default {DEFAULT_IN_PROGRESS_STATUS}]",
    )
    add(
        "--fates",
        type=_run_fates,
        default={},
        metavar="RUN_ID=FATE,...",
        help=f"how the runs re-triggered from these failed runs end: {', '.join(FATES)}",
    )
    add(
        "--fate-shares",
        type=_fate_shares,
        default={},
        metavar="FATE=SHARE,...",
        help="shares of the other failed runs with those fates, e.g. fails-once=0.2; "
        "the rest succeed",
    )


def _add_quota_options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--quota-shape",
        choices=QUOTA_SHAPES,
        help="the quota's shape [default token-bucket with --quota-rate, else fixed-window]",
    )
    add("--quota-rate", type=float, help="token or leaky bucket: requests per second")
    add("--quota-burst", type=int, help="token bucket: burst [default 1]")
    add("--quota-window", type=float, help="fixed or sliding window: its length in seconds")
    add("--window-requests", type=int, help="fixed or sliding window: requests per window")
    add(
        "--quota-per-minute",
        type=int,
        metavar="N",
        help="N requests a minute: a fixed window of 60 s (sliding with --quota-shape)",
    )
    add(
        "--count-rejected",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="sliding window: count the requests it refuses too [default yes]",
    )
    add(
        "--retry-after",
        choices=("seconds", "http-date", "none"),
        default="seconds",
        help="how a 429 says when to come back [default seconds]",
    )
    add(
        "--rate-limit-headers",
        choices=("none", "ietf", "x"),
        default="none",
        help="tell the quota's state in RateLimit-* or X-RateLimit-* headers [default none]",
    )
    add(
        "--client-header",
        default=DEFAULT_CLIENT_HEADER,
        metavar="NAME",
        help="header naming the client in the per-client counts; else the API key "
        f"[default {DEFAULT_CLIENT_HEADER}]",
    )
    add(
        "--throttle-rate",
        type=_rate,
        default=0.0,
        help="share of requests answered 429 whatever their rate",
    )
    add(
        "--throttle-retry-after",
        type=_non_negative,
        default=DEFAULT_THROTTLE_RETRY_AFTER,
        metavar="SECONDS",
        help=f"their Retry-After [default {DEFAULT_THROTTLE_RETRY_AFTER:g}]",
    )


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
    rated = ns.quota_rate is not None
    windowed = ns.quota_window is not None or ns.window_requests is not None
    per_minute = ns.quota_per_minute is not None
    if rated and (windowed or per_minute):
        raise UsageError("choose --quota-rate or --quota-window, not both")
    if windowed and per_minute:
        raise UsageError("--quota-per-minute is a window of 60 s: leave out --quota-window")
    shape = ns.quota_shape
    if shape is None:
        shape = "token-bucket" if rated else "fixed-window" if windowed or per_minute else None
    if shape is None:
        if ns.quota_burst is not None:
            raise UsageError("--quota-burst goes with --quota-rate")
        return None
    if ns.quota_burst is not None and shape != "token-bucket":
        raise UsageError(f"a {shape} quota has no burst: leave out --quota-burst")
    if not ns.count_rejected and shape != "sliding-window":
        raise UsageError("--no-count-rejected is for a sliding window")
    if shape in ("token-bucket", "leaky-bucket"):
        if not rated:
            raise UsageError(f"a {shape} quota needs --quota-rate")
        if shape == "leaky-bucket":
            return LeakyBucketQuota(rate=ns.quota_rate)
        return TokenBucketQuota(rate=ns.quota_rate, burst=ns.quota_burst or 1)
    if rated:
        raise UsageError(f"a {shape} quota takes --quota-window and --window-requests, not a rate")
    if per_minute:
        window, requests = MINUTE, ns.quota_per_minute
    elif ns.quota_window is None or ns.window_requests is None:
        raise UsageError("--quota-window and --window-requests go together")
    else:
        window, requests = ns.quota_window, ns.window_requests
    if shape == "fixed-window":
        return WindowQuota(requests=requests, window=window)
    return SlidingWindowQuota(requests=requests, window=window, count_rejected=ns.count_rejected)


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
            extra_api_keys=tuple(ns.extra_api_keys),
            in_progress_status=ns.in_progress_status,
            run_duration=ns.run_duration,
            run_duration_jitter=ns.run_duration_jitter,
            fates=dict(ns.fates),
            fate_shares=dict(ns.fate_shares),
            quota=_quota(ns),
            retry_after=ns.retry_after,
            rate_limit_headers=ns.rate_limit_headers,
            client_header=ns.client_header,
            throttle_rate=ns.throttle_rate,
            throttle_retry_after=ns.throttle_retry_after,
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
