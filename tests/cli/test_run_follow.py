"""``run --follow --rounds N`` end to end, against the simulator's socket and its fates.

The simulator decides how each line of re-triggered runs ends (``succeeds``, ``fails-once``,
``always-fails``) and counts every re-trigger of every run: a run sent twice shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_list_cli import SIM_ENV, SimulatorThread

from bulkretry._cli.main import main
from bulkretry._simulator import Simulator, SimulatorConfig

pytestmark = pytest.mark.e2e

FLOWS = 4
PER_FLOW = 6
#: Fast following: runs end at once, looked at every tenth of a second, rounds without delay.
QUICK = ["--poll", "0.05", "--round-delay", "0", "-q"]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A simulator whose runs end at once: a third fail once, a sixth always fail."""
    config = SimulatorConfig(
        seed=11,
        flows=FLOWS,
        runs_per_flow=PER_FLOW,
        run_duration=0.0,
        fate_shares={"fails-once": 0.34, "always-fails": 0.17},
    )
    with SimulatorThread(config) as s:
        yield s


def env_for(sim: Simulator) -> dict[str, str]:
    return {**SIM_ENV, "BULKRETRY_BASE_URL": sim.base_url}


def ids_file(sim: Simulator, tmp_path: Path) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(sim.failed_run_ids()) + "\n")
    return path


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def by_fate(sim: Simulator) -> Counter[str]:
    return Counter(sim.fate(run_id) for run_id in sim.failed_run_ids())


def test_rounds_retrigger_each_run_that_fails_again_until_it_succeeds_or_rounds_run_out(
    sim: Simulator, tmp_path: Path
) -> None:
    """fails-once ends success in 2 rounds, always-fails failed in 3, the rest success in 1."""
    fates = by_fate(sim)
    assert all(fates[f] for f in ("succeeds", "fails-once", "always-fails")), fates
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    args = ["run", str(ids_file(sim, tmp_path)), "-o", str(out), "--follow", "--rounds", "3"]
    code = main([*args, *QUICK, "--summary-json", str(summary)], env=env_for(sim))
    assert code == 1  # the always-fails lines ended failed
    lines = lines_of(out)
    assert sorted(line["run_id"] for line in lines) == sorted(sim.failed_run_ids())
    expected = {"succeeds": ("success", 1), "fails-once": ("success", 2)}
    expected["always-fails"] = ("failed", 3)
    for line in lines:
        final, rounds = expected[sim.fate(line["run_id"])]
        assert (line["final_status"], line["rounds"]) == (final, rounds), line
        assert len(line["chain"]) == rounds
        assert line["new_run_id"] == line["chain"][-1]
        assert line["outcome"] == "retriggered"
        assert "next_round" not in line
        if final == "failed":
            assert line["final_error"][0]["code"]
    counts = sim.retrigger_counts()
    assert max(counts.values()) == 1, "a run was re-triggered twice"
    # Every run re-triggered is an input run or a chain's run that failed (never the last one).
    sent = {run_id for line in lines for run_id in [line["run_id"], *line["chain"][:-1]]}
    assert set(counts) == sent
    followed = orjson.loads(summary.read_bytes())["followed"]
    assert followed["final_status"] == {
        "success": fates["succeeds"] + fates["fails-once"],
        "failed": fates["always-fails"],
        "partial": 0,
        "unknown": 0,
    }
    assert followed["further_rounds"] == fates["fails-once"] + 2 * fates["always-fails"]
    # Look-ups share listings: fewer requests than runs followed.
    runs_followed = sum(line["rounds"] for line in lines)
    assert 0 < followed["lookups"] < runs_followed


def test_one_round_follows_every_new_run_and_never_retriggers_again(
    sim: Simulator, tmp_path: Path
) -> None:
    """--rounds 1 (the default): a new run that fails is reported failed, not sent again."""
    out = tmp_path / "out.jsonl"
    code = main(
        ["run", str(ids_file(sim, tmp_path)), "-o", str(out), "--follow", *QUICK], env=env_for(sim)
    )
    assert code == 1
    lines = lines_of(out)
    for line in lines:
        failing = sim.fate(line["run_id"]) != "succeeds"
        assert line["final_status"] == ("failed" if failing else "success"), line
        assert line["chain"] == [line["new_run_id"]]
        assert line["rounds"] == 1
    assert set(sim.retrigger_counts().values()) == {1}
    assert len(sim.retrigger_counts()) == len(lines)


