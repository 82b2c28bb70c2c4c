"""run --shard K/N: a typo is a usage error, each shard takes its part of the rate and of the
input, says so, and a state file keeps its batch's shard."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_list_cli import SIM_ENV, SimulatorThread

from bulkretry._cli.batch_input import BatchInput
from bulkretry._cli.build import build_settings
from bulkretry._cli.main import build_parser, main
from bulkretry._exceptions import ConfigurationError
from bulkretry._io.shard import Shard
from bulkretry._io.source import InputRecord
from bulkretry._simulator import SimulatorConfig

DEAD = {**SIM_ENV, "BULKRETRY_BASE_URL": "http://127.0.0.1:9"}


def uuid(i: int) -> str:
    return f"{i:08x}-1804-45d6-8d56-dd51f05c0baf"


def owner(run_id: str) -> int:
    """The shard of two that takes ``run_id``."""
    record = InputRecord("-", 1, run_id, "")
    return next(k for k in (1, 2) if Shard(k, 2).owns(record))


def records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def input_file(tmp_path: Path, n: int = 300) -> tuple[Path, int]:
    """Run IDs with invalid lines, duplicates and comments among them; and its record count."""
    lines = [uuid(i) for i in range(n)]
    lines += ["# a comment", "", "not-a-run", "{broken json", uuid(5).upper(), uuid(6)]
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, n + 4


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--shard", "5/4"], {}), (["--shard", "two"], {}), ([], {"BULKRETRY_SHARD": "1-4"})],
)
def test_a_shard_that_is_not_k_of_n_is_a_usage_error_before_anything_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], env: dict[str, str]
) -> None:
    ids, _ = input_file(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["run", str(ids), "--dry-run", *args], env={**DEAD, **env})
    code = exited.value.code
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "expected K/N" in captured.err


@pytest.mark.parametrize(("burst", "bursts"), [("6", [2, 2, 1, 1]), ("2", [1, 1, 1, 1])])
def test_each_shard_takes_its_part_of_the_rate_burst_and_max_retriggers(
    burst: str, bursts: list[int]
) -> None:
    """The parts add up to what was given (a burst is at least 1): 4 shards of --rate 200,
    --max-retriggers 10; and each knows it splits a quota declared by headers four ways."""
    parts = []
    for k in range(1, 5):
        words = ["run", "--dry-run", "--rate", "200", "--max-retriggers", "10", "--burst", burst]
        ns = build_parser({}, "run").parse_args([*words, "--shard", f"{k}/4"])
        parts.append(build_settings(ns, {}, warn=print))
    assert [s.rate for s in parts] == [50.0] * 4
    assert [s.max_retriggers for s in parts] == [3, 3, 2, 2]
    assert [s.burst for s in parts] == bursts
    assert {s.processes for s in parts} == {4}


def test_further_rounds_are_refused_with_shards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A further round of one shard's chain may be a run another shard's input names: both
    would send it. --follow alone, or one shard of one, is fine."""
    ids, _ = input_file(tmp_path)
    common = ["run", str(ids), "--follow"]
    assert main([*common, "--rounds", "2", "--shard", "1/2"], env=DEAD) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--rounds 2 with --shard" in err
    for fine in (["--shard", "1/2"], ["--rounds", "2", "--shard", "1/1"]):
        ns = build_parser(DEAD, "run").parse_args([*common, *fine])
        assert build_settings(ns, DEAD, warn=print).follow


def test_only_in_a_shard_that_owns_no_results_line_is_no_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One results line in the input: the shards that do not own it saw it all the same, so
    --only is not "over input that holds no results line" for them."""
    results = tmp_path / "res.jsonl"
    results.write_bytes(orjson.dumps({"run_id": uuid(1000), "outcome": "failed"}) + b"\n")
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(uuid(i) + "\n" for i in range(12)))
    codes = []
    for k in (1, 2, 3):
        words = ["run", "--dry-run", "--only", "failed", str(results), str(ids)]
        codes.append(main([*words, "--shard", f"{k}/3", "-o", str(tmp_path / f"{k}")], env=DEAD))
    assert codes == [0, 0, 0], capsys.readouterr().err
    rows = [row for k in (1, 2, 3) for row in records(tmp_path / f"{k}")]
    assert Counter(row["outcome"] for row in rows) == {"would_retrigger": 1, "skipped": 12}


def test_check_ignores_a_shard_in_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check --state has no --shard: a BULKRETRY_SHARD meant for run is no crash there."""
    ids, _ = input_file(tmp_path, 3)
    state = tmp_path / "s.db"
    main(["run", str(ids), "--state", str(state), "--shard", "1/1", "-o", "-"], env=DEAD)
    capsys.readouterr()
    code = main(["check", "--state", str(state)], env={**DEAD, "BULKRETRY_SHARD": "2/2"})
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "AttributeError" not in err
    assert code in (0, 1, 3), err


