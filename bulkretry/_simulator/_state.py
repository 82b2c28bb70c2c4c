"""The simulator's flows and runs: seeded or loaded, looked up, re-triggered, shown as JSON."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
"""What a run ID looks like to Flow Service (Adobe writes them in lower case)."""

_UUID_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID_SET = (0x8000 << 48) | (4 << 76)

FLOW_SPEC = {"id": "9753525b-82c7-4dce-8a9b-5ccfce2b9876", "version": "1.0"}
CLIENT = "sim-client"
MS_PER_DAY = 86_400_000

FAILED, SUCCESS, IN_PROGRESS = "failed", "success", "inProgress"

# Failure reasons shaped like those Adobe shows on failed batch-source runs.
FAILURES: tuple[tuple[str, str], ...] = (
    ("CONNECTOR-1001-500", "Something went wrong while copying data from the source."),
    ("CONNECTOR-2001-500", "The source could not be reached: the connection timed out."),
    ("CONNECTOR-3002-500", "Access to the source was denied: check the account's credentials."),
    ("INGEST-1212-500", "Batch ingestion failed: the promotion activity did not finish."),
)

Refusal: TypeAlias = Literal["missing", "not-failed", "already"]
"""Why a re-trigger is refused: no such run, run not failed, run already re-triggered."""


def new_uuid(rng: random.Random) -> str:
    """Draw a lower-case version-4 UUID from `rng`, so that seeded runs repeat exactly."""
    # What uuid.UUID(int=..., version=4) does, at a third of the cost: this is the hot path.
    n = (rng.getrandbits(128) & _UUID_CLEAR) | _UUID_SET
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_etag(rng: random.Random, now_ms: int) -> str:
    """Draw an etag shaped like Adobe's, quotes included: ``"1100c53e-0000-0200-0000-6271…"``."""
    return f'"{rng.getrandbits(32):08x}-0000-0200-0000-{now_ms // 1000:08x}0000"'


@dataclass(slots=True, kw_only=True)
class Run:
    """One flow run, with what Flow Service shows of it and what the simulator knows of it."""

    id: str
    flow_id: str
    created_at: int
    updated_at: int
    started_at: int
    completed_at: int | None
    status: str
    etag: str
    records: int = 0
    failure: tuple[str, str] | None = None
    retriggered_as: list[str] = field(default_factory=list)
    retrigger_of: str | None = None
    lineage: str | None = None
    """The run whose re-trigger started this one's line: None for a run not started so."""

    def can_retrigger(self) -> bool:
        """Tell whether Flow Service would re-trigger this run: failed, or successful but empty."""
        return self.status == FAILED or (self.status == SUCCESS and self.records == 0)

    def to_json(self, org_id: str, sandbox: str) -> dict[str, object]:
        """Render the run as the spec's FlowRunItemDTO."""
        duration: dict[str, object] = {"startedAtUTC": self.started_at}
        if self.completed_at is not None:
            duration["completedAtUTC"] = self.completed_at
        status: dict[str, object] = {"status": self.status}
        if self.failure is not None:
            code, message = self.failure
            status["errors"] = [{"code": code, "message": message}]
        return {
            "id": self.id,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "createdBy": f"{CLIENT}@AdobeID",
            "updatedBy": f"{CLIENT}@AdobeID",
            "createdClient": CLIENT,
            "updatedClient": CLIENT,
            "sandboxName": sandbox,
            "imsOrgId": org_id,
            "flowId": self.flow_id,
            "flowSpec": FLOW_SPEC,
            "providerRefId": f"M-{self.flow_id}-incremental-0:{self.id}",
            "eTag": self.etag,
            "metrics": {
                "durationSummary": duration,
                "sizeSummary": {"inputBytes": self.records * 97, "outputBytes": self.records * 61},
                "recordSummary": {
                    "inputRecordCount": self.records,
                    "createdRecordCount": self.records,
                    "outputRecordCount": 0 if self.status == FAILED else self.records,
                    "failedRecordCount": self.records if self.status == FAILED else 0,
                },
                "fileSummary": {"inputFileCount": 1, "outputFileCount": 0},
                "statusSummary": status,
            },
        }