def test_every_new_run_succeeding_exits_0_and_lines_not_retriggered_say_null(
    tmp_path: Path,
) -> None:
    """Exit 0 only when every valid record ended success; an invalid line has final_status null."""
    config = SimulatorConfig(seed=3, flows=2, runs_per_flow=3, run_duration=0.0)
    with SimulatorThread(config) as sim:
        ids = tmp_path / "ids.txt"
        ids.write_text("\n".join(sim.failed_run_ids()) + "\n")
        out = tmp_path / "out.jsonl"
        args = ["run", str(ids), "-o", str(out), "--follow", *QUICK]
        assert main(args, env=env_for(sim)) == 0
        assert {line["final_status"] for line in lines_of(out)} == {"success"}
        ids.write_text(ids.read_text() + "not-a-run-id\n")
        assert main([*args, "--overwrite"], env=env_for(sim)) == 1
    invalid = [line for line in lines_of(out) if line["outcome"] == "invalid"]
    assert len(invalid) == 1
    assert invalid[0]["final_status"] is None
    assert invalid[0]["chain"] == []
    assert invalid[0]["rounds"] == 0


def test_a_run_still_going_at_the_follow_timeout_is_final_status_unknown(tmp_path: Path) -> None:
    """Runs that never end in time: unknown, exit 1, and never re-triggered again."""
    config = SimulatorConfig(seed=4, flows=1, runs_per_flow=3, run_duration=3600.0)
    with SimulatorThread(config) as sim:
        out = tmp_path / "out.jsonl"
        args = ["run", str(ids_file(sim, tmp_path)), "-o", str(out), "--follow", "--rounds", "2"]
        code = main([*args, *QUICK, "--follow-timeout", "0.3"], env=env_for(sim))
        counts = sim.retrigger_counts()
    assert code == 1
    lines = lines_of(out)
    assert len(lines) == 3
    assert {line["final_status"] for line in lines} == {"unknown"}
    assert all(line["chain"] == [line["new_run_id"]] for line in lines)
    assert set(counts.values()) == {1}


