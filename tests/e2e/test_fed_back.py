"""Results fed back in any order: the most advanced evidence per run wins, nothing done is sent.

Two passes' results, A and B, give each run every pair of outcomes (or none); they are fed back
as files in both orders, concatenated, shuffled line by line, on stdin, with bare IDs mixed in.
Whatever the order, a run with a ``retriggered`` line anywhere is never sent, an ``in_doubt``
one is not sent either, and the others are sent once (counted by the simulator).
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson
import pytest
from helpers_resume import FAST, Finished, bulkretry, id_lines, records, uuid

from bulkretry._simulator import Simulator, SimulatorConfig

pytestmark = pytest.mark.slow

#: Evidence, most advanced first; a bare ID ranks with not_attempted and skipped.
RANK = {
    "retriggered": 3,
    "already_retriggered": 3,
    "in_doubt": 2,
    "failed": 1,
    "not_attempted": 0,
    "skipped": 0,
    "bare": 0,
}
OUTCOMES = ("retriggered", "already_retriggered", "in_doubt", "failed", "not_attempted", "skipped")
#: Every pair of what passes A and B said of a run (None: that pass did not name it).
PAIRS = [
    (a, b) for a, b in itertools.product((*OUTCOMES, None), repeat=2) if (a, b) != (None, None)
]
RUNS = [uuid(i) for i in range(len(PAIRS))]
#: Runs only ever named by a bare ID.
BARE_ONLY = [uuid(i) for i in range(500, 505)]


def result_line(run_id: str, outcome: str, line: int) -> bytes:
    """Return a results line as `bulkretry run` writes it, for ``outcome``."""
    done = outcome in ("retriggered", "already_retriggered")
    errors = {
        "in_doubt": {"kind": "http", "message": "502 Bad Gateway", "error_code": "1102-502"},
        "failed": {"kind": "http", "message": "404 Not Found", "error_code": "1101-404"},
        "not_attempted": {"kind": "interrupted", "message": "the batch stopped"},
    }
    record = {
        "run_id": run_id,
        "outcome": outcome,
        "new_run_id": "9" + run_id[1:] if done else None,
        "etag": '"1100c53e-0000-0200-0000-627138980000"' if done else None,
        "http_status": {"in_doubt": 502, "failed": 404}.get(outcome, 200 if done else None),
        "attempts": 0 if outcome in ("not_attempted", "skipped") else 1,
        "ambiguous_attempts": 1 if outcome == "in_doubt" else 0,
        "error": errors.get(outcome),
        "request_id": None,
        "finished_at": "2026-11-26T20:00:00.000Z",
        "source": "ids.txt",
        "line": line,
    }
    return orjson.dumps(record) + b"\n"


def passes() -> tuple[list[bytes], list[bytes]]:
    """Return the lines of passes A and B."""
    numbered = list(enumerate(zip(RUNS, PAIRS, strict=True), 1))
    a = [result_line(run_id, pa, i) for i, (run_id, (pa, _)) in numbered if pa]
    b = [result_line(run_id, pb, i) for i, (run_id, (_, pb)) in numbered if pb]
    return a, b


def bare_lines() -> list[bytes]:
    """Return bare IDs: every other run of the passes, and runs no pass named."""
    return [f"{run_id}\n".encode() for run_id in RUNS[::2] + BARE_ONLY]


def evidence() -> dict[str, list[str]]:
    """Return, for each run, what every line fed back says of it."""
    seen: dict[str, list[str]] = {run_id: [] for run_id in RUNS + BARE_ONLY}
    for run_id, pair in zip(RUNS, PAIRS, strict=True):
        seen[run_id] += [outcome for outcome in pair if outcome]
    for line in bare_lines():
        seen[line.decode().strip()].append("bare")
    return seen


def arrangement(name: str, folder: Path) -> tuple[list[str], bytes | None, bool]:
    """Write the inputs of ``name``; return the FILE arguments, stdin, and if bare IDs are in."""
    a, b = passes()
    bare = bare_lines()
    mixed = a + b + bare
    random.Random(name).shuffle(mixed)
    files: dict[str, list[list[bytes]]] = {
        "A then B": [a, b],
        "B then A": [b, a],
        "A and B in one file": [a + b],
        "B and A in one file": [b + a],
        "A and B shuffled line by line in one file": [random.Random(1).sample(a + b, len(a + b))],
        "bare IDs, then A, then B": [bare, a, b],
        "B, then A, then bare IDs": [b, a, bare],
    }
    stdin = {
        "A and B on stdin": a + b,
        "B, bare IDs and A on stdin": b + bare + a,
        "A, B and bare IDs shuffled on stdin": mixed,
        "bare IDs, then A and B on stdin": bare + a + b,
    }
    if name in stdin:
        return ["-"], b"".join(stdin[name]), any(line in bare for line in stdin[name])
    paths = []
    for number, chunk in enumerate(files[name]):
        path = folder / f"input{number}.jsonl"
        path.write_bytes(b"".join(chunk))
        paths.append(str(path))
    return paths, None, any(chunk is bare for chunk in files[name])


ARRANGEMENTS = [
    "A then B",
    "B then A",
    "A and B in one file",
    "B and A in one file",
    "A and B shuffled line by line in one file",
    "bare IDs, then A, then B",
    "B, then A, then bare IDs",
    # Read whole first, as files are: their first line is a results line.
    "A and B on stdin",
    "B, bare IDs and A on stdin",
]
# A pipe that starts with a results line is read whole first; one that starts with a run ID
# streams: evidence counts from its line on, and what came late is reported.
ON_STDIN = [
    "A and B on stdin",
    "B, bare IDs and A on stdin",
    "A, B and bare IDs shuffled on stdin",
    "bare IDs, then A and B on stdin",
]


def best(said: Sequence[str]) -> str:
    """Return the most advanced of what the lines say of a run."""
    return max(said, key=RANK.__getitem__)


async def feed_back(
    folder: Path, files: Sequence[str], stdin: bytes | None, *options: str
) -> tuple[Finished, dict[str, int], list[dict[str, object]]]:
    """Run the inputs through `bulkretry run` on a fresh simulator; return its counts too."""
    ids = RUNS + BARE_ONLY
    out = folder / "out.jsonl"
    async with Simulator(SimulatorConfig(run_ids=tuple(ids), allow_repeat_retrigger=True)) as sim:
        done = await bulkretry(
            "run", *files, *options, "-o", str(out), *FAST, base_url=sim.base_url, stdin=stdin
        )
        counts = sim.retrigger_counts()
    return done, counts, records(out)


def expect_sent(seen: Mapping[str, Sequence[str]], *, only: set[str] | None) -> set[str]:
    """Return the runs that must be sent once: those no line shows done or in doubt."""
    if only is None:
        return {run_id for run_id, said in seen.items() if said and RANK[best(said)] <= 1}
    return {run_id for run_id, said in seen.items() if said and best(said) in only}


@pytest.mark.parametrize("name", ARRANGEMENTS)
async def test_fed_back_results_in_any_order_send_only_what_no_line_shows_done(
    tmp_path: Path, name: str
) -> None:
    """Whatever the order of files and lines, the most advanced evidence per run decides."""
    files, stdin, with_bare = arrangement(name, tmp_path)
    seen = evidence()
    if not with_bare:
        seen = {run_id: [s for s in said if s != "bare"] for run_id, said in seen.items()}
    done, counts, rows = await feed_back(tmp_path, files, stdin)
    lines = sum(len(said) for said in seen.values())
    assert len(rows) == lines, done.err
    expected = expect_sent(seen, only=None)
    wrongly_sent = sorted({best(seen[r]) for r in counts} - {best(seen[r]) for r in expected})
    assert wrongly_sent == [], f"runs sent although a line says {wrongly_sent}\n{done.err}"
    assert set(counts) == expected, done.err
    assert set(counts.values()) <= {1}
    said_by_rows: dict[str, Counter[str]] = {}
    for row in rows:
        said_by_rows.setdefault(str(row["run_id"]), Counter())[str(row["outcome"])] += 1
    for run_id, said in seen.items():
        if not said:
            continue
        got = said_by_rows.get(run_id, Counter())
        if run_id in expected:
            assert got["retriggered"] == 1, (run_id, said, got)
        elif RANK[best(said)] == 3:
            assert got["already_retriggered"] >= 1, (run_id, said, got)
            assert got.keys().isdisjoint({"retriggered", "failed"}), (run_id, said, got)
        else:
            assert got["in_doubt"] >= 1, (run_id, said, got)
            assert got.keys().isdisjoint({"retriggered", "failed"}), (run_id, said, got)


@pytest.mark.parametrize("name", ON_STDIN)
async def test_fed_back_on_stdin_never_sends_after_evidence_and_reports_what_came_late(
    tmp_path: Path, name: str
) -> None:
    """On a pipe, no run is sent once a line showed it done or in doubt; earlier sends are named
    (a later in_doubt line names one too: it may have been re-triggered already)."""
    files, stdin, _ = arrangement(name, tmp_path)
    assert stdin is not None
    order = [orjson.loads(line) if line.startswith(b"{") else {"run_id": line.decode().strip()}
             for line in stdin.splitlines()]  # fmt: skip
    first_evidence: dict[str, int] = {}
    first_line: dict[str, int] = {}
    held_later: set[str] = set()
    for index, obj in enumerate(order):
        run_id, outcome = str(obj["run_id"]), str(obj.get("outcome", "bare"))
        first_line.setdefault(run_id, index)
        if RANK[outcome] >= 2:
            first_evidence.setdefault(run_id, index)
        if RANK[outcome] >= 2:
            held_later.add(run_id)
    done, counts, rows = await feed_back(tmp_path, files, stdin)
    assert len(rows) == len(order), done.err
    assert set(counts.values()) <= {1}
    for run_id in counts:  # sent only when no evidence had arrived yet
        assert first_line[run_id] < first_evidence.get(run_id, len(order)), run_id
    late = {run_id for run_id in counts if run_id in held_later}
    if name.startswith("bare IDs"):  # streamed: its first lines are sent before A and B come
        assert late, done.err
    if late:
        assert f"{len(late)} runs were sent before a later input line" in done.err
        assert done.code == 1
    late_rows = [row for row in rows if (row.get("error") or {}).get("kind") == "late_evidence"]
    assert {row["run_id"] for row in late_rows} == late


@pytest.mark.parametrize("name", ["A then B", "B then A"])
async def test_only_failed_sends_the_runs_whose_best_evidence_is_failed(
    tmp_path: Path, name: str
) -> None:
    """`--only failed` on two passes sends a run only if no line says more than failed."""
    files, stdin, _ = arrangement(name, tmp_path)
    seen = {run_id: [s for s in said if s != "bare"] for run_id, said in evidence().items()}
    done, counts, rows = await feed_back(tmp_path, files, stdin, "--only", "failed")
    assert len(rows) == sum(len(said) for said in seen.values()), done.err
    assert set(counts) == expect_sent(seen, only={"failed"}), done.err
    assert set(counts.values()) <= {1}


@pytest.mark.parametrize("via", ["a file", "stdin", "an empty file", "empty stdin"])
async def test_only_failed_on_plain_run_ids_is_a_usage_error(tmp_path: Path, via: str) -> None:
    """`--only failed` on input of bare run IDs, or on empty input, exits 2 and sends nothing."""
    ids = b"" if via.startswith("empty") or via == "an empty file" else id_lines(RUNS[:10])
    (tmp_path / "ids.txt").write_bytes(ids)
    files = [str(tmp_path / "ids.txt")] if via.endswith("file") else []
    async with Simulator(SimulatorConfig(run_ids=tuple(RUNS))) as sim:
        done = await bulkretry(
            "run",
            *files,
            "--only",
            "failed",
            "-o",
            str(tmp_path / "out.jsonl"),
            *FAST,
            base_url=sim.base_url,
            stdin=ids if via.endswith("stdin") else None,
        )
        sent = sim.endpoint_counts().get("re-trigger", 0)  # the pre-flight's GET aside
    assert done.code == 2, done.err
    assert sent == 0
    # One line, before anything runs: no summary of a batch of nothing ahead of the error.
    what = "the input holds no record" if not ids else "none of the 10 input lines is one"
    assert done.err.strip().splitlines() == [
        "bulkretry: error: --only needs results lines as input (JSON lines with an outcome); "
        + what
    ]


@pytest.mark.parametrize("how", ["empty stdin", "--resume"])
async def test_only_on_the_resume_of_a_state_file_is_a_usage_error(
    tmp_path: Path, how: str
) -> None:
    """--only selects by results lines in the input; a resume of --state reads none. It ran,
    skipped every run with no evidence on its line (fed back, those lines re-sent runs the
    state file held re-triggered), and exited 0: now it is refused before anything is sent,
    and the batch is left for a resume without --only."""
    state, out = str(tmp_path / "batch.db"), str(tmp_path / "out.jsonl")
    again_out = tmp_path / "again.jsonl"
    resume = ["--resume"] if how == "--resume" else []
    async with Simulator(SimulatorConfig(run_ids=tuple(RUNS))) as sim:
        first = await bulkretry(
            "run", "--state", state, "-o", out, *FAST, base_url=sim.base_url,
            stdin=id_lines(RUNS[:10]),
        )  # fmt: skip
        again = await bulkretry(
            "run", "--state", state, *resume, "-o", str(again_out), *FAST,
            base_url=sim.base_url, stdin=b"" if how == "empty stdin" else None,
            env={"BULKRETRY_ONLY": "failed"},
        )  # fmt: skip
        sent = sim.endpoint_counts().get("re-trigger", 0)
    assert first.code == 0, first.err
    assert again.code == 2, again.err
    assert again.err.strip().splitlines() == [
        "bulkretry: error: --only selects by the outcomes of results lines in the input, and "
        f"this resumes the batch of {state}, which reads none: drop --only to finish the "
        "batch, or give the results file of a pass as input"
    ]
    assert sent == 10
    assert not again_out.exists() or not again_out.read_bytes()


X = RUNS[0]
PASS1 = orjson.dumps(
    {"run_id": X, "outcome": "in_doubt", "attempts": 1, "ambiguous_attempts": 1,
     "finished_at": "2026-12-05T11:59:00.000Z"}
)  # fmt: skip
CHECKED = orjson.dumps(
    {"run_id": X, "outcome": "failed", "resolved_by": "check", "attempts": 1,
     "ambiguous_attempts": 1, "finished_at": "2026-12-05T12:00:00.000Z",
     "error": {"kind": "not_processed", "message": "no new run"}}
)  # fmt: skip
PASS2 = result_line(X, "retriggered", 1).rstrip(b"\n")


def piped(*lines: bytes) -> bytes:
    return b"".join(line + b"\n" for line in lines)


async def test_results_on_a_pipe_are_read_ahead_so_a_verdict_first_sends_nothing_done(
    tmp_path: Path,
) -> None:
    """`cat checked pass1 pass2 | run -`: check said X was not processed, pass 2 then sent it.
    Read as it came, the verdict released X and it was sent a second time (and reported late);
    a stdin that starts with a results line is read whole first, like FILE arguments."""
    done, counts, rows = await feed_back(tmp_path, [], piped(CHECKED, PASS1, PASS2))
    assert counts == {}, done.err
    assert sorted(str(row["outcome"]) for row in rows) == [
        "already_retriggered",
        "duplicate",
        "duplicate",
    ], done.err
    assert "late_evidence" not in done.err
    assert done.code == 0, done.err


async def test_a_check_verdict_after_the_pass_it_resolved_on_a_pipe_is_weighed_like_a_file(
    tmp_path: Path,
) -> None:
    """pass 1 left X in doubt, check found it not processed: `cat pass1 checked | run -` sends X
    once, as `run pass1 checked` does (the pipe is read ahead)."""
    done, counts, rows = await feed_back(tmp_path, [], piped(PASS1, CHECKED))
    assert counts == {X: 1}, done.err
    assert sorted(str(row["outcome"]) for row in rows) == ["duplicate", "retriggered"], done.err
    assert done.code == 0, done.err


async def test_a_check_verdict_on_a_pipe_led_by_run_ids_is_named_when_it_comes_late(
    tmp_path: Path,
) -> None:
    """A stdin of run IDs streams, so a verdict after the line that held its run in doubt can
    no longer release it: it is named on stderr and in its line (exit 1), not ignored."""
    other = f"{RUNS[1]}".encode()
    done, counts, rows = await feed_back(tmp_path, [], piped(other, PASS1, CHECKED))
    assert counts == {RUNS[1]: 1}, done.err
    said = sorted((str(row["outcome"]), str((row["error"] or {}).get("kind"))) for row in rows)
    assert said == [
        ("duplicate", "late_evidence"),
        ("in_doubt", "in_doubt"),
        ("retriggered", "None"),
    ]
    assert "1 verdict lines (resolved_by) came after their run was held" in done.err
    assert done.code == 1
