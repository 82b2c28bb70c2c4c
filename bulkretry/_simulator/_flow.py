"""Flow Service itself, once a request is through the gateway: re-trigger, show and list runs.

Each method answers as Flow Service would, with the payload a malformed answer would spoil.
Before it looks at runs it lets those whose time has come end (`Lifecycle.settle`).
"""

from __future__ import annotations

import random

from aiohttp import web
from multidict import MultiMapping

from . import _answers as A
from ._config import SimulatorConfig
from ._delivery import Visit
from ._lifecycle import Lifecycle
from ._listing import (
    ListingError,
    next_href,
    page,
    parse_filters,
    parse_limit,
    parse_orderby,
    select,
)
from ._records import Retrigger
from ._state import UUID_RE, Run, RunStore, new_etag, new_uuid

Answered = tuple[web.Response, dict[str, object] | None]


class FlowService:
    """Hold the runs, re-trigger them, and show them as Flow Service does."""

    __slots__ = (
        "_any_flow",
        "_clock",
        "_rng",
        "_wall",
        "config",
        "counts",
        "lifecycle",
        "retriggers",
        "store",
    )

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self._clock = config.clock
        self._wall = config.wall_clock
        seed = config.seed
        self._rng = random.Random(seed)
        self.store = RunStore(
            self._rng,
            allow_repeat=config.allow_repeat_retrigger,
            in_progress=config.in_progress_status,
        )
        now_ms = int(self._wall() * 1000)
        if config.run_ids is not None:
            self.store.load(
                config.run_ids, flows=config.flows, now_ms=now_ms, history_days=config.history_days
            )
        else:
            self.store.seed(
                flows=config.flows,
                failed_per_flow=config.runs_per_flow,
                others_per_flow=config.other_runs_per_flow,
                now_ms=now_ms,
                history_days=config.history_days,
            )
        self.lifecycle: Lifecycle = config.lifecycle()
        self.retriggers: list[Retrigger] = []
        self.counts: dict[str, int] = {}
        self._any_flow = new_uuid(random.Random(f"{seed}:any"))

    def __repr__(self) -> str:
        return (
            f"FlowService(runs={len(self.store)}, retriggered={sum(self.counts.values())}, "
            f"{self.lifecycle!r})"
        )

    def settle(self) -> None:
        """End the runs whose time has come."""
        self.lifecycle.settle(self._clock())

    def json(self, run: Run) -> dict[str, object]:
        """Render `run` as the spec's FlowRunItemDTO."""
        return run.to_json(self.config.org_id, self.config.sandbox)

    def look_up(self, run_id: str, rid: str) -> Answered:
        """Answer ``GET /runs/{RUN_ID}``: the run in a one-item list, or 404."""
        self.settle()
        run = self.store.runs.get(run_id)
        if run is None:
            return A.flow_error_for(A.NOT_FOUND, rid, run_id=run_id), None
        payload: dict[str, object] = {"items": [self.json(run)]}
        return A.json_answer(200, payload, rid), payload

    def flow(self, flow_id: str, rid: str) -> Answered:
        """Answer ``GET /flows/{FLOW_ID}``: the flow in a one-item list, or 404."""
        config = self.config
        if flow_id not in self.store.flow_ids and not config.accept_any:
            return A.flow_error_for(A.FLOW_NOT_FOUND, rid, flow_id=flow_id), None
        flow = {"id": flow_id, "imsOrgId": config.org_id, "sandboxName": config.sandbox}
        payload: dict[str, object] = {"items": [flow]}
        return A.json_answer(200, payload, rid), payload

    def retrigger(self, run_id: str, visit: Visit, *, lost: bool) -> Answered:
        """Answer ``POST /runs/{RUN_ID}/action?op=re-trigger``, starting a new run if allowed."""
        rid = visit.rid
        now_ms = int(self._wall() * 1000)
        if self.config.accept_any:
            return self._retrigger_any(run_id, visit, now_ms)
        self.settle()
        result = self.store.retrigger(run_id, now_ms)
        if result == "missing":
            return A.flow_error_for(A.NOT_FOUND, rid, run_id=run_id), None
        if result == "not-failed":
            status = self.store.runs[run_id].status
            return A.flow_error_for(A.NOT_FAILED, rid, run_id=run_id, s=status), None
        if result == "already":
            return A.flow_error_for(A.ALREADY, rid, run_id=run_id), None
        now = self._clock()
        self.lifecycle.begin(result, now)
        self.counts[run_id] = self.counts.get(run_id, 0) + 1
        self.retriggers.append(
            Retrigger(
                run_id=run_id,
                new_run_id=result.id,
                time=now,
                request_index=visit.index,
                answer_lost=lost,
            )
        )
        self._performed(visit)
        if self.config.response_shape == "docs":
            payload: dict[str, object] = {"id": result.id, "etag": result.etag}
        else:
            payload = self.json(result)
        return A.json_answer(200, payload, rid), payload

    def _retrigger_any(self, run_id: str, visit: Visit, now_ms: int) -> Answered:
        # Accept-any mode keeps counts only: its new runs are shown once and never stored.
        rid = visit.rid
        if UUID_RE.match(run_id) is None:
            return A.flow_error_for(A.NOT_FOUND, rid, run_id=run_id), None
        self.counts[run_id] = self.counts.get(run_id, 0) + 1
        new_id, etag = new_uuid(self._rng), new_etag(self._rng, now_ms)
        self._performed(visit)
        if self.config.response_shape == "docs":
            payload: dict[str, object] = {"id": new_id, "etag": etag}
            return A.json_answer(200, payload, rid), payload
        new = Run(
            id=new_id,
            flow_id=self._any_flow,
            created_at=now_ms,
            updated_at=now_ms,
            started_at=now_ms,
            completed_at=None,
            status=self.config.in_progress_status,
            etag=etag,
        )
        payload = self.json(new)
        return A.json_answer(200, payload, rid), payload

    @staticmethod
    def _performed(visit: Visit) -> None:
        if visit.rec is not None:
            visit.rec.performed = True
        if visit.tally is not None:
            visit.tally.retriggers += 1

    def list_runs(self, query: MultiMapping[str], rid: str) -> Answered:
        """Answer ``GET /runs`` with filters, ordering, pages and counts."""
        self.settle()
        cfg = self.config
        runs = self.store.runs.values()
        try:
            filters = parse_filters(query.getall("property", []))
            if query.get("count", "false").lower() == "true":
                payload: dict[str, object] = {"count": len(select(runs, filters))}
                return A.json_answer(200, payload, rid), payload
            result = page(
                runs,
                filters=filters,
                orderby=parse_orderby(query.get("orderby")),
                limit=parse_limit(query.get("limit"), cfg.list_default_limit, cfg.list_max_limit),
                token=query.get("continuationToken"),
            )
        except ListingError as exc:
            return A.flow_error_for(A.BAD_QUERY, rid, detail=str(exc)), None
        links: dict[str, object] = {}
        if result.next_token is not None:
            links["next"] = {"href": next_href("/runs", query.items(), result.next_token)}
        payload = {"items": [self.json(r) for r in result.runs], "_links": links}
        return A.json_answer(200, payload, rid), payload
