"""Tests of bulkretry._engine.startup: the pre-flight under the batch's throttle.

The client is a small fake whose answer takes a set time on the virtual clock.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from conftest import virtual_time
from test_attempt import Batch, settings

from bulkretry._engine.attempt import Attempt
from bulkretry._engine.governor import Governor
from bulkretry._engine.startup import check_first
from bulkretry._http.auth import StaticToken
from bulkretry._http.client import Answer
from bulkretry._stats import Stats


class SlowClient:
    """A fake client whose every GET is answered, an empty listing, *latency* seconds later."""

    base_url = "https://platform.example.test/data/foundation/flowservice"

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.gets = 0

    async def get(self, url: object, token: str) -> Answer:
        self.gets += 1
        await asyncio.sleep(self.latency)
        return Answer(status=200, body={"items": []})


@virtual_time
async def test_the_first_re_trigger_is_spaced_from_the_pre_flights_answer() -> None:
    """The pre-flight opened the connection on its way, so when it reached the server is known
    only to be before its answer: the next slot waits one interval from that answer. (From its
    slot, a quota with no burst refused the first re-trigger or the second.)"""
    rate, latency = 10.0, 0.05
    conf = settings(rate=rate, burst=1)
    governor = Governor(conf)
    client = SlowClient(latency)
    batch = Batch()
    attempt = Attempt(
        batch,
        settings=conf,
        stats=Stats(),
        client=client,  # type: ignore[arg-type]
        tokens=StaticToken("tok"),
        governor=governor,
        ledger=None,
        rng=random.Random(0),
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    await check_first(batch, attempt, governor, random.Random(0), Stats())
    assert client.gets == 1
    assert not batch.stopping
    answered = loop.time()
    assert answered == pytest.approx(start + latency)
    await governor.throttle.acquire()
    assert loop.time() == pytest.approx(answered + 1 / rate)
