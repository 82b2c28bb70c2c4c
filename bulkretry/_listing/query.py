"""What a listing asks for, and which next-page links it may follow.

:class:`ListQuery` becomes ``property`` filters of ``GET /runs``, one listing per flow
(``property`` filters are ANDed, so several flows cannot share a query), or one for the whole
sandbox; it also judges each listed run, so that a server that ignored a filter cannot make
``run`` re-trigger the wrong runs.

Pages continue through ``_links.next.href``, which Adobe writes relative to the service base
(``/runs?continuationToken=…`` means ``{base}/runs?continuationToken=…``). The access token goes
with every request, so :func:`resolve_next` follows an absolute link only to the base URL's own
scheme, host and port, and never one that carries credentials.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from yarl import URL

from .._exceptions import ConfigurationError, ListingHalted
from .._http.runs import ListedRun
from .._text import one_line

__all__ = ["DEFAULT_PAGE_SIZE", "ListQuery", "next_href", "resolve_next"]

#: Runs asked for per page (the ``limit`` parameter).
DEFAULT_PAGE_SIZE = 100
FAILED = "failed"
STATUS_FIELD = "metrics.statusSummary.status"
STARTED_FIELD = "metrics.durationSummary.startedAtUTC"

#: What a flow ID may contain: enough for UUIDs, nothing that the filter syntax reads (``,=<>``).
_FLOW_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: How much of a refused link a message quotes.
_LINK_CHARS = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class ListQuery:
    """What to list: failed runs of ``flow_ids`` (or of every flow), started in a window.

    ``since_ms`` and ``until_ms`` are epoch milliseconds, both exclusive, as the API's ``>``
    and ``<`` filters are. Listing every flow must be asked for with ``all_flows``.
    """

    flow_ids: tuple[str, ...] = ()
    all_flows: bool = False
    since_ms: int | None = None
    until_ms: int | None = None
    page_size: int | None = DEFAULT_PAGE_SIZE

    def __post_init__(self) -> None:
        if not self.flow_ids and not self.all_flows:
            raise ConfigurationError(
                "name the flows with --flow-id, or list them all (--all-flows)"
            )
        if self.flow_ids and self.all_flows:
            raise ConfigurationError("--flow-id and --all-flows cannot be used together")
        for flow_id in self.flow_ids:
            if not _FLOW_ID.fullmatch(flow_id):
                raise ConfigurationError(
                    f"flow ID {flow_id!r} is not valid (expected a UUID such as "
                    "3d17a4ff-9e0a-4f7c-94bb-bc0b61a3a76d)"
                )
        if (
            self.since_ms is not None
            and self.until_ms is not None
            and self.since_ms >= self.until_ms
        ):
            raise ConfigurationError("--since must be earlier than --until")
        if self.page_size is not None and self.page_size < 1:
            raise ConfigurationError("the page size must be at least 1")

    def folded(self) -> ListQuery:
        """Return the query with UUID flow IDs in lower case, as Flow Service writes ``flowId``.

        Each listed run's ``flowId`` is checked against the flow asked for, so an upper-case
        flow ID would otherwise leave out every run of its flow.
        """
        flows = tuple(dict.fromkeys(f.lower() if _UUID.fullmatch(f) else f for f in self.flow_ids))
        return self if flows == self.flow_ids else dataclasses.replace(self, flow_ids=flows)

    def flows(self) -> tuple[str | None, ...]:
        """Return the flows to list one after another; None stands for every flow."""
        return tuple(dict.fromkeys(self.flow_ids)) or (None,)

    def params(self, flow_id: str | None) -> list[tuple[str, str]]:
        """Return the first page's query parameters for ``flow_id`` (None: every flow)."""
        properties = [] if flow_id is None else [f"flowId=={flow_id}"]
        properties.append(f"{STATUS_FIELD}=={FAILED}")
        if self.since_ms is not None:
            properties.append(f"{STARTED_FIELD}>{self.since_ms}")
        if self.until_ms is not None:
            properties.append(f"{STARTED_FIELD}<{self.until_ms}")
        params = [("property", p) for p in properties]
        if self.page_size is not None:
            params.append(("limit", str(self.page_size)))
        return params

    def admits(self, run: ListedRun, flow_id: str | None) -> bool:
        """Tell whether ``run`` fits the filters as far as it shows (the API may ignore one)."""
        if run.status is not None and run.status.casefold() != FAILED:
            return False
        if flow_id is not None and run.flow_id is not None and run.flow_id != flow_id:
            return False
        started = run.started_at_ms
        if started is not None:
            if self.since_ms is not None and started <= self.since_ms:
                return False
            if self.until_ms is not None and started >= self.until_ms:
                return False
        return True


def _quoted(href: str) -> str:
    """Quote a link a server wrote, as one short safe line."""
    return one_line(repr(href), _LINK_CHARS)


def resolve_next(base: URL, href: str) -> URL:
    """Return the URL of the next page that ``href`` links to, relative to ``base``.

    A link starting with ``/`` is relative to the service base, as Adobe writes them, unless it
    already starts with the base's path; an absolute (or ``//host``) link must stay on the
    base's scheme, host and port. Raise :class:`ListingHalted` for any other link.
    """
    try:
        link = URL(href.strip())
    except (ValueError, TypeError) as exc:
        raise ListingHalted(
            f"the next-page link {_quoted(href)} is not a URL ({one_line(str(exc))})"
        ) from None
    if link.raw_user is not None or link.raw_password is not None:
        raise ListingHalted("the next-page link carries credentials (user:password@); refused")
    if link.host is not None:
        resolved = base.join(link)
        if (resolved.scheme, resolved.host, resolved.port) != (base.scheme, base.host, base.port):
            where = one_line(f"{resolved.scheme}://{resolved.raw_authority}", _LINK_CHARS)
            raise ListingHalted(
                f"the next-page link points to {where}, not to {base.origin()}; "
                "the access token is never sent to another host"
            )
        return resolved.with_fragment(None)
    if link.scheme:
        raise ListingHalted(f"the next-page link {_quoted(href)} is not an http(s) URL")
    base_path = base.raw_path.rstrip("/")
    path = link.raw_path
    if not path:
        path = f"{base_path}/runs"
    elif not path.startswith("/"):
        path = f"{base_path}/{path}"
    elif not (base_path and (path == base_path or path.startswith(base_path + "/"))):
        path = base_path + path
    return URL.build(
        scheme=base.scheme,
        authority=base.raw_authority,
        path=path,
        query_string=link.raw_query_string,
        encoded=True,
    )


def next_href(body: dict[str, Any]) -> str | None:
    """Return the next page's link, or None at the end; refuse a link that cannot be read."""
    links = body.get("_links")
    if not isinstance(links, dict):
        return None
    nxt = links.get("next")
    if nxt is None:
        return None
    href = nxt.get("href") if isinstance(nxt, dict) else nxt
    if not isinstance(href, str):
        raise ListingHalted(f"cannot read the next-page link {one_line(repr(nxt))}")
    # An empty link would mean the unfiltered /runs: take it as the end, never follow it.
    return href if href.strip() else None
