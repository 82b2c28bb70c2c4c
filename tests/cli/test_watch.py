"""The watch command end to end: results of run fed to watch, against the simulator's socket."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_list_cli import SIM_ENV, SimulatorThread

from bulkretry._cli.main import build_parser, main
from bulkretry._simulator import Simulator, SimulatorConfig

pytestmark = pytest.mark.e2e

FLOWS = 3
PER_FLOW = 4


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A simulator whose re-triggered runs end at once, about a third failing once (by fate)."""
    config = SimulatorConfig(
        seed=5,
        flows=FLOWS,
        runs_per_flow=PER_FLOW,
        run_duration=0.0,
        fate_shares={"fails-once": 0.34},
    )
    with SimulatorThread(config) as s:
        yield s


def failing(sim: Simulator) -> set[str]:
    return {run_id for run_id in sim.failed_run_ids() if sim.fate(run_id) == "fails-once"}


def env_for(sim: Simulator) -> dict[str, str]:
    return {**SIM_ENV, "BULKRETRY_BASE_URL": sim.base_url}


def results_of(sim: Simulator, tmp_path: Path, ids: list[str]) -> Path:
    """Re-trigger ``ids`` with run; return its results file."""
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    out = tmp_path / "results.jsonl"
    assert main(["run", str(ids_file), "-o", str(out), "-q"], env=env_for(sim)) == 0
    return out


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_watch_gives_each_results_line_its_new_runs_final_status(
    sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fates decide: fails-once lines end failed with an error, the others success; exit 1."""
    ids = sim.failed_run_ids()
    results = results_of(sim, tmp_path, ids)
    retriggers = sum(sim.retrigger_counts().values())
    before = sim.endpoint_counts()
    out = tmp_path / "final.jsonl"
    code = main(["watch", str(results), "-o", str(out)], env=env_for(sim))
    assert code == 1
    lines = lines_of(out)
    assert len(lines) == len(ids)
    by_run = {line["run_id"]: line for line in lines}
    failed = failing(sim)
    assert 0 < len(failed) < len(ids)
    for run_id, line in by_run.items():
        assert line["outcome"] == "retriggered"
        assert line["chain"] == [line["new_run_id"]]
        assert line["rounds"] == 1
        if run_id in failed:
            assert line["final_status"] == "failed"
            assert line["final_error"][0]["code"]
        else:
            assert line["final_status"] == "success"
            assert "final_error" not in line
    # Watch only looked: not one re-trigger more.
    assert sum(sim.retrigger_counts().values()) == retriggers
    after = sim.endpoint_counts()
    assert after.get("re-trigger", 0) == before.get("re-trigger", 0)
    lookups = after["list-runs"] + after.get("get-run", 0)
    lookups -= before.get("list-runs", 0) + before.get("get-run", 0)
    assert lookups == 2  # the pre-flight and one listing page
    err = capsys.readouterr().err
    assert (
        f"{len(ids)} runs followed: {len(ids) - len(failed)} success, {len(failed)} failed" in err
    )


def test_watch_exits_0_when_every_new_run_succeeded(sim: Simulator, tmp_path: Path) -> None:
    """Only the lines whose runs succeed: exit 0, every line success."""
    ids = [run_id for run_id in sim.failed_run_ids() if run_id not in failing(sim)]
    results = results_of(sim, tmp_path, ids)
    out = tmp_path / "final.jsonl"
    assert main(["watch", str(results), "-o", str(out), "-q"], env=env_for(sim)) == 0
    assert Counter(line["final_status"] for line in lines_of(out)) == {"success": len(ids)}


def test_lines_never_retriggered_and_invalid_lines_keep_their_place(
    sim: Simulator, tmp_path: Path
) -> None:
    """A failed line gets final_status null, a bare ID is skipped, garbage is invalid: exit 1."""
    ids = [run_id for run_id in sim.failed_run_ids() if run_id not in failing(sim)][:2]
    results = results_of(sim, tmp_path, ids)
    others = [run_id for run_id in sim.failed_run_ids() if run_id not in ids]
    failed = {"run_id": others[0], "outcome": "failed", "new_run_id": None}
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(
        results.read_bytes()
        + orjson.dumps(failed)
        + b"\nnot-a-run-id\n# a comment\n"
        + others[1].encode()
        + b"\n"
    )
    out = tmp_path / "final.jsonl"
    assert main(["watch", str(mixed), "-o", str(out), "-q"], env=env_for(sim)) == 1
    lines = lines_of(out)
    assert len(lines) == 5
    outcomes = Counter((line["outcome"], line["final_status"]) for line in lines)
    assert outcomes == {
        ("retriggered", "success"): 2,
        ("failed", None): 1,
        ("invalid", None): 1,
        ("skipped", None): 1,
    }
    invalid = next(line for line in lines if line["outcome"] == "invalid")
    assert (invalid["source"], invalid["line"], invalid["error"]["kind"]) == (
        str(mixed),
        4,
        "invalid_input",
    )


def test_watch_reads_stdin_and_follows_a_chain_from_its_last_run(
    sim: Simulator, tmp_path: Path
) -> None:
    """A line's chain continues from its last element; stdin works as '-' does."""
    ids = [run_id for run_id in sim.failed_run_ids() if run_id not in failing(sim)][:1]
    [line] = lines_of(results_of(sim, tmp_path, ids))
    line["chain"] = ["0a5b6c7d-1804-45d6-8d56-dd51f05c0baf", line["new_run_id"]]
    from bulkretry._cli import watch

    ns = build_parser(env_for(sim), "watch").parse_args(["watch", "-"])
    out = tmp_path / "final.jsonl"
    ns.output = str(out)
    stdin = io.BytesIO(orjson.dumps(line) + b"\n")
    assert watch.run_watch(ns, env_for(sim), stdin=stdin) == 0
    [done] = lines_of(out)
    assert done["chain"] == line["chain"]
    assert (done["rounds"], done["final_status"]) == (2, "success")


def test_a_wrong_base_url_is_a_usage_error_before_any_line(
    sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pre-flight names --base-url and nothing is written: exit 2."""
    results = results_of(sim, tmp_path, sim.failed_run_ids()[:1])
    env = {**env_for(sim), "BULKRETRY_BASE_URL": sim.origin + "/nothing-here"}
    out = tmp_path / "final.jsonl"
    assert main(["watch", str(results), "-o", str(out)], env=env) == 2
    assert "--base-url" in capsys.readouterr().err
    assert out.read_bytes() == b""


def test_watch_options_read_their_own_variables() -> None:
    """BULKRETRY_WATCH_POLL and _FOLLOW_TIMEOUT; --rate is run's BULKRETRY_RATE."""
    env = {
        "BULKRETRY_WATCH_POLL": "5",
        "BULKRETRY_WATCH_FOLLOW_TIMEOUT": "60",
        "BULKRETRY_WATCH_OUTPUT": "w.jsonl",
        "BULKRETRY_OUTPUT": "not-for-watch.jsonl",
        "BULKRETRY_RATE": "3",
    }
    ns = build_parser(env, "watch").parse_args(["watch"])
    assert (ns.poll, ns.follow_timeout, ns.output, ns.rate) == (5.0, 60.0, "w.jsonl", 3.0)
    assert build_parser({}, "watch").parse_args(["watch"]).poll == 30.0


def test_a_bad_poll_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--poll 0 is refused with one line, exit 2."""
    with pytest.raises(SystemExit) as stopped:
        main(["watch", "--poll", "0"], env={})
    assert stopped.value.code == 2
    assert "--poll" in capsys.readouterr().err


def test_bare_run_ids_alone_exit_1_and_stderr_says_to_feed_run_results(
    sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bare IDs carry nothing to follow: every line skipped, no look-up, exit 1 and why (-q too)."""
    ids = sim.failed_run_ids()[:3]
    bare = tmp_path / "ids.txt"
    bare.write_text("\n".join(ids) + "\n")
    before = sim.endpoint_counts()
    out = tmp_path / "final.jsonl"
    assert main(["watch", str(bare), "-o", str(out), "-q"], env=env_for(sim)) == 1
    lines = lines_of(out)
    assert [line["run_id"] for line in lines] == ids
    for line in lines:
        assert (line["outcome"], line["final_status"]) == ("skipped", None)
        assert line["error"]["kind"] == "not_retriggered"
    assert sim.endpoint_counts() == before
    err = capsys.readouterr().err
    assert "3 bare run IDs skipped, so not success" in err
    assert "feed watch the results file of `bulkretry run`" in err


def test_a_line_retriggered_with_candidates_is_unknown_not_never_retriggered(
    sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check's candidates (re-triggered, new run not told) give final_status unknown: exit 1."""
    ids = [run_id for run_id in sim.failed_run_ids() if run_id not in failing(sim)][:1]
    results = results_of(sim, tmp_path, ids)
    other = next(run_id for run_id in sim.failed_run_ids() if run_id not in ids)
    candidates = ["0a5b6c7d-1804-45d6-8d56-dd51f05c0baf", "1b6c7d8e-2915-46e7-9e67-ee62a16d1cb0"]
    ambiguous = {
        "run_id": other,
        "outcome": "retriggered",
        "new_run_id": None,
        "resolved_by": "lookup",
        "candidates": candidates,
        "error": {"kind": "ambiguous_match", "message": "which new run is this one's: unknown"},
    }
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(results.read_bytes() + orjson.dumps(ambiguous) + b"\n")
    out = tmp_path / "final.jsonl"
    assert main(["watch", str(mixed), "-o", str(out)], env=env_for(sim)) == 1
    # Lines are written as their runs end: the one not followed comes first.
    by_run = {line["run_id"]: line for line in lines_of(out)}
    assert by_run.keys() == {ids[0], other}
    assert by_run[ids[0]]["final_status"] == "success"
    told = by_run[other]
    assert (told["outcome"], told["final_status"]) == ("retriggered", "unknown")
    assert (told["chain"], told["rounds"], told["candidates"]) == ([], 0, candidates)
    err = capsys.readouterr().err
    assert "1 runs followed: 1 success, 0 failed, 0 partial, 0 unknown" in err
    assert "1 lines re-triggered, but which new run is theirs is not known" in err
    assert "never re-triggered" not in err


@pytest.mark.parametrize("further", ["in_doubt", "retriggered"])
def test_a_chain_whose_further_round_may_have_landed_is_unknown_not_its_last_run_s_end(
    sim: Simulator, tmp_path: Path, further: str
) -> None:
    """run --follow's line: the chain's last run failed, then a further round may have made a
    run no line names. Its end is unknown, as --follow writes it; the chain is kept."""
    ids = [run_id for run_id in sim.failed_run_ids() if run_id not in failing(sim)][:1]
    results = results_of(sim, tmp_path, ids)
    line = lines_of(results)[0]
    line["chain"] = [line["new_run_id"]]
    line["next_round"] = {"outcome": further, "error": None}
    fed = tmp_path / "followed.jsonl"
    fed.write_bytes(orjson.dumps(line) + b"\n")
    before = sim.endpoint_counts()
    out = tmp_path / "final.jsonl"
    assert main(["watch", str(fed), "-o", str(out), "-q"], env=env_for(sim)) == 1
    (written,) = lines_of(out)
    assert (written["final_status"], written["chain"]) == ("unknown", [line["new_run_id"]])
    assert written["next_round"] == line["next_round"]
    assert sim.endpoint_counts().get("list-runs", 0) == before.get("list-runs", 0)
