"""`GET /runs`: property filters, ordering, keyset pages with continuation tokens, and links."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import orjson

from ._state import Run

DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
DEFAULT_ORDERBY = "-createdAt"

_FILTER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(==|!=|>=|<=|>|<)\s*(.*?)\s*$")

Value = int | str | None

# Fields read straight off a `Run`, so filtering a long list need not render every run as JSON.
_FIELDS: dict[str, Callable[[Run], Value]] = {
    "id": lambda r: r.id,
    "flowId": lambda r: r.flow_id,
    "createdAt": lambda r: r.created_at,
    "updatedAt": lambda r: r.updated_at,
    "eTag": lambda r: r.etag,
    "etag": lambda r: r.etag,
    "metrics.durationSummary.startedAtUTC": lambda r: r.started_at,
    "metrics.durationSummary.completedAtUTC": lambda r: r.completed_at,
    "metrics.statusSummary.status": lambda r: r.status,
}


class ListingError(ValueError):
    """A query Flow Service would refuse with 400; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Filter:
    """One `property=<field><op><value>` condition."""

    field: str
    op: str
    value: str

    def matches(self, run: Run) -> bool:
        """Tell whether `run` satisfies this condition; a missing field never does."""
        actual = _FIELDS[self.field](run)
        if actual is None:
            return self.op == "!="
        if isinstance(actual, int):
            try:
                wanted: int | str = int(self.value)
            except ValueError:
                raise ListingError(f"{self.field} takes a number, not {self.value!r}") from None
        else:
            # Adobe's pages write both `failed` and `Failed`: string values compare caselessly.
            actual, wanted = actual.casefold(), self.value.casefold()
        return _compare(actual, self.op, wanted)


def _compare(actual: int | str, op: str, wanted: int | str) -> bool:
    if op == "==":
        return actual == wanted
    if op == "!=":
        return actual != wanted
    if type(actual) is not type(wanted):
        return False
    if op == ">":
        return actual > wanted  # type: ignore[operator]
    if op == "<":
        return actual < wanted  # type: ignore[operator]
    if op == ">=":
        return actual >= wanted  # type: ignore[operator]
    return actual <= wanted  # type: ignore[operator]


def parse_filters(properties: Iterable[str]) -> list[Filter]:
    """Parse `property` values: repeated or comma-separated conditions, all ANDed.

    A bare field name (the spec's projection use) is accepted and ignored.
    """
    filters: list[Filter] = []
    for prop in properties:
        for part in prop.split(","):
            if not part.strip():
                continue
            match = _FILTER_RE.match(part)
            if match is None:
                if re.fullmatch(r"\s*[A-Za-z_][A-Za-z0-9_.]*\s*", part):
                    continue
                raise ListingError(f"cannot read property filter {part!r}")
            name, op, value = match.groups()
            if name not in _FIELDS:
                raise ListingError(f"cannot filter on property {name!r}")
            filters.append(Filter(name, op, value))
    return filters


def parse_limit(raw: str | None, default: int, maximum: int) -> int:
    """Read `limit`: a positive integer, capped at `maximum`."""
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise ListingError(f"limit must be a positive integer, not {raw!r}") from None
    if limit < 1:
        raise ListingError(f"limit must be a positive integer, not {raw!r}")
    return min(limit, maximum)


def parse_orderby(raw: str | None) -> tuple[str, bool]:
    """Read `orderby`: a field, `-field` for descending; return (field, descending)."""
    raw = (raw or DEFAULT_ORDERBY).strip()
    descending = raw.startswith("-")
    name = raw.lstrip("+-")
    if name not in _FIELDS:
        raise ListingError(f"cannot order by {name!r}")
    return name, descending


Key = tuple[int, int | str, str]


def sort_key(run: Run, field: str) -> Key:
    """Order runs by `field`, missing values last, and by ID among equals."""
    value = _FIELDS[field](run)
    return (1, 0, run.id) if value is None else (0, value, run.id)


def encode_token(key: Key) -> str:
    """Write the last key of a page as an opaque continuation token."""
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def decode_token(token: str) -> Key:
    """Read a continuation token written by `encode_token`."""
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        flag, value, run_id = raw
        if isinstance(flag, int) and isinstance(value, int | str) and isinstance(run_id, str):
            return (flag, value, run_id)
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError):
        pass
    raise ListingError("continuationToken is not valid")


@dataclass(frozen=True, slots=True)
class Page:
    """One page of runs, and the token for the next one if there is more."""

    runs: list[Run]
    next_token: str | None


def select(runs: Iterable[Run], filters: Sequence[Filter]) -> list[Run]:
    """Keep the runs that satisfy every filter."""
    return [r for r in runs if all(f.matches(r) for f in filters)]


def page(
    runs: Iterable[Run],
    *,
    filters: Sequence[Filter],
    orderby: tuple[str, bool],
    limit: int,
    token: str | None,
) -> Page:
    """Cut one page after the key in `token`; pages hold up while new runs are being added."""
    field, descending = orderby
    chosen = sorted(select(runs, filters), key=lambda r: sort_key(r, field), reverse=descending)
    if token is not None:
        after = decode_token(token)
        chosen = [r for r in chosen if _after(sort_key(r, field), after, descending)]
    items = chosen[:limit]
    more = len(chosen) > limit
    return Page(items, encode_token(sort_key(items[-1], field)) if more else None)


def _after(key: Key, last: Key, descending: bool) -> bool:
    try:
        return key < last if descending else key > last
    except TypeError:
        raise ListingError("continuationToken does not fit this orderby") from None


def next_href(path: str, query: Iterable[tuple[str, str]], token: str) -> str:
    """Link to the next page as the spec does: relative to the service base, same query."""
    kept = [(k, v) for k, v in query if k != "continuationToken"]
    encoded = urlencode([("continuationToken", token), *kept], quote_via=quote, safe="=,")
    return f"{path}?{encoded}"
