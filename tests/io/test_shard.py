"""--shard K/N: N processes given the same input take disjoint records that together are all."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

from bulkretry._io.shard import Shard, parse_shard
from bulkretry._io.source import InputRecord


def uuid(i: int) -> str:
    return f"{i:08x}-1804-45d6-8d56-dd51f05c0baf"


def valid(i: int, line: int | None = None) -> InputRecord:
    return InputRecord("ids.txt", i + 1 if line is None else line, uuid(i), "")


def invalid(line: int, text: str) -> InputRecord:
    return InputRecord("ids.txt", line, None, text, "not a valid run ID")


def owners(record: InputRecord, count: int) -> list[int]:
    return [k for k in range(1, count + 1) if Shard(k, count).owns(record)]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 16])
def test_every_record_belongs_to_exactly_one_shard(count: int) -> None:
    """Valid and invalid lines alike: each is written by one process, none by two or none."""
    batch = [valid(i) for i in range(500)]
    batch += [invalid(1000 + i, f"garbage {i}") for i in range(50)]
    batch.append(invalid(2000, ""))  # an over-long line quotes nothing back
    for record in batch:
        assert len(owners(record, count)) == 1, record


def test_every_line_of_one_run_lands_in_the_same_shard() -> None:
    """A bare ID, its results line fed back and its duplicate, from any file or line: one
    shard, which can then deduplicate the run and judge it by all its evidence."""
    lines = [
        InputRecord("ids.txt", 3, uuid(7), ""),
        InputRecord("-", 900, uuid(7), "", prior="retriggered", prior_new_run_id=uuid(8)),
        InputRecord("results.jsonl", 1, uuid(7), "", prior="failed"),
    ]
    for count in (2, 3, 4, 8):
        first = owners(lines[0], count)
        assert [owners(record, count) for record in lines] == [first] * len(lines)


@pytest.mark.parametrize(
    "ids",
    [
        [uuid(i) for i in range(4000)],
        [f"run-{i:05d}" for i in range(4000)],  # sequential IDs of a custom --run-id-pattern
    ],
    ids=["uuids", "sequential"],
)
def test_shards_split_a_batch_evenly(ids: list[str]) -> None:
    """Four shards of 4,000 runs each take 1,000 give or take 10%: their shares of the rate
    are equal, so they finish together."""
    taken = Counter(
        k
        for run_id in ids
        for k in range(1, 5)
        if Shard(k, 4).owns(InputRecord("ids.txt", 1, run_id, ""))
    )
    assert sorted(taken) == [1, 2, 3, 4]
    assert all(900 <= n <= 1100 for n in taken.values()), taken


def test_the_split_is_the_same_in_every_process() -> None:
    """Another interpreter, with another hash seed, takes exactly the same records."""
    program = (
        "from bulkretry._io.shard import Shard\n"
        "from bulkretry._io.source import InputRecord\n"
        "ids = [f'{i:08x}-1804-45d6-8d56-dd51f05c0baf' for i in range(200)]\n"
        "print(''.join(str(int(Shard(2, 3).owns(InputRecord('-', 1, i, '')))) for i in ids))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    here = "".join(str(int(Shard(2, 3).owns(valid(i)))) for i in range(200))
    assert there == here
    assert set(here) == {"0", "1"}


@pytest.mark.parametrize(("text", "shard"), [("2/4", Shard(2, 4)), (" 1/1 ", Shard(1, 1))])
def test_a_shard_reads_as_k_of_n(text: str, shard: Shard) -> None:
    assert parse_shard(text) == shard
    assert str(shard) == text.strip()


@pytest.mark.parametrize("text", ["0/4", "5/4", "4", "a/b", "1/0", "1/2000", "-1/4", "1/4/2", ""])
def test_anything_but_k_of_n_is_refused_saying_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected K/N.*e\.g\. 2/4"):
        parse_shard(text)
