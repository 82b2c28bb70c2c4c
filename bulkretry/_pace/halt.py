"""Decide that Flow Service is down and the batch should stop, by a ``--halt-on`` policy.

Retrying into a service that is down only burns each record's attempts, so a batch halts when
the answers say the service is down. The policy (its rules, its syntax, its default) is
:class:`bulkretry._config.HaltPolicy`; this module applies it to the outcomes as they come.

What counts: a 5xx (other than a 503 with Retry-After, which the caller reports as throttled),
a network failure and a timeout are *failures*; a success and a 4xx other than 429 are answers
that show the service is up (a 4xx also ends a stall, because the service answered). A 429 says
nothing about being down: it is neither a failure nor an answer in the window, and neither starts
nor ends a stall.
"""

from __future__ import annotations

from collections import deque
from typing import Literal, get_args

from .._config import HaltPolicy

__all__ = ["HaltDetector", "Outcome"]

#: What one attempt came to, as far as halting is concerned.
Outcome = Literal["success", "server_error", "network", "client_error", "throttled"]

_OUTCOMES = frozenset(get_args(Outcome))
_FAILURES = frozenset({"server_error", "network"})


class HaltDetector:
    """Watch outcomes as they come and say, in one sentence, when the batch should halt."""

    __slots__ = ("_down", "_failing_since", "_failures", "_policy", "_reason", "_recent")

    def __init__(self, policy: HaltPolicy) -> None:
        self._policy = policy
        self._recent: deque[bool] = deque(maxlen=policy.window or 1)
        self._down = 0
        self._failing_since: float | None = None
        self._failures = 0
        self._reason: str | None = None

    @property
    def policy(self) -> HaltPolicy:
        """The rules this detector applies."""
        return self._policy

    @property
    def reason(self) -> str | None:
        """Why the batch should halt, once it should; None until then."""
        return self._reason

    def observe(self, kind: Outcome, now: float) -> str | None:
        """Record one attempt's outcome at loop time *now*; return the reason to halt, if any.

        Once a reason was returned, every later call returns it again.
        """
        if kind not in _OUTCOMES:
            raise ValueError(f"unknown outcome {kind!r}")
        if self._reason is not None or kind == "throttled":
            return self._reason
        failed = kind in _FAILURES
        policy = self._policy
        if policy.errors is not None:
            recent = self._recent
            if len(recent) == recent.maxlen and recent[0]:
                self._down -= 1
            recent.append(failed)
            self._down += failed
            if self._down >= policy.errors:
                self._reason = (
                    f"the service looks down: {self._down} of the last {len(recent)} answers "
                    f"were server errors, network failures or timeouts (halt-on {policy})."
                )
                return self._reason
        if not failed:
            self._failing_since = None
            self._failures = 0
            return None
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = now
        elif policy.stall is not None and now - self._failing_since >= policy.stall:
            self._reason = (
                f"the service looks down: {self._failures} attempts failed over "
                f"{now - self._failing_since:.0f} s without a single success (halt-on {policy})."
            )
        return self._reason

    def __repr__(self) -> str:
        state = f"{self._down}/{len(self._recent)} recent answers failed"
        if self._failing_since is not None:
            state += f", {self._failures} failures in a row since t={self._failing_since:.3f}"
        if self._reason is not None:
            state += ", halted"
        return f"<HaltDetector {self._policy} [{state}]>"
