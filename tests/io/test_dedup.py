"""Tests of bulkretry._io.dedup: an exact set of run IDs, compact for UUIDs."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkretry._io.dedup import SeenSet

RUN = "4fb0418e-1804-45d6-8d56-dd51f05c0baf"


def test_add_reports_whether_an_id_is_new() -> None:
    """The first add of an ID is True, every later one False."""
    seen = SeenSet()
    assert seen.add(RUN)
    assert not seen.add(RUN)
    assert len(seen) == 1


def test_distinct_uuids_are_all_new() -> None:
    """Thousands of distinct UUIDs give no false positive."""
    seen = SeenSet()
    ids = [str(uuid.UUID(int=n * 0x9E3779B97F4A7C15)) for n in range(5000)]
    assert all(seen.add(run_id) for run_id in ids)
    assert len(seen) == 5000


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (RUN, RUN.upper()),
        ("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "aaaaaaaa-bbbbc-ccc-dddd-eeeeeeeeeeee"),
        ("00000000-0000-0000-0000-000000000001", "0x000000-0000-0000-0000-000000000001"),
        ("00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-00000000_001"),
        ("00000000-0000-0000-0000-000000000001", "+0000000-0000-0000-0000-000000000001"),
        ("00000000-0000-0000-0000-000000000001", " 0000000-0000-0000-0000-000000000001"),
        ("00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-0000000000\u0660\u0661"),
    ],
)
def test_strings_that_read_as_the_same_number_are_still_different(first: str, second: str) -> None:
    """Only the canonical UUID form is stored as a number: no two strings ever collide."""
    seen = SeenSet()
    assert seen.add(first)
    assert seen.add(second)
    assert len(seen) == 2


def test_other_strings_are_kept_exactly() -> None:
    """IDs of a custom pattern are compared as strings, case included."""
    seen = SeenSet()
    assert seen.add("ABC-1234")
    assert seen.add("abc-1234")
    assert not seen.add("ABC-1234")
    assert seen.add("")
    assert not seen.add("")


def test_repr_shows_the_size() -> None:
    """The repr shows how many IDs are remembered."""
    seen = SeenSet()
    seen.add(RUN)
    seen.add("other")
    assert repr(seen) == "SeenSet(size=2)"


BASES = ["00000000-0000-0000-0000-000000000001", RUN, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"]
#: Rewrites that keep int(…, 16) of the dash-less text unchanged, or nearly so.
VARIANTS = [
    lambda u: u,
    str.upper,
    lambda u: u[:9] + u[10:14] + "-" + u[14:],  # a dash moved
    lambda u: "0x" + u[2:],
    lambda u: u[:-3] + "_" + u[-2:],
    lambda u: "+" + u[1:],
    lambda u: " " + u[1:],
]
LOOKALIKE_IDS = st.builds(
    lambda base, variant: variant(base), st.sampled_from(BASES), st.sampled_from(VARIANTS)
)


@given(st.lists(LOOKALIKE_IDS | st.uuids().map(str) | st.text(max_size=40), max_size=60))
def test_seen_set_behaves_exactly_like_a_python_set(ids: list[str]) -> None:
    """Against a set of strings, every add and every size agrees."""
    seen = SeenSet()
    model: set[str] = set()
    for run_id in ids + ids[::2]:
        assert seen.add(run_id) == (run_id not in model)
        model.add(run_id)
        assert len(seen) == len(model)


def test_a_uuid_spelled_across_two_stored_neighbours_is_not_a_duplicate() -> None:
    """Packed keys sit back to back; a match straddling two of them must not count."""
    seen = SeenSet()
    first = "abcd0000-1111-2222-3333-444455556666"
    second = "abcd7777-8888-9999-aaaa-bbbbccccdddd"
    # Same bucket (abcd); its key is the last 13 bytes of the first plus 1 byte of the second.
    straddler = "abcd0011-1122-2233-3344-445555666677"
    assert seen.add(first)
    assert seen.add(second)
    assert seen.add(straddler)
    assert not seen.add(straddler)
    assert len(seen) == 3


def test_membership_is_asked_without_adding() -> None:
    seen = SeenSet()
    canonical, other = "4fb0418e-1804-45d6-8d56-dd51f05c0baf", "run-7"
    assert canonical not in seen
    assert other not in seen
    assert seen.add(canonical)
    assert seen.add(other)
    assert canonical in seen
    assert other in seen
    assert len(seen) == 2


def test_a_key_straddling_two_stored_keys_is_no_member() -> None:
    def in_bucket_0000(key: str) -> str:
        return str(uuid.UUID("0000" + key))

    seen = SeenSet()
    seen.add(in_bucket_0000("aa" * 14))
    seen.add(in_bucket_0000("bb" * 14))
    assert in_bucket_0000("aa" * 7 + "bb" * 7) not in seen
    assert in_bucket_0000("bb" * 14) in seen
