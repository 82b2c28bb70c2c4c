"""What the simulator remembers: requests received, re-triggers done, and each client's share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from multidict import MultiMapping

Outcome = str
"""How a request ended: ``"answered"``, ``"reset"`` (no answer) or ``"hang"`` (never answered)."""


@dataclass(slots=True, kw_only=True)
class RecordedRequest:
    """One request as received, and how the simulator dealt with it.

    `index` counts requests to the API and the token endpoint from 1. The fields after `run_id`
    are filled in while the request is handled; `client` is the key its quota share is counted
    under, once it is past the gateway's header checks.
    """

    index: int
    method: str
    path: str
    query: MultiMapping[str]
    headers: Mapping[str, str]
    time: float
    wall_time: float
    request_id: str
    run_id: str | None = None
    status: int | None = None
    outcome: Outcome = "pending"
    fault: str | None = None
    performed: bool = False
    client: str | None = None

    @property
    def summary(self) -> str:
        """Summarize the request in one line, for assertion messages."""
        return f"#{self.index} {self.method} {self.path} -> {self.status or self.outcome}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Retrigger:
    """One re-trigger performed: which run, the new run it started, and when."""

    run_id: str
    new_run_id: str
    time: float
    request_index: int
    answer_lost: bool


@dataclass(slots=True)
class ClientCounts:
    """What one client got from the shared quota.

    `admitted` and `rejected` count the quota's decisions (every request past the gateway's
    header checks, when there is no quota); `throttled` counts the rate-independent 429s;
    `retriggers` the re-triggers performed for this client.
    """

    admitted: int = 0
    rejected: int = 0
    throttled: int = 0
    retriggers: int = 0
