"""Read the quota's state from an answer's ``RateLimit-*`` or ``X-RateLimit-*`` headers.

Gateways say it in several dialects; this reads the common ones and ignores what it cannot read
(a header is advice: a wrong one must not stop a batch):

- ``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` (IETF draft, up to -06;
  Reset in seconds from now); the Limit may carry policies: ``100, 100;w=60``;
- ``RateLimit: limit=100, remaining=5, reset=30`` (draft -07) or ``"default";r=5;t=30``
  (later drafts: r remaining, t seconds to reset);
- ``RateLimit-Policy: 100;w=60`` or ``"default";q=100;w=60``: the quota, requests per window;
- ``X-RateLimit-Limit``, ``X-RateLimit-Remaining``, ``X-RateLimit-Reset`` (GitHub and many
  others; Reset in epoch seconds, or seconds from now when it is small).

Only numbers come out of here: server text never reaches a log.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping

from .._model import QuotaHeaders

__all__ = ["read_quota_headers"]

# A Reset above this is an epoch time (seconds; above _EPOCH_MS, milliseconds), not a delay.
_EPOCH = 1e9
_EPOCH_MS = 1e12
# Longer than a day is not a quota's reset worth waiting for: taken as unreadable.
_MAX_RESET = 86400.0
_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)\s*")
_INTEGER = re.compile(r"\s*(\d+)\s*")
_PARAM = re.compile(r";\s*([a-z]+)\s*=\s*(\d+(?:\.\d+)?)")


def read_quota_headers(
    headers: Mapping[str, str], wall: Callable[[], float] = time.time
) -> QuotaHeaders | None:
    """Return what the quota headers of an answer say, or None when it carries none.

    *wall* (epoch seconds) turns an epoch Reset into seconds from now.
    """
    limit = remaining = reset = window = None
    for prefix in ("RateLimit-", "X-RateLimit-"):
        if (value := headers.get(prefix + "Remaining")) is not None:
            remaining = _count(value)
            first, *policies = headers.get(prefix + "Limit", "").split(",")
            if (limit := _count(first)) is not None:
                window = _policy_of(policies, limit)[1]
            reset = _delay(headers.get(prefix + "Reset"), wall)
            break
    else:
        if (value := headers.get("RateLimit")) is not None:
            params = _params(value)
            remaining = _count(params.get("remaining", params.get("r")))
            limit = _count(params.get("limit"))
            reset = _delay(params.get("reset", params.get("t")), wall)
    if (policy := headers.get("RateLimit-Policy")) is not None:
        q, w = _policy_of(policy.split(","), limit)
        if q is not None and (limit is None or q == limit):
            limit, window = q, window if window is not None else w
    if remaining is None and limit is None and window is None:
        return None
    return QuotaHeaders(limit=limit, remaining=remaining, reset=reset, window=window)


def _count(text: str | None) -> int | None:
    """A whole number of requests (``0.5`` left is no count at all, not zero)."""
    if text is None or (match := _INTEGER.fullmatch(text)) is None:
        return None
    number = int(match.group(1))
    return number if number < 2**53 else None


def _delay(text: str | None, wall: Callable[[], float]) -> float | None:
    """Seconds from now until the quota resets: a delay, or an epoch time (s or ms)."""
    if text is None or (match := _NUMBER.fullmatch(text)) is None:
        return None
    value = float(match.group(1))
    if value >= _EPOCH_MS:
        value = value / 1000 - wall()
    elif value >= _EPOCH:
        value -= wall()
    return max(0.0, value) if math.isfinite(value) and value <= _MAX_RESET else None


def _policy_of(items: list[str], limit: int | None) -> tuple[int | None, float | None]:
    """The quota and window of the policy among *items* whose quota is *limit* (with no limit
    known, the first; none matching: no window)."""
    parsed = [_policy(item) for item in items if item.strip()]
    if limit is None:
        return parsed[0] if parsed else (None, None)
    return next(((q, w) for q, w in parsed if q == limit), (limit, None))


def _policy(text: str) -> tuple[int | None, float | None]:
    """A policy item's quota and window: ``100;w=60`` or ``"name";q=100;w=60``."""
    head = text.partition(";")[0].strip()
    params = _params(text)
    quota = _count(head) if head and not head.startswith('"') else None
    if quota is None:
        quota = _count(params.get("q"))
    w = float(params.get("w", "0"))
    return quota, w if 0 < w <= _MAX_RESET else None


def _params(text: str) -> dict[str, str]:
    """``a=1, b=2`` or ``;a=1;b=2`` as a dict (the first value of each name wins)."""
    found: dict[str, str] = {}
    for name, value in _PARAM.findall(";" + text.replace(",", ";")):
        found.setdefault(name, value)
    return found
