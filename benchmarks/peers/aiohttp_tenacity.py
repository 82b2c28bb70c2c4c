"""What a user writes by hand to re-trigger failed runs: aiohttp + aiolimiter + tenacity.

A goodput-benchmark peer (benchmarks/goodput.py), deliberately plain: a fixed client-side rate
(``AsyncLimiter(rate, 1)``), ``concurrency`` workers, and tenacity retrying 429s and 5xx with
``wait_exponential_jitter`` (its defaults: 1 s, doubling, up to 60 s, plus up to 1 s of jitter).
It honours nothing else: no Retry-After, no shared slow-down. One orjson line per input.

    python aiohttp_tenacity.py BASE_URL IDS_FILE OUT_FILE --rate 200 --concurrency 16

Credentials come from BULKRETRY_ACCESS_TOKEN, BULKRETRY_API_KEY, BULKRETRY_ORG_ID and
BULKRETRY_SANDBOX, as for bulkretry.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import BinaryIO

import aiohttp
import orjson
from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)


class Retryable(Exception):
    """A 429 or a 5xx: worth another try."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


async def retrigger_all(args: argparse.Namespace, run_ids: list[str], out: BinaryIO) -> int:
    """Re-trigger every run; write one line each to `out`; return how many did not succeed."""
    headers = {
        "Authorization": f"Bearer {os.environ['BULKRETRY_ACCESS_TOKEN']}",
        "x-api-key": os.environ["BULKRETRY_API_KEY"],
        "x-gw-ims-org-id": os.environ["BULKRETRY_ORG_ID"],
        "x-sandbox-name": os.environ.get("BULKRETRY_SANDBOX", "prod"),
        "Content-Type": "application/json",
    }
    limiter = AsyncLimiter(args.rate, 1)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for run_id in run_ids:
        queue.put_nowait(run_id)
    base = args.base_url.rstrip("/")
    failures = 0

    async def retrigger(session: aiohttp.ClientSession, run_id: str) -> tuple[int, bytes, int]:
        attempts = 0
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((Retryable, aiohttp.ClientError, asyncio.TimeoutError)),
            wait=wait_exponential_jitter(),
            stop=stop_after_attempt(args.max_attempts),
        ):
            with attempt:
                attempts += 1
                async with (
                    limiter,
                    session.post(
                        f"{base}/runs/{run_id}/action", params={"op": "re-trigger"}
                    ) as resp,
                ):
                    body = await resp.read()
                    if resp.status == 429 or resp.status >= 500:
                        raise Retryable(resp.status, body)
                    return resp.status, body, attempts
        raise AssertionError("unreachable")

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while True:
            try:
                run_id = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            line: dict[str, object] = {"run_id": run_id}
            try:
                status, body, attempts = await retrigger(session, run_id)
                line.update(status=status, attempts=attempts)
                try:
                    line["response"] = orjson.loads(body)
                except orjson.JSONDecodeError:
                    line["response"] = body.decode(errors="replace")
                if status != 200:
                    failures += 1
            except RetryError as exc:
                failures += 1
                line.update(status=None, error=repr(exc.last_attempt.exception()))
            out.write(orjson.dumps(line) + b"\n")

    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(
        headers=headers, timeout=timeout, connector=connector
    ) as session:
        await asyncio.gather(*(worker(session) for _ in range(args.concurrency)))
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("ids")
    parser.add_argument("out")
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-attempts", type=int, default=10)
    args = parser.parse_args()
    with open(args.ids) as fh:
        run_ids = [line.strip() for line in fh if line.strip()]
    with open(args.out, "wb") as out:
        failures = asyncio.run(retrigger_all(args, run_ids, out))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
