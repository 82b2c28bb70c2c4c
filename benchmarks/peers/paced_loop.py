"""A plain paced loop: send at a fixed rate, never two requests closer than 1/rate, no learning.

A quota-shapes benchmark peer (benchmarks/quota_shapes.py): the open-loop client a careful user
writes. One sender sleeps until each send's time (``asyncio.sleep``, so timer overshoot makes it
late, never early), keeps at most ``concurrency`` requests in flight, and puts a throttled or
failed run back in line after its Retry-After (1 s without one). It never changes its rate. One
orjson line per input.

    python paced_loop.py BASE_URL IDS_FILE OUT_FILE --rate 200 --concurrency 16

Credentials come from BULKRETRY_ACCESS_TOKEN, BULKRETRY_API_KEY, BULKRETRY_ORG_ID and
BULKRETRY_SANDBOX, as for bulkretry.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import os
from collections import deque

import aiohttp
import orjson


async def retrigger_all(args: argparse.Namespace, run_ids: list[str]) -> list[bytes]:
    """Re-trigger every run; return one line each."""
    headers = {
        "Authorization": f"Bearer {os.environ['BULKRETRY_ACCESS_TOKEN']}",
        "x-api-key": os.environ["BULKRETRY_API_KEY"],
        "x-gw-ims-org-id": os.environ["BULKRETRY_ORG_ID"],
        "x-sandbox-name": os.environ.get("BULKRETRY_SANDBOX", "prod"),
        "Content-Type": "application/json",
    }
    loop = asyncio.get_running_loop()
    base = args.base_url.rstrip("/")
    fresh = deque(run_ids)
    later: list[tuple[float, str]] = []
    attempts: dict[str, int] = {}
    lines: list[bytes] = []
    slots = asyncio.Semaphore(args.concurrency)
    changed = asyncio.Event()
    interval = 1.0 / args.rate

    async def send(session: aiohttp.ClientSession, run_id: str) -> None:
        attempts[run_id] = attempts.get(run_id, 0) + 1
        try:
            async with session.post(
                f"{base}/runs/{run_id}/action", params={"op": "re-trigger"}
            ) as resp:
                await resp.read()
                status, wait = resp.status, resp.headers.get("Retry-After", "1")
        except (TimeoutError, aiohttp.ClientError):
            status, _body, wait = 0, b"", "1"
        if (status == 429 or status >= 500 or status == 0) and attempts[run_id] < args.max_attempts:
            try:
                delay = float(wait)
            except ValueError:
                delay = 1.0
            heapq.heappush(later, (loop.time() + delay, run_id))
        else:
            line = {"run_id": run_id, "status": status, "attempts": attempts[run_id]}
            lines.append(orjson.dumps(line))
        slots.release()
        changed.set()

    timeout = aiohttp.ClientTimeout(total=args.timeout)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(
        headers=headers, timeout=timeout, connector=connector
    ) as session:
        next_at = loop.time()
        while len(lines) < len(run_ids):
            now = loop.time()
            if later and later[0][0] <= now:
                run_id = heapq.heappop(later)[1]
            elif fresh:
                run_id = fresh.popleft()
            else:
                changed.clear()
                wait = later[0][0] - now if later else None
                try:
                    await asyncio.wait_for(changed.wait(), wait)
                except TimeoutError:
                    pass
                continue
            await slots.acquire()
            now = loop.time()
            if now < next_at:
                await asyncio.sleep(next_at - now)
            next_at = max(loop.time(), next_at) + interval
            task = asyncio.create_task(send(session, run_id))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("ids")
    parser.add_argument("out")
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-attempts", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    with open(args.ids) as fh:
        run_ids = [line.strip() for line in fh if line.strip()]
    lines = asyncio.run(retrigger_all(args, run_ids))
    with open(args.out, "wb") as out:
        out.writelines(line + b"\n" for line in lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
