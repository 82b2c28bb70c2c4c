"""The baseline: what a user writes by hand to re-trigger run IDs with aiohttp.

A semaphore, ``session.post`` and one orjson line per ID written to a file; no retries, no rate
limit, no dedup, the default asyncio event loop. Credentials come from the same
``BULKRETRY_*`` variables bulkretry reads.

Usage: ``python benchmarks/_plain_client.py BASE_URL IDS_FILE OUT_FILE [--concurrency 64]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, BinaryIO

import aiohttp
import orjson

Main = Callable[[str, list[str], BinaryIO, int], Coroutine[Any, Any, None]]


def credentials() -> dict[str, str]:
    """The five headers of a re-trigger request, from the ``BULKRETRY_*`` variables."""
    return {
        "Authorization": "Bearer " + os.environ["BULKRETRY_ACCESS_TOKEN"],
        "x-api-key": os.environ["BULKRETRY_API_KEY"],
        "x-gw-ims-org-id": os.environ["BULKRETRY_ORG_ID"],
        "x-sandbox-name": os.environ.get("BULKRETRY_SANDBOX", "prod"),
        "Content-Type": "application/json",
    }


def launch(main: Main, run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    """Parse ``BASE_URL IDS_FILE OUT_FILE [--concurrency N]`` and run ``main`` with ``run``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("ids")
    parser.add_argument("out")
    parser.add_argument("--concurrency", type=int, default=64)
    ns = parser.parse_args()
    with open(ns.ids) as fh:
        run_ids = [line.strip() for line in fh if line.strip()]
    with open(ns.out, "wb") as results:
        run(main(ns.base.rstrip("/"), run_ids, results, ns.concurrency))


async def main(base: str, ids: list[str], out: BinaryIO, concurrency: int) -> None:
    headers = credentials()
    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def retrigger(run_id: str) -> None:
            async with semaphore:
                try:
                    async with session.post(
                        f"{base}/runs/{run_id}/action?op=re-trigger", headers=headers
                    ) as response:
                        body = await response.read()
                        line = {"run_id": run_id, "status": response.status}
                        if response.status == 200:
                            answer = orjson.loads(body)
                            line["new_run_id"] = answer.get("id")
                            line["etag"] = answer.get("etag")
                except aiohttp.ClientError as exc:
                    line = {"run_id": run_id, "error": str(exc)}
                out.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))

        await asyncio.gather(*(retrigger(run_id) for run_id in ids))


if __name__ == "__main__":
    launch(main, asyncio.run)
