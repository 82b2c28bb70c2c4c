"""A look-up's GET takes the governor's throttle slot: one cancelled is reported as lost."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from yarl import URL

from bulkretry import Settings
from bulkretry._engine.follow_fetch import FollowStats, Looker
from bulkretry._engine.governor import Governor
from bulkretry._pace.throttle import Throttle


class HangingClient:
    """A client whose GET never answers; ``sending`` is set once one is under way."""

    def __init__(self) -> None:
        self.sending = asyncio.Event()

    async def get(self, url: URL, token: str) -> Any:
        self.sending.set()
        await asyncio.Event().wait()


class Tokens:
    async def token(self) -> str:
        return "t"


async def test_a_look_up_cancelled_in_flight_is_told_to_the_throttle_as_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A look-up cut short by its deadline gets no answer: a hold that waits on its slot (a
    probe's, a fixed window's) must hear so, or the gate stays shut for good."""
    lost: list[float] = []
    monkeypatch.setattr(Throttle, "on_lost", lambda self, sent_at: lost.append(sent_at))
    settings = Settings(rate=100)
    governor = Governor(settings)
    client = HangingClient()
    looker = Looker(
        client,  # type: ignore[arg-type]
        Tokens(),  # type: ignore[arg-type]
        governor,
        settings,
        FollowStats(),
        random.Random(0),
    )
    slot = asyncio.get_running_loop().time()
    task = asyncio.create_task(looker.get(URL("http://127.0.0.1/runs/x"), page=False))
    await client.sending.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(lost) == 1
    assert lost[0] >= slot
