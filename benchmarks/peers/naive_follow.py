"""What a user writes by hand to follow new runs to their end: aiohttp + aiolimiter polling.

A follow-benchmark peer (benchmarks/follow.py), deliberately plain: it reads results lines of
``bulkretry run`` and, for every line with a ``new_run_id``, sends ``GET /runs/{id}`` every
``--poll`` seconds until Flow Service says the run ended, at a fixed client-side rate
(``AsyncLimiter(rate, 1)``) with at most ``concurrency`` requests in flight. No listings, no
re-trigger rounds (compare it with ``bulkretry watch``). A failed request (an error, a non-200)
is tried again at the next poll. One orjson line per input line, as ``watch`` writes it:
``final_status`` (``success``, ``failed``, ``partial``, ``unknown``; ``null`` for a line with no
new run), ``final_status_raw``, ``chain`` and ``rounds``.

    python naive_follow.py BASE_URL RESULTS_FILE OUT_FILE --rate 500 --concurrency 32 --poll 2

Credentials come from BULKRETRY_ACCESS_TOKEN, BULKRETRY_API_KEY, BULKRETRY_ORG_ID and
BULKRETRY_SANDBOX, as for bulkretry. Exit 0 when every new run ended ``success``, else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import BinaryIO

import aiohttp
import orjson
from aiolimiter import AsyncLimiter


def final_status(raw: str) -> str | None:
    """``success``/``failed``/``partial`` for a run that ended, None while it is going."""
    word = raw.lower()
    if word in ("success", "completed"):
        return "success"
    if word == "failed":
        return "failed"
    if word.startswith("partial"):
        return "partial"
    return None


async def follow_all(
    args: argparse.Namespace, lines: list[dict[str, object]], out: BinaryIO
) -> int:
    """Follow every line's new run to its end; write each line as it ends; return the failures."""
    headers = {
        "Authorization": f"Bearer {os.environ['BULKRETRY_ACCESS_TOKEN']}",
        "x-api-key": os.environ["BULKRETRY_API_KEY"],
        "x-gw-ims-org-id": os.environ["BULKRETRY_ORG_ID"],
        "x-sandbox-name": os.environ.get("BULKRETRY_SANDBOX", "prod"),
    }
    limiter = AsyncLimiter(args.rate, 1)
    slots = asyncio.Semaphore(args.concurrency)
    base = args.base_url.rstrip("/")
    deadline = time.monotonic() + args.follow_timeout
    not_success = 0

    def write(line: dict[str, object]) -> None:
        out.write(orjson.dumps(line) + b"\n")

    async def look(session: aiohttp.ClientSession, run_id: str) -> str | None:
        """The run's status, or None when the request failed."""
        try:
            async with limiter, slots, session.get(f"{base}/runs/{run_id}") as resp:
                body = await resp.read()
                if resp.status != 200:
                    return None
                run = orjson.loads(body)["items"][0]
                return str(run["metrics"]["statusSummary"]["status"])
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, KeyError, IndexError):
            return None

    async def follow(session: aiohttp.ClientSession, line: dict[str, object]) -> None:
        nonlocal not_success
        run_id = str(line["new_run_id"])
        raw = None
        status = None
        while status is None and time.monotonic() < deadline:
            raw = await look(session, run_id) or raw
            status = final_status(raw) if raw else None
            if status is None:
                await asyncio.sleep(args.poll)
        line.update(
            final_status=status or "unknown",
            final_status_raw=raw,
            chain=[run_id],
            rounds=1,
        )
        if status != "success":
            not_success += 1
        write(line)

    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(
        headers=headers, timeout=timeout, connector=connector
    ) as session:
        followed = []
        for line in lines:
            if line.get("new_run_id"):
                followed.append(follow(session, line))
            else:
                line.update(final_status=None, chain=[], rounds=0)
                write(line)
        await asyncio.gather(*followed)
    return not_success


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("results")
    parser.add_argument("out")
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--poll", type=float, default=30.0, help="seconds between look-ups")
    parser.add_argument("--follow-timeout", type=float, default=3600.0)
    args = parser.parse_args()
    with open(args.results, "rb") as fh:
        lines = [orjson.loads(raw) for raw in fh if raw.strip()]
    with open(args.out, "wb") as out:
        failures = asyncio.run(follow_all(args, lines, out))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
