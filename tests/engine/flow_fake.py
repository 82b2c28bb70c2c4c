"""A fake Flow Service for look-up tests: runs by ID, and the filtered, unpaged listing.

``get`` answers ``GET /runs/{id}`` and ``GET /runs?property=...`` (``flowId==``,
``createdAt>``, ``createdAt<``) at the client's seam; ``status`` forces an answer for a path.
"""

from __future__ import annotations

from typing import Any

from yarl import URL

from bulkretry._model import Answer

BASE = "https://platform.example.test/data/foundation/flowservice"
FLOW = "11111111-1804-45d6-8d56-dd51f05c0baf"


class Service:
    """Runs by ID and the filtered listing; ``status`` forces an answer for a path."""

    base_url = BASE
    #: The flow of a run added without one.
    default_flow = FLOW

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.urls: list[URL] = []
        self.status: dict[str, int] = {}

    def add(self, run_id: str, created_ms: int, flow: str | None = None) -> None:
        self.runs[run_id] = {
            "id": run_id,
            "flowId": flow or self.default_flow,
            "createdAt": created_ms,
            "etag": f'"e-{run_id[:4]}"',
            "metrics": {"statusSummary": {"status": "inProgress"}},
        }

    async def get(self, url: URL | str, token: str) -> Answer:
        url = URL(str(url))
        self.urls.append(url)
        tail = url.path.rsplit("/runs", 1)[1]
        forced = self.status.get(tail or "/")
        if forced is not None:
            return Answer(status=forced, body={"title": "forced", "status": forced})
        if tail.startswith("/"):
            run = self.runs.get(tail[1:])
            if run is None:
                return Answer(status=404, body={"title": "not found"})
            return Answer(status=200, body={"items": [run]})
        items = list(self.runs.values())
        for prop in url.query.getall("property"):
            field, op, value = prop.partition("==") if "==" in prop else _split(prop)
            if field == "flowId":
                items = [r for r in items if r["flowId"] == value]
            elif op == ">":
                items = [r for r in items if r["createdAt"] > int(value)]
            elif op == "<":
                items = [r for r in items if r["createdAt"] < int(value)]
        return Answer(status=200, body={"items": items})

    def listings(self) -> list[URL]:
        return [u for u in self.urls if u.path.endswith("/runs")]


def _split(prop: str) -> tuple[str, str, str]:
    op = ">" if ">" in prop else "<"
    field, _, value = prop.partition(op)
    return field, op, value
