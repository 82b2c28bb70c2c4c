"""The check command: results lines and state files checked against the simulator's socket.

The check's wall clock is an hour ahead (its ``Checker`` is given one), as if it ran long after
the batch: no test waits for a window to settle.
"""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_list_cli import SIM_ENV, SimulatorThread

from bulkretry._cli.check import Checker, run_check
from bulkretry._cli.check_lines import plan
from bulkretry._cli.main import build_parser, main
from bulkretry._cli.watch_lines import read_lines
from bulkretry._io.source import RunIdValidator
from bulkretry._ledger.ledger import BatchIdentity, Ledger
from bulkretry._simulator import RecordedRequest, Simulator, SimulatorConfig

pytestmark = pytest.mark.e2e

DEAD = "http://127.0.0.1:9"
FAST = ["--rate", "1000", "--burst", "10"]
#: A batch that leaves lost answers in doubt, for check to resolve.
HOLD = [*FAST, "--on-ambiguous", "hold"]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with SimulatorThread(SimulatorConfig(seed=11, flows=4, runs_per_flow=3)) as s:
        yield s


def env_for(sim: Simulator, **extra: str) -> dict[str, str]:
    return {**SIM_ENV, "BULKRETRY_BASE_URL": sim.base_url, **extra}


def later(settings: Any) -> Checker:
    """A checker whose clock is an hour ahead: every window has long settled."""
    return Checker(settings, wall=lambda: time.time() + 3600)


def check(
    args: list[str],
    env: Mapping[str, str],
    *,
    stdin: io.BytesIO | None = None,
    checker: Callable[[Any], Checker] = later,
) -> tuple[int, str]:
    """Run ``bulkretry check ARGS`` in process; return its exit code and stderr."""
    words = ["check", *args]
    ns = build_parser(env, "check").parse_args(words)
    err = io.StringIO()
    code = run_check(ns, env, words, stdin=stdin, stderr=err, checker=checker)
    return code, err.getvalue()


def by_flow(sim: Simulator) -> list[list[str]]:
    """The seeded failed runs, grouped by flow."""
    groups: dict[str, list[str]] = {}
    for run_id in sim.failed_run_ids():
        run = sim.run(run_id)
        assert run is not None
        groups.setdefault(str(run["flowId"]), []).append(run_id)
    return list(groups.values())


def results_of(sim: Simulator, tmp_path: Path, scripts: dict[str, str | int], name: str) -> Path:
    """Send ``scripts``' runs with run (each answered as scripted); return the results file."""
    for run_id, answer in scripts.items():
        sim.script(run_id, [answer])
    ids = tmp_path / f"{name}.txt"
    ids.write_text("".join(f"{run_id}\n" for run_id in scripts))
    out = tmp_path / f"{name}.jsonl"
    main(["run", str(ids), "-o", str(out), "-q", *HOLD], env=env_for(sim))
    return out


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def posts(sim: Simulator, after: int = 0) -> list[str]:
    return [r.run_id or "" for r in sim.requests if r.method == "POST" and r.index > after]


def made(sim: Simulator) -> dict[str, str]:
    return {r.run_id: r.new_run_id for r in sim.retriggers}


def test_a_results_line_cut_off_on_the_wire_is_in_doubt_until_a_timeout_past_its_finish(
    tmp_path: Path,
) -> None:
    """A request a stop cut off may still land until its --timeout: its window ends that long
    after finished_at, as a state file's does; a lost answer's ends at finished_at."""
    cut, lost = (f"{i:08x}-1804-45d6-8d56-dd51f05c0baf" for i in (1, 2))
    common = {"outcome": "in_doubt", "attempts": 1, "finished_at": "2026-12-06T09:00:00.000Z"}
    results = tmp_path / "r.jsonl"
    results.write_bytes(
        orjson.dumps({"run_id": cut, **common, "error": {"kind": "interrupted"}})
        + b"\n"
        + orjson.dumps({"run_id": lost, **common, "ambiguous_attempts": 1})
        + b"\n"
    )
    found = plan(
        list(read_lines([str(results)], RunIdValidator())), lookback_ms=5_000, timeout_ms=30_000
    )
    at = 1_796_547_600_000  # 2026-12-06T09:00:00Z
    assert {d.run_id: (d.since_ms, d.until_ms) for d in found.doubts} == {
        cut: (at - 5_000, at + 30_000),
        lost: (at - 5_000, at),
    }