def test_a_shard_that_max_retriggers_leaves_nothing_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = build_parser({}, "run").parse_args(
        ["run", "--dry-run", "--max-retriggers", "2", "--shard", "3/4"]
    )
    with pytest.raises(ConfigurationError, match="leaves shard 3 none: give at least 4"):
        build_settings(ns, {}, warn=print)
    ids, _ = input_file(tmp_path)
    assert main(["run", str(ids), "--max-retriggers", "2", "--shard", "4/4"], env=DEAD) == 2


def test_dry_run_shards_write_every_line_once_between_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Invalid lines and duplicates too: each is some shard's, and only that shard's; each
    shard says what it took and what it left, in words and in the summary object."""
    ids, total = input_file(tmp_path)
    rows: list[dict[str, Any]] = []
    taken = 0
    for k in (1, 2, 3):
        out, summary = tmp_path / f"{k}.jsonl", tmp_path / f"{k}.json"
        words = ["run", str(ids), "--dry-run", "--shard", f"{k}/3", "-o", str(out)]
        code = main([*words, "--summary-json", str(summary)], env=DEAD)
        mine = records(out)
        assert code == (1 if "invalid" in {row["outcome"] for row in mine} else 0)
        rows += mine
        shard = orjson.loads(summary.read_bytes())["shard"]
        assert shard == {"index": k, "count": 3, "records": len(mine), "others": total - len(mine)}
        err = capsys.readouterr().err
        line = f"shard {k}/3: {len(mine)} records of the input, {total - len(mine)} left to the "
        assert line + "other 2 shards" in err
        taken += len(mine)
        assert 0 < len(mine) < total
    assert taken == total
    assert sorted(row["line"] for row in rows) == sorted({row["line"] for row in rows})
    assert len(rows) == total
    outcomes = Counter(row["outcome"] for row in rows)
    assert outcomes == {"would_retrigger": 300, "invalid": 2, "duplicate": 2}


async def test_the_progress_total_of_a_shard_counts_its_records_only(tmp_path: Path) -> None:
    ids, total = input_file(tmp_path)
    ns = build_parser({}, "run").parse_args(["run", "--shard", "2/3"])
    source = BatchInput(
        [str(ids)], run_id_pattern=ns.run_id_pattern, reads_input=True, ledger=None, shard=ns.shard
    )
    yielded = sum([len(batch) async for batch in source.batches()])
    assert source.total() == yielded == source.read_so_far()
    assert yielded + source.others == total


def test_a_state_file_keeps_its_shard_and_refuses_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file holds shard 2's runs: another shard (or none) would send runs that are not
    in it; no --shard takes the file's own; and the file is left as it was."""
    ids, total = input_file(tmp_path)
    state = tmp_path / "s.db"
    common = ["run", str(ids), "--state", str(state), "--max-attempts", "1"]
    main([*common, "--shard", "2/3", "-o", str(tmp_path / "first.jsonl")], env=DEAD)
    first = records(tmp_path / "first.jsonl")
    assert 0 < len(first) < total
    digest = hashlib.sha256(state.read_bytes()).hexdigest()
    capsys.readouterr()
    for refused, env in (
        (["--shard", "1/3"], DEAD),
        (["--shard", "2/4"], DEAD),
        ([], {**DEAD, "BULKRETRY_SHARD": "3/3"}),
    ):
        code = main([*common, *refused, "-o", str(tmp_path / "no.jsonl")], env=env)
        err = capsys.readouterr().err
        assert code == 2
        assert err.count("\n") == 1
        assert "is shard 2/3: each shard needs its own state file" in err
    assert hashlib.sha256(state.read_bytes()).hexdigest() == digest
    unsharded = tmp_path / "u.db"
    main(["run", str(ids), "--state", str(unsharded), "-o", str(tmp_path / "u.jsonl")], env=DEAD)
    capsys.readouterr()
    code = main(["run", str(ids), "--state", str(unsharded), "--shard", "1/2", "-o", "-"], env=DEAD)
    assert code == 2
    assert "is the whole input (no --shard)" in capsys.readouterr().err
    main([*common, "-o", str(tmp_path / "again.jsonl")], env=DEAD)
    again = records(tmp_path / "again.jsonl")
    assert sorted(row["line"] for row in again) == sorted(row["line"] for row in first)


