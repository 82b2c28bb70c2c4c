"""Decide that Flow Service is down and the batch should stop: ``--halt-on``.

Retrying into a service that is down only burns each record's attempts, so a batch halts when
the answers say the service is down. When, is a ``--halt-on`` spec, in the spirit of GNU
parallel's ``--halt``: an optional *when* word, then one or more *rules* joined by commas::

    SPEC     = "never" | [WHEN ","] RULE *("," RULE)
    WHEN     = "soon" | "now"
    RULE     = "5xx=" SHARE ["/" WINDOW] | "stall=" DURATION
    SHARE    = NUMBER "%" | INTEGER
    WINDOW   = INTEGER
    DURATION = NUMBER ["s" | "m" | "h"]

``5xx=P%/N``
    Halt when at least P percent of the last N answers (that is, at least ``ceil(P * N / 100)``
    of them) were failures: a 5xx, a network failure or a timeout. ``0 < P <= 100``, ``N >= 1``.
    Without ``/N`` the window is 100 answers.
``5xx=K/N``
    Halt when at least K of the last N answers were failures; ``1 <= K <= N``. ``5xx=K`` alone
    means K failures in a row.
``stall=D``
    Halt when failures have kept coming for D seconds (or minutes, or hours) with no success in
    between.
``soon`` (the default when) / ``now``
    What halting means: *soon* starts no new attempt and lets those in flight finish; *now*
    also abandons those in flight, whose outcome then stays unknown.
``never``
    Never halt, on its own.

A batch halts when any rule holds. Case and spaces around commas do not matter. The default is
``5xx=90%/100,stall=600``. Examples: ``now,5xx=50%/200``, ``5xx=20``, ``stall=10m``.

What counts: a 5xx (other than a 503 with Retry-After, which the caller reports as throttled),
a network failure and a timeout are *failures*; a success and a 4xx other than 429 are answers
that show the service is up (a 4xx also ends a stall, because the service answered). A 429 says
nothing about being down: it is neither a failure nor an answer in the window, and neither starts
nor ends a stall.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from typing import Literal, NoReturn, get_args

from .._exceptions import ConfigurationError

__all__ = [
    "DEFAULT_HALT_ON",
    "DEFAULT_HALT_WINDOW",
    "HaltDetector",
    "HaltPolicy",
    "Outcome",
    "parse_halt_on",
]

DEFAULT_HALT_ON = "5xx=90%/100,stall=600"
#: Answers a ``5xx=P%`` rule looks at when it names no window.
DEFAULT_HALT_WINDOW = 100

#: What one attempt came to, as far as halting is concerned.
Outcome = Literal["success", "server_error", "network", "client_error", "throttled"]

_OUTCOMES = frozenset(get_args(Outcome))
_FAILURES = frozenset({"server_error", "network"})
_ANSWERS = frozenset({"success", "client_error"})
_SHARE = re.compile(r"(?:(?P<percent>\d+(?:\.\d*)?|\.\d+)%|(?P<count>\d+))(?:/(?P<window>\d+))?")
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<unit>[smh]?)")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_EXAMPLE = "for example '5xx=90%/100,stall=600', 'now,5xx=20' or 'never'"


@dataclass(frozen=True, slots=True, kw_only=True)
class HaltPolicy:
    """When to halt a batch; ``str()`` gives the spec back in canonical form.

    ``errors`` of the last ``window`` answers being failures halts (``percent`` is the share as
    written, if it was written as one); so do failures lasting ``stall`` seconds.
    """

    when: Literal["soon", "now"] = "soon"
    errors: int | None = None
    window: int | None = None
    percent: float | None = None
    stall: float | None = None

    def __post_init__(self) -> None:
        if (self.errors is None) != (self.window is None):
            raise ValueError("errors and window go together")
        if self.errors is not None and self.window is not None and self.errors > self.window:
            raise ValueError("errors must not exceed window")
        if self.errors is not None and self.errors < 1:
            raise ValueError("errors must be at least 1")
        if self.stall is not None and not (self.stall > 0 and math.isfinite(self.stall)):
            raise ValueError("stall must be a positive number of seconds")
        if self.when not in ("soon", "now"):
            raise ValueError("when must be 'soon' or 'now'")

    @property
    def never(self) -> bool:
        """True if no rule can ever halt the batch."""
        return self.errors is None and self.stall is None

    def __str__(self) -> str:
        if self.never:
            return "never"
        rules: list[str] = [] if self.when == "soon" else [self.when]
        if self.percent is not None:
            rules.append(f"5xx={self.percent:g}%/{self.window}")
        elif self.errors is not None:
            rules.append(f"5xx={self.errors}/{self.window}")
        if self.stall is not None:
            rules.append(f"stall={self.stall:g}")
        return ",".join(rules)


def parse_halt_on(text: str) -> HaltPolicy:
    """Read a ``--halt-on`` spec (syntax in the module docstring); raise ConfigurationError."""
    if not text.strip():
        _bad(text, "it is empty")
    parts = [part.strip() for part in text.strip().lower().split(",")]
    if parts == ["never"]:
        return HaltPolicy()
    when: Literal["soon", "now"] = "soon"
    if parts[0] in ("soon", "now"):
        when = "now" if parts.pop(0) == "now" else "soon"
    if not parts:
        _bad(text, f"'{when}' must be followed by at least one rule")
    errors = window = None
    percent = stall = None
    seen: set[str] = set()
    for part in parts:
        key, equals, value = part.partition("=")
        key = key.strip()
        value = value.strip()
        if not part:
            _bad(text, "a rule is empty")
        if part in ("never", "soon", "now"):
            _bad(text, f"'{part}' can only stand alone or come first")
        if not equals or key not in ("5xx", "stall"):
            _bad(text, f"'{part}' is not a rule")
        if key in seen:
            _bad(text, f"'{key}' is given twice")
        seen.add(key)
        if key == "5xx":
            errors, window, percent = _parse_share(text, value)
        else:
            stall = _parse_duration(text, value)
    return HaltPolicy(when=when, errors=errors, window=window, percent=percent, stall=stall)


def _parse_share(text: str, value: str) -> tuple[int, int, float | None]:
    match = _SHARE.fullmatch(value)
    if match is None:
        _bad(text, f"'5xx={value}' is not a share such as 90%/100 or 20/100")
    window = int(match["window"]) if match["window"] else None
    if window is not None and window < 1:
        _bad(text, "the window of '5xx' must be at least one answer")
    if match["percent"] is not None:
        percent = float(match["percent"])
        if not 0 < percent <= 100:
            _bad(text, f"'{match['percent']}%' is not a percentage above 0 and at most 100")
        window = DEFAULT_HALT_WINDOW if window is None else window
        # A hair below, so that 90% of 100 asks for 90 and not 91 through a rounding error.
        return max(1, math.ceil(percent * window / 100 - 1e-9)), window, percent
    count = int(match["count"])
    window = count if window is None else window
    if not 1 <= count <= window:
        _bad(text, f"'5xx={value}' asks for a count between 1 and the window")
    return count, window, None


def _parse_duration(text: str, value: str) -> float:
    match = _DURATION.fullmatch(value)
    if match is None:
        _bad(text, f"'stall={value}' is not a duration such as 600, 90s, 10m or 1h")
    seconds = float(match["number"]) * _UNITS[match["unit"]]
    if not seconds > 0:
        _bad(text, "'stall' must be longer than zero")
    return seconds


def _bad(text: str, problem: str) -> NoReturn:
    raise ConfigurationError(f"--halt-on {text.strip()!r} is not valid: {problem} ({_EXAMPLE}).")


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