def test_lines_in_doubt_come_back_resolved_and_run_then_sends_only_the_unprocessed(
    sim: Simulator, tmp_path: Path
) -> None:
    """Lost after processing: retriggered with its run; a 500: not processed; fed back to run,
    only that one is sent again, once."""
    flows = by_flow(sim)
    lost, refused, clear = flows[0][0], flows[1][0], flows[2][0]
    results = results_of(sim, tmp_path, {lost: "in-doubt-502", refused: 500, clear: 200}, "r")
    out = tmp_path / "checked.jsonl"
    code, err = check([str(results), "-o", str(out), *FAST], env_for(sim))
    assert code == 0, err
    before = {line["run_id"]: line for line in lines_of(results)}
    assert [line["run_id"] for line in lines_of(out)] == list(before)  # in the input's order
    after = {line["run_id"]: line for line in lines_of(out)}
    assert after[clear] == before[clear]  # not in doubt: as it was
    assert after[lost]["outcome"] == "retriggered"
    assert after[lost]["new_run_id"] == made(sim)[lost]
    assert after[lost]["resolved_by"] == "lookup"
    assert (after[lost]["finished_at"], after[lost]["http_status"]) == (
        before[lost]["finished_at"],
        before[lost]["http_status"],
    )
    assert after[refused]["outcome"] == "failed"
    assert after[refused]["error"]["kind"] == "not_processed"
    assert "1 retriggered (1 with their new run" in err
    assert "1 not processed" in err
    mark = sim.request_count
    assert (
        main(["run", str(results), str(out), "-q", "-o", os.devnull, *HOLD], env=env_for(sim)) == 0
    )
    assert posts(sim, mark) == [refused]


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_a_run_sent_again_after_not_processed_and_lost_again_is_not_sent_a_third_time(
    sim: Simulator, tmp_path: Path, order: tuple[int, int, int]
) -> None:
    """The verdict settles the doubt it looked at, not the later one: fed back with the first
    pass, the verdict and the second pass (whose answer was lost after the run was made), in
    any order, the run stays in doubt and is not sent again."""
    run_id = by_flow(sim)[0][0]
    first = results_of(sim, tmp_path, {run_id: 500}, "r")
    checked = tmp_path / "checked.jsonl"
    assert check([str(first), "-o", str(checked), *FAST], env_for(sim))[0] == 0
    assert lines_of(checked)[0]["error"]["kind"] == "not_processed"
    sim.script(run_id, ["in-doubt-502"])  # processed, its answer lost
    second = tmp_path / "pass2.jsonl"
    main(["run", str(first), str(checked), "-q", "-o", str(second), *HOLD], env=env_for(sim))
    assert [line["outcome"] for line in lines_of(second)] == ["duplicate", "in_doubt"]
    assert list(made(sim)) == [run_id]
    mark = sim.request_count
    passes = [str(p) for p in (first, checked, second)]
    third = tmp_path / "pass3.jsonl"
    code = main(
        ["run", *(passes[i] for i in order), "-q", "-o", str(third), *HOLD], env=env_for(sim)
    )
    assert posts(sim, mark) == []
    assert code == 1
    outcomes = [line["outcome"] for line in lines_of(third)]
    assert sorted(outcomes) == ["duplicate", "duplicate", "duplicate", "in_doubt"]
    # The third pass held the run for the second pass's doubt: fed with the verdict alone, its
    # held line still outranks the older verdict.
    fourth = tmp_path / "pass4.jsonl"
    words = ["run", str(checked), str(third), "-q", "-o", str(fourth), *HOLD]
    assert main(words, env=env_for(sim)) == 1
    assert posts(sim, mark) == []
    assert [r.run_id for r in sim.retriggers] == [run_id]  # re-triggered once, never twice


