"""Look runs up: what Flow Service says of a run now (:class:`RunView`), and the URLs to ask.

``GET {base}/runs/{RUN_ID}`` answers ``{"items": [run]}`` (:func:`parse_single`);
``GET {base}/runs?property=…`` answers a page of runs and a next-page link
(:func:`parse_run_page`; :func:`~bulkretry._http.links.resolve_next` says where the link may
lead). Several ``property`` filters are ANDed: :func:`listing_params` writes them, for
``list-failed``'s pages and for look-ups alike, and :func:`runs_url` encodes them as the docs
write them (``property=flowId==…``; ``>`` and ``<`` escaped).

A run is done when its ``metrics.statusSummary.status`` says so, in any letter case:

==================================================  =============
status                                              ``final``
==================================================  =============
``success``, ``completed``                          ``"success"``
``failed``                                          ``"failed"``
anything containing ``partial`` (PARTIAL_SUCCESS…)  ``"partial"``
anything else, or none (IN_PROGRESS, QUEUED…)       None: not done
==================================================  =============
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlencode

from yarl import URL

from .._exceptions import ListingHalted
from .._text import server_text
from .links import next_href
from .runs import clean_id, millis, run_errors

__all__ = [
    "CREATED_FIELD",
    "STARTED_FIELD",
    "STATUS_FIELD",
    "Final",
    "RunView",
    "classify_status",
    "flow_url",
    "is_flow_id",
    "listing_params",
    "listing_url",
    "page_problem",
    "parse_run_page",
    "parse_single",
    "run_segment",
    "run_url",
    "runs_url",
]

STATUS_FIELD = "metrics.statusSummary.status"
STARTED_FIELD = "metrics.durationSummary.startedAtUTC"
CREATED_FIELD = "createdAt"

Final = Literal["success", "failed", "partial"]
"""How a run ended; a run still going (or in a state nobody knows) has no final."""

_SUCCESS = frozenset({"success", "completed"})
#: What a flow ID may contain: enough for UUIDs, nothing that the filter syntax reads (``,=<>``).
_FLOW_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: A status value in a filter: a word, such as ``failed`` or ``PARTIAL_SUCCESS``.
_STATUS = re.compile(r"[A-Za-z_]{1,64}")
#: A field to order by, descending with a leading ``-``.
_ORDERBY = re.compile(r"[-+]?[A-Za-z][A-Za-z0-9_.]{0,127}")


def classify_status(status: str | None) -> Final | None:
    """Return how a run with this ``status`` ended (see the module table), None if not done."""
    if status is None:
        return None
    folded = status.strip().casefold()
    if folded in _SUCCESS:
        return "success"
    # PARTIAL_FAILURE holds "fail" too: partial is asked first.
    if "partial" in folded:
        return "partial"
    if folded == "failed":
        return "failed"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunView:
    """One run as a look-up sees it: its flow, when it was created, its etag and its status.

    ``status_raw`` is the server's word, as one safe line; ``final`` its meaning
    (:func:`classify_status`). ``errors`` holds ``(code, message)`` pairs of a run that ended
    ``failed`` or ``partial``, a few at most, each one safe line; it is empty otherwise.
    """

    id: str
    flow_id: str | None = None
    created_at: int | None = None
    etag: str | None = None
    status_raw: str | None = None
    final: Final | None = None
    errors: tuple[tuple[str | None, str | None], ...] = ()

    @property
    def done(self) -> bool:
        """Tell whether the run has ended (success, failed or partial)."""
        return self.final is not None

    @classmethod
    def from_item(cls, item: object) -> RunView | None:
        """Read one run object; None when it is no object or has no clean ``id``."""
        if not isinstance(item, dict):
            return None
        run_id = clean_id(item.get("id"))
        if run_id is None:
            return None
        metrics = item.get("metrics")
        summary = metrics.get("statusSummary") if isinstance(metrics, dict) else None
        status = server_text(summary.get("status")) if isinstance(summary, dict) else None
        final = classify_status(status)
        etag = item.get("etag")
        if not isinstance(etag, str):
            etag = item.get("eTag")
        return cls(
            id=run_id,
            flow_id=clean_id(item.get("flowId")),
            created_at=millis(item.get("createdAt")),
            etag=server_text(etag),
            status_raw=status,
            final=final,
            errors=run_errors(item) if final in ("failed", "partial") else (),
        )


def page_problem(body: object) -> str | None:
    """Say what keeps ``body`` from being a page of runs (an object with an ``items`` list)."""
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if not isinstance(body.get("items"), list):
        return "the body has no list of items"
    return None


def parse_run_page(body: object) -> tuple[list[RunView], str | None]:
    """Return a page's runs (items without a clean ID left out) and its next-page link.

    The link is as the server wrote it: resolve it with
    :func:`~bulkretry._http.links.resolve_next`, which refuses links to another host. Raise
    :class:`ListingHalted` when ``body`` is not a page (:func:`page_problem`) or its link
    cannot be read: an empty page would be read as "no such run".
    """
    problem = page_problem(body)
    if problem is not None:
        raise ListingHalted(f"not a page of runs: {problem}")
    assert isinstance(body, dict)
    views = [view for item in body["items"] if (view := RunView.from_item(item)) is not None]
    return views, next_href(body)


def parse_single(body: object) -> RunView | None:
    """Return the run of a ``GET /runs/{id}`` answer (``{"items": [run]}``, or the run itself).

    None when the body holds no run with a clean ID.
    """
    if not isinstance(body, dict):
        return None
    items = body.get("items")
    if isinstance(items, list):
        return RunView.from_item(items[0]) if len(items) == 1 else None
    return RunView.from_item(body)


def is_flow_id(text: str) -> bool:
    """Tell whether ``text`` may stand in a ``flowId==`` filter (nothing the syntax reads)."""
    return _FLOW_ID.fullmatch(text) is not None


def run_segment(run_id: str) -> str:
    """Return ``run_id`` as one encoded path segment: it cannot leave it, nor be ``.``/``..``."""
    segment = quote(run_id, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    return segment


def _base(base: URL | str) -> str:
    """Return the base URL encoded (IDNA host, quoted path), without a trailing slash."""
    return str(base if isinstance(base, URL) else URL(base.rstrip("/"))).rstrip("/")


def run_url(base: URL | str, run_id: str) -> URL:
    """Return ``{base}/runs/{run_id}``, the run ID percent-encoded (send as is)."""
    return URL(f"{_base(base)}/runs/{run_segment(run_id)}", encoded=True)


def listing_params(
    *,
    flow_id: str | None = None,
    status: str | None = None,
    created_after_ms: int | None = None,
    started_after_ms: int | None = None,
    started_before_ms: int | None = None,
    limit: int | None = None,
    orderby: str | None = None,
) -> list[tuple[str, str]]:
    """Return the query parameters of ``GET /runs``: one ``property`` per filter, ANDed.

    Times are epoch milliseconds, exclusive (the API's ``>`` and ``<``). Raise ValueError for
    a flow ID, status or order that could change the filter's meaning.
    """
    properties: list[str] = []
    if flow_id is not None:
        if not is_flow_id(flow_id):
            raise ValueError(f"flow ID {flow_id!r} cannot stand in a filter")
        properties.append(f"flowId=={flow_id}")
    if status is not None:
        if _STATUS.fullmatch(status) is None:
            raise ValueError(f"status {status!r} cannot stand in a filter")
        properties.append(f"{STATUS_FIELD}=={status}")
    if started_after_ms is not None:
        properties.append(f"{STARTED_FIELD}>{int(started_after_ms)}")
    if started_before_ms is not None:
        properties.append(f"{STARTED_FIELD}<{int(started_before_ms)}")
    if created_after_ms is not None:
        properties.append(f"{CREATED_FIELD}>{int(created_after_ms)}")
    params = [("property", p) for p in properties]
    if orderby is not None:
        if _ORDERBY.fullmatch(orderby) is None:
            raise ValueError(f"cannot order by {orderby!r}")
        params.append(("orderby", orderby))
    if limit is not None:
        if limit < 1:
            raise ValueError("the limit must be at least 1")
        params.append(("limit", str(int(limit))))
    return params


def runs_url(base: URL | str, params: Sequence[tuple[str, str]]) -> URL:
    """Return ``{base}/runs?…`` with ``params`` encoded as the docs write them (send as is)."""
    # ``=`` stays as the docs write it (property=flowId==…); ``>`` and ``<`` are escaped.
    query = urlencode(list(params), quote_via=quote, safe="=")
    return URL(f"{_base(base)}/runs" + (f"?{query}" if query else ""), encoded=True)


def flow_url(base: URL | str, flow_id: str) -> URL:
    """Return ``{base}/flows/{FLOW_ID}``, which answers 404 for a flow the sandbox lacks."""
    return URL(f"{_base(base)}/flows/{quote(flow_id, safe='')}", encoded=True)


def listing_url(
    base: URL | str,
    *,
    flow_id: str | None = None,
    created_after_ms: int | None = None,
    status: str | None = None,
    limit: int | None = None,
    orderby: str | None = None,
) -> URL:
    """Return the first page's URL of a look-up listing (see :func:`listing_params`).

    ``listing_url(base, flow_id=F, status="success", orderby="-createdAt", limit=1)`` asks for
    the newest successful run of flow F.
    """
    return runs_url(
        base,
        listing_params(
            flow_id=flow_id,
            status=status,
            created_after_ms=created_after_ms,
            limit=limit,
            orderby=orderby,
        ),
    )