@pytest.mark.parametrize(
    "extra",
    [["--rounds", "3"], ["--round-delay", "5"], ["--poll", "2"], ["--follow-timeout", "9"]],
)
def test_a_follow_option_without_follow_is_a_usage_error(
    extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--rounds and the rest mean nothing without --follow: exit 2 before any request."""
    ids = tmp_path / "ids.txt"
    ids.write_text("00000001-1804-45d6-8d56-dd51f05c0baf\n")
    env = {**SIM_ENV, "BULKRETRY_BASE_URL": "http://127.0.0.1:9"}
    assert main(["run", str(ids), *extra], env=env) == 2
    assert "--follow" in capsys.readouterr().err


def test_follow_with_dry_run_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dry run re-triggers nothing, so there is nothing to follow: exit 2."""
    ids = tmp_path / "ids.txt"
    ids.write_text("00000001-1804-45d6-8d56-dd51f05c0baf\n")
    assert main(["run", str(ids), "--follow", "--dry-run"], env=SIM_ENV) == 2
    assert "--dry-run" in capsys.readouterr().err


@pytest.fixture
def failing_sim() -> Iterator[Simulator]:
    """A simulator whose re-triggered runs all fail, and which accepts repeats (they show)."""
    config = SimulatorConfig(
        seed=12,
        flows=2,
        runs_per_flow=3,
        run_duration=0.0,
        fate_shares={"always-fails": 1.0},
        allow_repeat_retrigger=True,
    )
    with SimulatorThread(config) as s:
        yield s


@pytest.mark.parametrize("with_state", [False, True])
def test_results_fed_back_beside_their_new_runs_send_no_run_twice(
    failing_sim: Simulator, tmp_path: Path, with_state: bool
) -> None:
    """Pass 2 reads pass 1's lines (A -> B, B failed) and B itself (from list-failed): A's chain
    may send B as a round, B's own line may send B: only one of them does."""
    sim = failing_sim
    pass1 = tmp_path / "pass1.jsonl"
    ids = ids_file(sim, tmp_path)
    assert main(["run", str(ids), "-o", str(pass1), "--follow", *QUICK], env=env_for(sim)) == 1
    news = tmp_path / "new.txt"
    news.write_text("".join(line["new_run_id"] + "\n" for line in lines_of(pass1)))
    out = tmp_path / "pass2.jsonl"
    state = ["--state", str(tmp_path / "s.db")] if with_state else []
    args = ["run", str(pass1), str(news), "-o", str(out), "--follow", "--rounds", "3", *state]
    assert main([*args, *QUICK], env=env_for(sim)) == 1
    counts = sim.retrigger_counts()
    assert max(counts.values()) == 1, {k: n for k, n in counts.items() if n > 1}
    lines = lines_of(out)
    assert len(lines) == 2 * len(sim.failed_run_ids())  # one line per input line
    for line in lines:
        if line["run_id"] in sim.failed_run_ids():
            # A's chain could not send B (B's own line did): it says whose line that is.
            assert line["next_round"]["outcome"] == "duplicate", line
            assert line["final_status"] == "failed"


@pytest.mark.parametrize("with_state", [False, True])
def test_a_line_fed_back_with_its_chain_goes_on_from_it_and_never_resends_a_doubt(
    failing_sim: Simulator, tmp_path: Path, with_state: bool
) -> None:
    """A chain fed back counts its rounds; a round that may have landed (in doubt, or
    re-triggered with no run named) is not sent; a run a chain re-triggered is never sent
    again, whether an input line names it or another chain reaches it."""
    sim = failing_sim
    a, b, c, d, e, f = sim.failed_run_ids()[:6]

    def line(run_id: str, chain: list[str], next_round: str | None = None) -> str:
        obj: dict[str, object] = {
            "run_id": run_id,
            "outcome": "retriggered",
            "new_run_id": chain[-1],
            "chain": chain,
        }
        if next_round is not None:
            obj["next_round"] = {"outcome": next_round, "error": None}
        return orjson.dumps(obj).decode() + "\n"

    fed = tmp_path / "fed.jsonl"
    fed.write_text(line(a, [b, c]) + line(d, [e], "in_doubt") + line(f, [c], "retriggered"))
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{b}\n")  # a run a's chain re-triggered (into c), named on its own line
    out = tmp_path / "out.jsonl"
    state = ["--state", str(tmp_path / "s.db")] if with_state else []
    args = ["run", str(fed), str(ids), "-o", str(out), "--follow", "--rounds", "3", *state]
    assert main([*args, *QUICK], env=env_for(sim)) == 1
    # c is a's chain's last run, failed: one further round (a's rounds: 2 of 3) may send it;
    # f's line says a round of c may have landed already: so nothing sends c; e is in doubt.
    assert sim.retrigger_counts() == {}
    by_run = {line["run_id"]: line for line in lines_of(out)}
    assert by_run[a]["chain"] == [b, c]
    assert by_run[a]["final_status"] == "unknown"  # c's round may have landed (f's line)
    assert by_run[a]["next_round"]["outcome"] in ("in_doubt", "duplicate")
    assert by_run[d]["final_status"] == "unknown"
    assert by_run[d]["next_round"]["outcome"] == "in_doubt"
    assert by_run[f]["final_status"] == "unknown"
    # Named by a line and re-triggered by a chain: never sent (told as either, by order).
    assert by_run[b]["outcome"] in ("duplicate", "already_retriggered")


def test_list_failed_then_run_after_a_follow_batch_sends_no_run_twice(
    failing_sim: Simulator, tmp_path: Path
) -> None:
    """README's pipeline again after --follow --rounds 2 --state: the rounds' runs are known."""
    sim = failing_sim
    state = str(tmp_path / "s.db")
    first = ["run", str(ids_file(sim, tmp_path)), "--state", state, "-o", str(tmp_path / "1")]
    assert main([*first, "--follow", "--rounds", "2", *QUICK], env=env_for(sim)) == 1
    listed = tmp_path / "listed.txt"
    listing = ["list-failed", "--all-flows", "--state", state, "-o", str(listed), "-q"]
    assert main(listing, env=env_for(sim)) in (0, 1)
    again = ["run", str(listed), "--state", state, "-o", str(tmp_path / "2"), *QUICK[-1:]]
    assert main(again, env=env_for(sim)) in (0, 1)
    counts = sim.retrigger_counts()
    assert max(counts.values()) == 1, {k: n for k, n in counts.items() if n > 1}


def test_follow_options_from_variables_wait_for_a_batch_with_follow(tmp_path: Path) -> None:
    """A profile or variable may hold --rounds for the batches that follow: no usage error."""
    ids = tmp_path / "ids.txt"
    ids.write_text("00000001-1804-45d6-8d56-dd51f05c0baf\n")
    env = {**SIM_ENV, "BULKRETRY_ROUNDS": "3", "BULKRETRY_POLL": "5"}
    assert main(["run", str(ids), "--dry-run", "-o", str(tmp_path / "o")], env=env) == 0


def test_status_counts_further_rounds_apart_from_the_input(
    failing_sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status --format json: the input's runs as before, the rounds' runs in further_rounds."""
    sim = failing_sim
    state = str(tmp_path / "s.db")
    first = ["run", str(ids_file(sim, tmp_path)), "--state", state, "-o", str(tmp_path / "1")]
    assert main([*first, "--follow", "--rounds", "2", *QUICK], env=env_for(sim)) == 1
    capsys.readouterr()
    assert main(["status", "--state", state, "--format", "json"], env={}) in (0, 1)
    summary = orjson.loads(capsys.readouterr().out)
    runs = len(sim.failed_run_ids())
    assert summary["outcomes"]["retriggered"] == runs
    rounds = summary["further_rounds"]
    assert rounds["retriggered"] == runs  # every run failed again: one further round each
    assert rounds["in_doubt"] == 0
    assert set(rounds) >= {"pending", "retriggered", "failed", "in_doubt", "not_attempted"}