def test_runs_in_doubt_of_one_flow_that_cannot_be_told_apart_stay_in_doubt(
    sim: Simulator, tmp_path: Path
) -> None:
    """One of two was processed, the other not, at the same moment: no guess, exit 1."""
    first, second = by_flow(sim)[0][:2]
    results = results_of(sim, tmp_path, {first: "in-doubt-500", second: 502}, "r")
    out = tmp_path / "checked.jsonl"
    code, err = check([str(results), "-o", str(out), *FAST], env_for(sim))
    assert code == 1
    assert [line["outcome"] for line in lines_of(out)] == ["in_doubt", "in_doubt"]
    assert all(made(sim)[first] in line["error"]["message"] for line in lines_of(out))
    assert "2 still in_doubt" in err


def test_a_run_another_line_shows_re_triggered_needs_no_look_up(
    sim: Simulator, tmp_path: Path
) -> None:
    """Its in-doubt line comes out already_retriggered with that line's run; no request."""
    run_id = sim.failed_run_ids()[0]
    in_doubt = {"run_id": run_id, "outcome": "in_doubt", "attempts": 1, "ambiguous_attempts": 1}
    done = {"run_id": run_id, "outcome": "retriggered", "new_run_id": "n-1", "etag": '"e"'}
    results = tmp_path / "r.jsonl"
    results.write_bytes(orjson.dumps(in_doubt) + b"\n" + orjson.dumps(done) + b"\n")
    out = tmp_path / "checked.jsonl"
    before = sim.request_count
    assert check([str(results), "-o", str(out)], env_for(sim))[0] == 0
    first, second = lines_of(out)
    assert (first["outcome"], first["new_run_id"], first["error"]) == (
        "already_retriggered",
        "n-1",
        None,
    )
    assert second == done
    assert sim.request_count == before


def test_input_with_nothing_in_doubt_is_written_back_without_a_request(
    sim: Simulator, tmp_path: Path
) -> None:
    """No in-doubt line: no pre-flight, every line as it was, exit 0; stdin works as '-'."""
    line = {"run_id": sim.failed_run_ids()[0], "outcome": "failed", "error": None}
    before = sim.request_count
    out = tmp_path / "checked.jsonl"
    stdin = io.BytesIO(orjson.dumps(line) + b"\n# a comment\n\n")
    code, err = check(["-", "-o", str(out)], env_for(sim), stdin=stdin)
    assert (code, lines_of(out)) == (0, [line])
    assert "no in_doubt record to check; 1 lines written" in err
    assert sim.request_count == before


def test_invalid_lines_and_bare_run_ids_keep_their_place_and_exit_1(
    sim: Simulator, tmp_path: Path
) -> None:
    results = tmp_path / "r.txt"
    results.write_text(f"not-a-run\n{sim.failed_run_ids()[0]}\n")
    out = tmp_path / "checked.jsonl"
    code, err = check([str(results), "-o", str(out)], env_for(sim))
    assert code == 1
    assert "(1 bare run IDs, not_checked: check reads run's results lines, or --state)" in err
    invalid, bare = lines_of(out)
    assert (invalid["outcome"], invalid["line"], invalid["error"]["kind"]) == (
        "invalid",
        1,
        "invalid_input",
    )
    assert (bare["outcome"], bare["line"], bare["error"]["kind"]) == ("skipped", 2, "not_checked")


