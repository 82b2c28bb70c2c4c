"""The floor: the least a Python client does to re-trigger run IDs with aiohttp.

uvloop, a session without cookie jar or proxy lookup, headers built once, each URL already
encoded, one orjson line per answer, a fixed pool of workers: nothing bulkretry adds (no
validation, dedup, pacing, retries or error handling). ``instructions.py`` counts what this
costs per request, to show how much of bulkretry's cost is aiohttp's request path itself. A
benchmark fixture, not a client anyone should use.

Usage: ``python benchmarks/_floor_client.py BASE_URL IDS_FILE OUT_FILE [--concurrency 64]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import BinaryIO

import aiohttp
import orjson
import uvloop
from yarl import URL


async def main(base: str, ids: list[str], out: BinaryIO, concurrency: int) -> None:
    headers = {
        "Authorization": "Bearer " + os.environ["BULKRETRY_ACCESS_TOKEN"],
        "x-api-key": os.environ["BULKRETRY_API_KEY"],
        "x-gw-ims-org-id": os.environ["BULKRETRY_ORG_ID"],
        "x-sandbox-name": os.environ.get("BULKRETRY_SANDBOX", "prod"),
        "Content-Type": "application/json",
    }
    pending = iter(ids)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:

        async def worker() -> None:
            for run_id in pending:
                url = URL(f"{base}/runs/{run_id}/action?op=re-trigger", encoded=True)
                async with session.post(url, headers=headers) as response:
                    answer = orjson.loads(await response.read())
                line = {
                    "run_id": run_id,
                    "new_run_id": answer.get("id"),
                    "etag": answer.get("etag"),
                }
                out.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))

        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("ids")
    parser.add_argument("out")
    parser.add_argument("--concurrency", type=int, default=64)
    ns = parser.parse_args()
    with open(ns.ids) as fh:
        run_ids = [line.strip() for line in fh if line.strip()]
    with open(ns.out, "wb") as results:
        uvloop.run(main(ns.base.rstrip("/"), run_ids, results, ns.concurrency))
