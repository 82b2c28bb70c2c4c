"""The library API, bulkretry.retrigger: every result first, then BatchHalted if it halted."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from aioresponses import aioresponses

import bulkretry
from bulkretry import BatchHalted, BulkRetryError, Credentials, Outcome, RunResult, Settings

BASE = "https://platform.example.test/data/foundation/flowservice"
ACTION = re.compile(
    r"^https://platform\.example\.test/data/foundation/flowservice/runs/[^/]+/action\?op=re-trigger$"
)
NEW = "3fb0418e-1804-45d6-8d56-dd51f05c0baf"
CREDENTIALS = Credentials(
    access_token="tok-secret-123", api_key="key-1", org_id="ORG@AdobeOrg", sandbox="dev"
)
IDS = [f"{i:08x}-1804-45d6-8d56-dd51f05c0baf" for i in range(12)]
#: What a hostile server writes to clear the screen and ring the bell.
HOSTILE = "\x1b[2J\x07"


def settings(**overrides: Any) -> Settings:
    """Settings for fast tests: no pacing to speak of, no backoff, one worker."""
    values: dict[str, Any] = {
        "base_url": BASE,
        "credentials": CREDENTIALS,
        "rate": 1e6,
        "burst": 1000,
        "backoff_base": 0.0,
        "concurrency": 1,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def http() -> Iterator[aioresponses]:
    with aioresponses() as mocked:
        yield mocked


async def collect_until_halted(
    ids: list[str], s: Settings
) -> tuple[list[RunResult], BatchHalted | None]:
    """Iterate to the end; return the results and the BatchHalted raised after them, if any."""
    results: list[RunResult] = []
    try:
        async for result in bulkretry.retrigger(ids, s):
            results.append(result)
    except BatchHalted as halted:
        return results, halted
    return results, None


async def test_a_batch_that_finishes_raises_nothing(http: aioresponses) -> None:
    """Every run re-triggered: the iteration simply ends."""
    http.post(ACTION, payload={"id": NEW, "etag": "e"}, repeat=True)
    results, halted = await collect_until_halted(IDS, settings())
    assert halted is None
    assert {r.outcome for r in results} == {Outcome.RETRIGGERED}


async def test_a_halted_batch_yields_every_result_then_raises_batch_halted(
    http: aioresponses,
) -> None:
    """A refused API key halts: a result for every ID comes first, then BatchHalted."""
    http.post(ACTION, status=403, payload={"error_code": "403003", "message": "Api Key is invalid"})
    results, halted = await collect_until_halted(IDS, settings())
    assert sorted(r.line for r in results) == list(range(1, len(IDS) + 1))
    assert {r.outcome for r in results} == {Outcome.NOT_ATTEMPTED}
    assert halted is not None
    assert "403" in halted.reason
    assert "check the token, API key, org and sandbox" in halted.reason
    assert str(halted) == halted.reason


async def test_batch_halted_says_why_the_batch_stopped(http: aioresponses) -> None:
    """Reaching --max-retriggers halts: the re-triggered and the unsent are all reported."""
    http.post(ACTION, payload={"id": NEW, "etag": "e"}, repeat=True)
    results, halted = await collect_until_halted(IDS, settings(max_retriggers=3))
    outcomes = [r.outcome for r in results]
    assert outcomes.count(Outcome.RETRIGGERED) == 3
    assert outcomes.count(Outcome.NOT_ATTEMPTED) == len(IDS) - 3
    assert halted is not None
    assert halted.reason == "reached --max-retriggers 3"


async def test_batch_halted_is_a_bulkretry_error(http: aioresponses) -> None:
    """One except clause, BulkRetryError, catches a halt along with everything else."""
    http.post(ACTION, status=403, payload={"error_code": "403003", "message": "no"})
    with pytest.raises(BulkRetryError) as info:
        async for _ in bulkretry.retrigger(IDS[:2], settings()):
            pass
    assert isinstance(info.value, BatchHalted)


async def test_a_halt_reason_quotes_the_server_without_escape_or_bell(
    http: aioresponses,
) -> None:
    """The reason a library caller may print is one safe line, whatever the server wrote."""
    http.post(ACTION, status=401, payload={"error_code": "401000", "message": f"no{HOSTILE}way"})
    _, halted = await collect_until_halted(IDS[:2], settings())
    assert halted is not None
    assert "\x1b" not in halted.reason
    assert "\x07" not in halted.reason
    assert halted.reason.isprintable()


async def test_closing_the_iterator_early_raises_no_batch_halted(http: aioresponses) -> None:
    """A caller that stops iterating stopped the batch itself: nothing is raised at it."""
    http.post(ACTION, payload={"id": NEW, "etag": "e"}, repeat=True)
    iterator = bulkretry.retrigger(IDS, settings())
    first = await anext(iterator)
    await iterator.aclose()
    assert first.outcome is Outcome.RETRIGGERED


async def test_ids_are_trimmed_of_ascii_whitespace_only_as_lines_of_a_file_are(
    http: aioresponses,
) -> None:
    """Spaces and tabs around an ID are trimmed; a no-break space or a line separator around
    it makes it invalid, as on a line of a file: one ID is judged alike whichever way it comes."""
    http.post(ACTION, payload={"id": NEW, "etag": "e"}, repeat=True)
    ids = [f" \t{IDS[0]} ", f"\u00a0{IDS[1]}", f"{IDS[2]}\u2028"]
    results, halted = await collect_until_halted(ids, settings())
    assert halted is None
    assert [(r.run_id, r.outcome) for r in sorted(results, key=lambda r: r.line)] == [
        (IDS[0], Outcome.RETRIGGERED),
        (f"\u00a0{IDS[1]}", Outcome.INVALID),
        (f"{IDS[2]}\u2028", Outcome.INVALID),
    ]
