"""The batch's own results file continued by a resume: which lines it already holds."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bulkretry._io.written import WrittenRecords, settled

RUN = "4fb0418e-1804-45d6-8d56-dd51f05c0baf"


@pytest.mark.parametrize(
    ("final_status", "next_round", "over"),
    [
        (None, None, True),  # a line of a batch without --follow
        ("success", None, True),
        ("failed", None, True),  # its rounds were spent
        ("failed", "duplicate", True),
        ("failed", "not_attempted", False),  # a stop came before its further round
        ("unknown", None, False),  # following was cut short
        ("unknown", "in_doubt", True),  # its round may have landed: no pass sends it
    ],
)
def test_a_follow_line_is_settled_only_when_no_later_pass_would_change_it(
    final_status: str | None, next_round: str | None, over: bool
) -> None:
    assert settled(final_status, next_round) is over


def test_a_resume_rewrites_a_follow_line_whose_chain_went_on(tmp_path: Path) -> None:
    """A line cut short (unknown) holds an unsettled line, not a settled one of the run."""
    out = tmp_path / "out.jsonl"
    line = {"run_id": RUN, "outcome": "retriggered", "source": "in", "line": 1}
    cut = {**line, "final_status": "unknown", "chain": ["x"]}
    out.write_bytes(orjson.dumps(cut) + b"\n")
    written = WrittenRecords.of_file(str(out))
    try:
        assert written.holds(RUN, "already_retriggered", "in", 1, final=False)
        assert not written.holds(RUN, "already_retriggered", "in", 1, final=True)
    finally:
        written.close()
    out.write_bytes(orjson.dumps(line) + b"\n")
    written = WrittenRecords.of_file(str(out))
    try:
        assert written.holds(RUN, "already_retriggered", "in", 1, final=True)
    finally:
        written.close()
