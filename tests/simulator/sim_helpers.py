"""Shared by the simulator's tests: a simulator on a manual clock, and one re-trigger call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from bulkretry._simulator import ManualClock, Quota, Simulator, SimulatorConfig


def quota_sim(clock: ManualClock, quota: Quota | None, **more: Any) -> Simulator:
    """A simulator on `clock` (monotonic and wall), any run re-triggered again and again."""
    return Simulator(
        SimulatorConfig(
            clock=clock, wall_clock=clock, quota=quota, allow_repeat_retrigger=True, **more
        )
    )


async def retrigger(
    session: aiohttp.ClientSession,
    sim: Simulator,
    run_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, str, Mapping[str, str]]:
    """Re-trigger ``run_id`` (the first failed run) and return status, body and headers."""
    run_id = run_id or sim.failed_run_ids()[0]
    async with session.post(
        f"{sim.base_url}/runs/{run_id}/action?op=re-trigger",
        headers=sim.headers() if headers is None else headers,
    ) as resp:
        return resp.status, await resp.text(), resp.headers
