"""The floor: the least a Python client does to re-trigger run IDs with aiohttp.

uvloop, a session without cookie jar or proxy lookup, headers built once, each URL already
encoded, one orjson line per answer, a fixed pool of workers: nothing bulkretry adds (no
validation, dedup, pacing, retries or error handling). ``instructions.py`` counts what this
costs per request, to show how much of bulkretry's cost is aiohttp's request path itself. A
benchmark fixture, not a client anyone should use.

Usage: ``python benchmarks/_floor_client.py BASE_URL IDS_FILE OUT_FILE [--concurrency 64]``
"""

from __future__ import annotations

import asyncio
from typing import BinaryIO

import aiohttp
import orjson
import uvloop
from _plain_client import credentials, launch
from yarl import URL


async def main(base: str, ids: list[str], out: BinaryIO, concurrency: int) -> None:
    headers = credentials()
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
    launch(main, uvloop.run)