def test_shards_in_turn_re_trigger_every_run_once(tmp_path: Path) -> None:
    """Against the simulator over a socket: three shards, one after the other, send each run
    once between them, and the union of their results holds every input line once."""
    config = SimulatorConfig(seed=3, flows=4, runs_per_flow=40, allow_repeat_retrigger=True)
    with SimulatorThread(config) as sim:
        ids = tmp_path / "ids.txt"
        run_ids = sim.failed_run_ids()
        ids.write_text("\n".join([*run_ids, "junk", run_ids[0]]) + "\n")
        env = {**SIM_ENV, "BULKRETRY_BASE_URL": sim.base_url}
        rows: list[dict[str, Any]] = []
        for k in (1, 2, 3):
            out = tmp_path / f"{k}.jsonl"
            words = ["run", str(ids), "--rate", "1000", "--shard", f"{k}/3", "-o", str(out)]
            code = main(words, env=env)
            rows += records(out)
            assert code == (1 if "invalid" in {row["outcome"] for row in records(out)} else 0)
        counts = sim.retrigger_counts()
    assert len(rows) == len(run_ids) + 2
    assert sorted(row["line"] for row in rows) == list(range(1, len(run_ids) + 3))
    assert Counter(row["outcome"] for row in rows) == {
        "retriggered": len(run_ids),
        "invalid": 1,
        "duplicate": 1,
    }
    assert sorted(counts) == sorted(run_ids)
    assert set(counts.values()) == {1}


def test_a_chain_read_by_another_shard_still_holds_its_runs_in_this_one(tmp_path: Path) -> None:
    """On a pipe: the results line of run A (shard 1) says its re-trigger B failed and was
    re-triggered again; B, listed again on a later line, is shard 2's, which must not send it."""
    a, b = uuid(1), next(uuid(i) for i in range(2, 99) if owner(uuid(i)) != owner(uuid(1)))
    chain = {"run_id": a, "outcome": "retriggered", "new_run_id": uuid(0), "chain": [b, uuid(0)]}
    data = orjson.dumps(chain) + b"\n" + b.encode() + b"\n"
    rows = []
    for k in (1, 2):
        done = subprocess.run(
            [sys.executable, "-m", "bulkretry", "run", "--dry-run", "-q", "--shard", f"{k}/2"],
            input=data,
            capture_output=True,
            env={**os.environ, "BULKRETRY_PROGRESS_EVERY": "0"},
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        rows += [orjson.loads(line) for line in done.stdout.splitlines()]
    assert {row["run_id"]: row["outcome"] for row in rows} == {
        a: "already_retriggered",
        b: "already_retriggered",
    }


def test_lost_answers_are_held_not_looked_up_with_shards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A look-up takes a new run of the lost answer's flow that no clear answer of this batch
    claimed: another shard's new run looks just so (49 of 2,000 runs were claimed re-triggered
    so on the simulator, never sent). With N above 1, lost answers are held in_doubt; asking
    for check is an error, not a silent change."""

    def settings(*words: str, env: dict[str, str] = DEAD) -> str:
        ns = build_parser(env, "run").parse_args(["run", *words])
        given = frozenset(w.lstrip("-").replace("-", "_") for w in words if w.startswith("--"))
        return build_settings(ns, env, warn=print, given=given).on_ambiguous

    assert settings("--shard", "2/4") == "hold"
    assert settings("--shard", "1/1") == "check"
    assert settings("--shard", "2/4", "--on-ambiguous", "retry") == "retry"
    with pytest.raises(ConfigurationError, match="--on-ambiguous check with --shard"):
        settings("--shard", "2/4", "--on-ambiguous", "check")
    with pytest.raises(ConfigurationError, match="bulkretry check"):
        settings("--shard", "2/4", env={**DEAD, "BULKRETRY_ON_AMBIGUOUS": "check"})
    ids, _ = input_file(tmp_path)
    assert main(["run", str(ids), "--shard", "1/2", "--on-ambiguous", "check"], env=DEAD) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_one_shards_state_file_is_not_looked_up_alone_and_resumes_with_hold_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check --state on one shard's file would take another shard's new run for its own lost
    re-trigger: refused, pointing at all the shards' results together. A resume with a
    variable asking for hold (the state file stored the default, check) is no error."""
    ids, _ = input_file(tmp_path)
    state = tmp_path / "s.db"
    main(["run", str(ids), "--state", str(state), "--shard", "2/3", "-o", "-"], env=DEAD)
    capsys.readouterr()
    assert main(["check", "--state", str(state)], env=DEAD) == 2
    err = capsys.readouterr().err
    assert "is shard 2/3 of a batch" in err
    assert "cat r1.jsonl r2.jsonl ... | bulkretry check" in err
    for asked in ("hold", "retry"):
        main(
            ["run", "--state", str(state), "--resume"],
            env={**DEAD, "BULKRETRY_ON_AMBIGUOUS": asked},
        )
        assert "--on-ambiguous check with --shard" not in capsys.readouterr().err
    main(["run", "--state", str(state), "--resume", "--on-ambiguous", "check"], env=DEAD)
    assert "--on-ambiguous check with --shard" in capsys.readouterr().err