class RunStore:
    """Hold flows and runs in creation order, and re-trigger them as Flow Service would."""

    __slots__ = ("_failed", "_rng", "allow_repeat", "flow_ids", "in_progress", "runs")

    def __init__(
        self, rng: random.Random, *, allow_repeat: bool = False, in_progress: str = IN_PROGRESS
    ) -> None:
        self._rng = rng
        self._failed: list[str] = []
        self.allow_repeat = allow_repeat
        self.in_progress = in_progress
        self.flow_ids: list[str] = []
        self.runs: dict[str, Run] = {}

    def __repr__(self) -> str:
        return f"RunStore(flows={len(self.flow_ids)}, runs={len(self.runs)})"

    def __len__(self) -> int:
        return len(self.runs)

    def failed_run_ids(self) -> list[str]:
        """Return the IDs of the runs seeded or loaded as failed, in creation order."""
        return list(self._failed)

    def seed(
        self,
        *,
        flows: int,
        failed_per_flow: int,
        others_per_flow: int,
        now_ms: int,
        history_days: float,
    ) -> None:
        """Make `flows` flows with failed and other runs started over the last `history_days`."""
        span = max(1, int(history_days * MS_PER_DAY))
        drafts: list[tuple[int, str, str, str]] = []
        for _ in range(flows):
            flow_id = new_uuid(self._rng)
            self.flow_ids.append(flow_id)
            statuses = [FAILED] * failed_per_flow + [
                SUCCESS if i % 3 else self.in_progress for i in range(others_per_flow)
            ]
            for status in statuses:
                drafts.append((self._rng.randrange(1, span), new_uuid(self._rng), flow_id, status))
        drafts.sort(key=lambda d: (-d[0], d[1]))
        for age, run_id, flow_id, status in drafts:
            self._add(run_id, flow_id, status, started_at=now_ms - age, now_ms=now_ms)

    def load(self, run_ids: Iterable[str], *, flows: int, now_ms: int, history_days: float) -> None:
        """Add the given run IDs as failed runs, spread over `flows` flows and the recent past."""
        self.flow_ids.extend(new_uuid(self._rng) for _ in range(max(1, flows)))
        ids = [r for r in dict.fromkeys(run_ids) if r not in self.runs]
        span = max(len(ids), int(history_days * MS_PER_DAY))
        for i, run_id in enumerate(ids):
            # Oldest first, evenly spaced, so creation order is the order given.
            age = span - (span * i) // max(1, len(ids))
            flow_id = self.flow_ids[i % len(self.flow_ids)]
            self._add(run_id, flow_id, FAILED, started_at=now_ms - age, now_ms=now_ms)

    def retrigger(self, run_id: str, now_ms: int) -> Run | Refusal:
        """Start a new run of the same flow as `run_id`, or say why Flow Service would refuse.

        The new run is in progress; `Lifecycle` decides how and when it ends.
        """
        run = self.runs.get(run_id)
        if run is None:
            return "missing"
        if not run.can_retrigger():
            return "not-failed"
        if run.retriggered_as and not self.allow_repeat:
            return "already"
        new = Run(
            id=new_uuid(self._rng),
            flow_id=run.flow_id,
            created_at=now_ms,
            updated_at=now_ms,
            started_at=now_ms,
            completed_at=None,
            status=self.in_progress,
            etag=new_etag(self._rng, now_ms),
            retrigger_of=run.id,
            lineage=run.lineage or run.id,
        )
        self.runs[new.id] = new
        run.retriggered_as.append(new.id)
        return new

    def _add(self, run_id: str, flow_id: str, status: str, *, started_at: int, now_ms: int) -> None:
        created = started_at - self._rng.randrange(50, 2_000)
        completed = None
        if status != self.in_progress:
            completed = min(now_ms, started_at + self._rng.randrange(5_000, 900_000))
        records = self._rng.randrange(1, 50_000)
        run = Run(
            id=run_id,
            flow_id=flow_id,
            created_at=created,
            updated_at=completed if completed is not None else started_at,
            started_at=started_at,
            completed_at=completed,
            status=status,
            etag=new_etag(self._rng, created),
            records=records,
            failure=self._rng.choice(FAILURES) if status == FAILED else None,
        )
        self.runs[run_id] = run
        if status == FAILED:
            self._failed.append(run_id)
