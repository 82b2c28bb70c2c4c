"""What the simulator remembers: every request it received and every re-trigger it performed."""

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
    are filled in while the request is handled.
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