def test_a_line_held_from_an_earlier_pass_names_no_window_and_stays_in_doubt(
    sim: Simulator, tmp_path: Path
) -> None:
    """attempts 0: this pass sent nothing, so its finished_at says nothing of the request."""
    held = {"run_id": sim.failed_run_ids()[0], "outcome": "in_doubt", "attempts": 0}
    results = tmp_path / "r.jsonl"
    results.write_bytes(orjson.dumps(held) + b"\n")
    out = tmp_path / "checked.jsonl"
    before = sim.request_count
    code, _ = check([str(results), "-o", str(out)], env_for(sim))
    [line] = lines_of(out)
    assert (code, line["outcome"]) == (1, "in_doubt")
    assert "does not say when its request was sent" in line["error"]["message"]
    assert sim.request_count == before  # nothing to ask: not even a pre-flight


def test_a_new_run_a_held_line_s_run_may_have_made_proves_no_other_run_re_triggered(
    sim: Simulator, tmp_path: Path
) -> None:
    """A resumed batch holds a run a killed pass sent (attempts 0: its time is not known).

    Its re-trigger is the only new run in the window of another run of its flow whose 502 was
    not processed: taken for that run's, the unprocessed run would never be sent (lost).
    """
    unsent, held = by_flow(sim)[0][:2]
    results = results_of(sim, tmp_path, {unsent: 502, held: "in-doubt-502"}, "r")
    lines = lines_of(results)
    for line in lines:
        if line["run_id"] == held:
            line.update(attempts=0, ambiguous_attempts=0, http_status=None)
    results.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    out = tmp_path / "checked.jsonl"
    code, _ = check([str(results), "-o", str(out), *FAST], env_for(sim))
    assert code == 1
    assert {line["run_id"]: line["outcome"] for line in lines_of(out)} == {
        unsent: "in_doubt",
        held: "in_doubt",
    }
    assert unsent not in made(sim)


def test_a_run_of_the_input_itself_is_never_taken_for_a_re_trigger(
    sim: Simulator, tmp_path: Path
) -> None:
    """An earlier batch's new run, failed and fed to this one, lies in a lost answer's window."""
    earlier, unsent = by_flow(sim)[0][:2]
    results_of(sim, tmp_path, {earlier: 200}, "first")
    refed = made(sim)[earlier]
    results = results_of(sim, tmp_path, {unsent: 502}, "second")
    failed = {"run_id": refed, "outcome": "failed", "attempts": 1, "error": {"kind": "http"}}
    results.write_bytes(results.read_bytes() + orjson.dumps(failed) + b"\n")
    out = tmp_path / "checked.jsonl"
    code, _ = check([str(results), "-o", str(out), *FAST], env_for(sim))
    assert code == 1
    assert lines_of(out)[0]["outcome"] == "in_doubt"
    assert refed in lines_of(out)[0]["error"]["message"]
    assert unsent not in made(sim)


