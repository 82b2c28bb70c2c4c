"""What a listing asks for: :class:`ListQuery`.

A query becomes ``property`` filters of ``GET /runs`` (written by
:func:`~bulkretry._http.lookups.listing_params`, as look-ups write theirs), one listing per flow
(``property`` filters are ANDed, so several flows cannot share a query), or one for the whole
sandbox; it also judges each listed run, so that a server that ignored a filter cannot make
``run`` re-trigger the wrong runs. Which next-page links may be followed is
:mod:`bulkretry._http.links`' business (:func:`resolve_next`, re-exported here).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from .._exceptions import ConfigurationError
from .._http.links import next_href, resolve_next
from .._http.lookups import STARTED_FIELD, STATUS_FIELD, is_flow_id, listing_params
from .._http.runs import ListedRun

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "STARTED_FIELD",
    "STATUS_FIELD",
    "ListQuery",
    "next_href",
    "resolve_next",
]

#: Runs asked for per page (the ``limit`` parameter).
DEFAULT_PAGE_SIZE = 100
FAILED = "failed"

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


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
            if not is_flow_id(flow_id):
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
        return listing_params(
            flow_id=flow_id,
            status=FAILED,
            started_after_ms=self.since_ms,
            started_before_ms=self.until_ms,
            limit=self.page_size,
        )

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