def test_a_terminal_on_stdin_is_not_waited_for(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bulkretry check` typed alone: a usage error, not a hang."""

    class Terminal(io.BytesIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal())
    code, err = check([], {k: v for k, v in env_for(sim).items() if k != "BULKRETRY_STATE"})
    assert code == 2
    assert "--state PATH" in err


def test_state_and_results_together_are_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--state", str(tmp_path / "b.db"), "r.jsonl"], env=SIM_ENV) == 2
    assert "not both" in capsys.readouterr().err


def test_a_state_file_a_running_batch_holds_is_refused(
    sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 and one line saying why; nothing looked up."""
    path = str(tmp_path / "batch.db")
    identity = BatchIdentity(
        base_url=sim.base_url, org_id=SIM_ENV["BULKRETRY_ORG_ID"], sandbox="prod", op="re-trigger"
    )
    before = sim.request_count
    with Ledger.open(path, identity):
        assert main(["check", "--state", path], env=env_for(sim)) == 2
    assert "in use by a running batch" in capsys.readouterr().err
    assert sim.request_count == before


def test_check_state_records_verdicts_and_takes_the_batch_from_the_state_file(
    sim: Simulator, tmp_path: Path
) -> None:
    """No --base-url: the state file's; the verdicts land there; a line per run in doubt."""
    flows = by_flow(sim)
    lost, refused, clear = flows[0][0], flows[1][0], flows[2][0]
    for run_id, answer in {lost: "in-doubt-reset", refused: 504}.items():
        sim.script(run_id, [answer])
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{lost}\n{refused}\n{clear}\n")
    db = str(tmp_path / "batch.db")
    main(["run", str(ids), "--state", db, "-q", "-o", os.devnull, *HOLD], env=env_for(sim))
    out = tmp_path / "checked.jsonl"
    code, err = check(["--state", db, "-o", str(out)], SIM_ENV)
    assert code == 0, err
    lines = {line["run_id"]: line for line in lines_of(out)}
    assert set(lines) == {lost, refused}
    assert (lines[lost]["outcome"], lines[lost]["new_run_id"]) == ("retriggered", made(sim)[lost])
    assert (lines[lost]["source"], lines[lost]["line"]) == (db, 1)
    assert lines[refused]["error"]["kind"] == "not_processed"
    assert f"recorded in {db}" in err
    with Ledger.inspect(db) as ledger:
        counts = ledger.counts()
    assert (counts["retriggered"], counts["not_attempted"], counts["in_doubt"]) == (2, 1, 0)


def test_check_state_tells_apart_runs_of_one_flow_lost_a_moment_apart(tmp_path: Path) -> None:
    """Each run's window is its own request's, not the batch's: two runs of one flow lost 200
    ms apart, among clear answers that show the clocks agree, each get their own new run (with
    one window for all, neither could be told apart). A 504 not processed, more than check_skew
    after them and the last of the batch, is not_processed."""
    with SimulatorThread(SimulatorConfig(seed=5, flows=1, runs_per_flow=10)) as sim:
        runs = sim.failed_run_ids()
        lost = {runs[1]: "in-doubt-reset", runs[2]: "in-doubt-502", runs[9]: 504}
        for run_id, answer in lost.items():
            sim.script(run_id, [answer])
        ids = tmp_path / "ids.txt"
        ids.write_text("".join(f"{run_id}\n" for run_id in runs))
        db = str(tmp_path / "batch.db")
        pace = ["--rate", "5", "--burst", "1", "--concurrency", "1", "--on-ambiguous", "hold"]
        main(["run", str(ids), "--state", db, "-q", "-o", os.devnull, *pace], env=env_for(sim))
        out = tmp_path / "checked.jsonl"
        code, err = check(["--state", db, "-o", str(out)], SIM_ENV)
        assert code == 0, err
        lines = {line["run_id"]: line for line in lines_of(out)}
        assert set(lines) == set(lost)
        for run_id in (runs[1], runs[2]):  # processed, answer lost
            got = lines[run_id]
            assert (got["outcome"], got["new_run_id"]) == ("retriggered", made(sim)[run_id]), err
        assert lines[runs[9]]["error"]["kind"] == "not_processed", err


def test_a_state_file_verdict_fed_back_with_the_batch_s_results_releases_the_run(
    tmp_path: Path,
) -> None:
    """Lost (502, not processed), then refused cleanly: the run's results line is written after
    its answer was lost. check --state's not_processed line, fed back with it, sends it once."""
    with SimulatorThread(SimulatorConfig(seed=5, flows=1, runs_per_flow=3)) as sim:
        target = sim.failed_run_ids()[0]
        sim.script(target, [502, 400])
        ids, db = tmp_path / "ids.txt", str(tmp_path / "batch.db")
        ids.write_text(f"{target}\n")
        results, checked = tmp_path / "results.jsonl", tmp_path / "checked.jsonl"
        retry = ["--on-ambiguous", "retry", "--max-attempts", "2"]
        main(["run", str(ids), "--state", db, "-q", "-o", str(results), *retry], env=env_for(sim))
        assert [line["outcome"] for line in lines_of(results)] == ["in_doubt"]
        assert check(["--state", db, "-o", str(checked)], SIM_ENV)[0] == 0
        (verdict,) = lines_of(checked)
        assert verdict["error"]["kind"] == "not_processed"
        assert verdict["finished_at"] > lines_of(results)[0]["finished_at"]
        again = tmp_path / "again.jsonl"
        code = main(
            ["run", str(results), str(checked), "--dry-run", "-q", "-o", str(again)],
            env=env_for(sim),
        )
        assert code == 0
        assert [line["outcome"] for line in lines_of(again)] == ["would_retrigger", "duplicate"]


def test_a_doubt_fed_in_held_then_sent_again_by_bare_id_is_never_called_not_processed(
    tmp_path: Path,
) -> None:
    """Pass 0 (no state file) re-triggers X and loses the answer. Its results line, fed to a
    --state batch, holds X; X named again by a bare ID with --retry-in-doubt is refused with a
    502. Pass 0's request may have landed at any time: check --state cannot tell."""
    with SimulatorThread(SimulatorConfig(seed=5, flows=1, runs_per_flow=3)) as sim:
        x = sim.failed_run_ids()[0]
        env, db = env_for(sim), str(tmp_path / "batch.db")
        sim.script(x, ["in-doubt-502"])
        ids, first = tmp_path / "x.txt", tmp_path / "pass0.jsonl"
        ids.write_text(f"{x}\n")
        hold = ["--on-ambiguous", "hold", "-q", "-o", os.devnull]
        main(["run", str(ids), "--on-ambiguous", "hold", "-q", "-o", str(first)], env=env)
        main(["run", str(first), "--state", db, *hold], env=env)
        sim.script(x, [502])
        main(["run", str(ids), "--state", db, "--retry-in-doubt", *hold], env=env)
        assert x in made(sim)
        checked = tmp_path / "checked.jsonl"
        check(["--state", db, "-o", str(checked)], SIM_ENV)
        (line,) = lines_of(checked)
        assert line["outcome"] == "in_doubt", line


def test_refused_look_ups_exit_3_and_every_line_is_written_as_it_was(tmp_path: Path) -> None:
    """The pre-flight passes, then GET /runs/{id} answers 403: nothing is resolved."""

    def refuse(request: RecordedRequest) -> int | None:
        return 403 if request.method == "GET" and request.path.count("/") > 1 else None

    config = SimulatorConfig(seed=11, flows=2, runs_per_flow=1, on_request=refuse)
    with SimulatorThread(config) as sim:
        results = results_of(sim, tmp_path, {sim.failed_run_ids()[0]: "in-doubt-502"}, "r")
        out = tmp_path / "checked.jsonl"
        code, err = check([str(results), "-o", str(out)], env_for(sim))
    assert code == 3
    assert "stopped" in err
    assert lines_of(out) == lines_of(results)


def test_a_wrong_base_url_is_a_usage_error_before_any_line(tmp_path: Path) -> None:
    """The pre-flight names --base-url: exit 2, nothing written."""
    line = {"run_id": "4fb0418e-1804-45d6-8d56-dd51f05c0baf", "outcome": "in_doubt"}
    line |= {"attempts": 1, "ambiguous_attempts": 1, "finished_at": "2026-12-01T00:00:00Z"}
    results = tmp_path / "r.jsonl"
    results.write_bytes(orjson.dumps(line) + b"\n")
    out = tmp_path / "checked.jsonl"
    code, err = check([str(results), "-o", str(out)], {**SIM_ENV, "BULKRETRY_BASE_URL": DEAD})
    assert code == 2
    assert "--base-url" in err
    assert out.read_bytes() == b""


def test_an_interrupt_writes_every_line_as_it_was_and_exits_130(
    sim: Simulator, tmp_path: Path
) -> None:
    """SIGINT while looking: nothing resolved is written, nothing is lost."""

    class Interrupted(Checker):
        async def check(self, doubts: Any, claimed: Any, timed: Any = None) -> Any:
            os.kill(os.getpid(), signal.SIGINT)
            await __import__("asyncio").Event().wait()

    results = results_of(sim, tmp_path, {sim.failed_run_ids()[0]: "in-doubt-502"}, "r")
    out = tmp_path / "checked.jsonl"
    code, _ = check([str(results), "-o", str(out)], env_for(sim), checker=Interrupted)
    assert code == 130
    assert lines_of(out) == lines_of(results)


def test_help_has_a_description_examples_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser({}, "check").parse_args(["check", "--help"])
    text = capsys.readouterr().out
    assert "bulkretry check results.jsonl" in text.split("examples:")[1]
    assert "exit codes:" in text
    assert "None" not in text
    assert "BULKRETRY_CHECK_OUTPUT" in text


def test_check_options_read_their_own_variables_and_run_s(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """BULKRETRY_CHECK_OUTPUT is check's (no warning); --deadline is run's BULKRETRY_DEADLINE.
    A state file refused leaves no output file behind."""
    out = str(tmp_path / "c.jsonl")
    env = {"BULKRETRY_CHECK_OUTPUT": out, "BULKRETRY_DEADLINE": "60"}
    ns = build_parser(env, "check").parse_args(["check"])
    assert (ns.output, ns.deadline) == (out, 60.0)
    main(["check", "--state", "/nonexistent/b.db"], env={**SIM_ENV, **env})
    err = capsys.readouterr().err
    assert "unknown variable" not in err
    assert "does not exist" in err
    assert not (tmp_path / "c.jsonl").exists()


def test_a_flag_beats_the_option_the_state_file_keeps_for_its_batch(
    sim: Simulator, tmp_path: Path
) -> None:
    """--rate on the command line wins; without it, the batch's own --rate is used."""
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{sim.failed_run_ids()[0]}\n")
    db = str(tmp_path / "batch.db")
    main(["run", str(ids), "--state", db, "-q", "-o", os.devnull, *HOLD], env=env_for(sim))
    rates: list[float] = []

    def spy(settings: Any) -> Checker:
        rates.append(settings.rate)
        return later(settings)

    assert check(["--state", db, "--rate", "7", "-o", os.devnull], SIM_ENV, checker=spy)[0] == 0
    assert check(["--state", db, "-o", os.devnull], SIM_ENV, checker=spy)[0] == 0
    assert rates == [7.0, 1000.0]


def test_a_state_file_line_is_stamped_with_its_run_s_window_not_the_check_s_time() -> None:
    """Fed back, a verdict settles the doubts up to its finished_at: for a run of a state file
    that is the end of the window the look-up saw, not the moment check ran."""
    from bulkretry._cli.check_lines import state_line
    from bulkretry._ledger.resolutions import DoubtRow

    row = DoubtRow(
        seq=3,
        run_id="4fb0418e-1804-45d6-8d56-dd51f05c0baf",
        state="in_doubt",
        attempts=1,
        ambiguous=1,
        error=None,
        http_status=None,
        request_id=None,
        updated_at=1796472000.25,
        since=1796471990.0,
        until=1796472000.25,
    )
    # 10 ms past the window's end: the run's own results line, written microseconds after the
    # state file, must not read as a later doubt (it did, 1 ms later, in 1 run of 120).
    line = orjson.loads(state_line(row, None, "s.db"))
    assert line["finished_at"] == "2026-12-05T12:00:00.260Z"
    unknown = orjson.loads(state_line(dataclasses.replace(row, since=None, until=None), None, "s"))
    assert unknown["finished_at"] == "2026-12-05T12:00:00.260Z"  # its last write
    # Lost at 1.0 s before its last write (a clean refusal of the retry came later): the
    # run's own in-doubt line was written then, and the verdict must be later than that line.
    earlier = dataclasses.replace(row, until=1796471999.25)
    assert orjson.loads(state_line(earlier, None, "s"))["finished_at"] == "2026-12-05T12:00:00.260Z"
    flying = dataclasses.replace(row, until=1796472030.25)  # sent, its process died: + timeout
    assert orjson.loads(state_line(flying, None, "s"))["finished_at"] == "2026-12-05T12:00:30.260Z"
