"""Tests of bulkretry._io.dedup: an exact set of run IDs, compact for UUIDs."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkretry._io.dedup import SeenSet, _holds, _split

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


def same_bucket(*hexes: str) -> list[str]:
    """Canonical UUIDs for the 32-hex-digit *hexes*, each with its last 8 digits changed until
    all fall in the bucket of the first (a bucket holds its keys back to back)."""
    first = uuid.UUID(hexes[0])
    bucket = _split(str(first))[0]
    found = [str(first)]
    for text in hexes[1:]:
        for tail in range(1 << 22):
            candidate = str(uuid.UUID(text[:24] + f"{tail:08x}"))
            if _split(candidate)[0] == bucket:
                found.append(candidate)
                break
    assert len(found) == len(hexes)
    return found


def test_ids_sharing_a_bucket_are_told_apart() -> None:
    """Two UUIDs in one bucket: each is found, each is a duplicate the second time."""
    seen = SeenSet()
    first, second = same_bucket("aa" * 16, "bb" * 16)
    assert seen.add(first)
    assert second not in seen
    assert seen.add(second)
    assert not seen.add(first)
    assert not seen.add(second)
    assert len(seen) == 2


def test_time_ordered_or_sequential_ids_do_not_pile_into_one_bucket() -> None:
    """Bucketed by their first four hex digits, 80,000 sequential UUIDs (or UUIDv7s of one
    minute) shared one bucket and each add scanned it: 11 s. Spread by a CRC-32: none holds
    more than a few dozen of 200,000."""
    seen = SeenSet()
    ids = [str(uuid.UUID(int=i)) for i in range(200_000)]
    for run_id in ids:
        assert seen.add(run_id)
    fullest = max(len(bucket) for bucket in seen._buckets if bucket is not None)
    assert fullest // 14 <= 40
    assert all(run_id in seen for run_id in ids[::997])


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


@pytest.mark.parametrize("offset", range(1, 14))
def test_a_key_straddling_two_stored_keys_is_no_member(offset: int) -> None:
    """Packed keys sit back to back; a match that starts inside one and ends in the next is
    a different UUID, whatever the offset."""
    first, second = (_split(str(uuid.UUID(x * 16)))[1] for x in ("aa", "bb"))
    bucket = bytearray(first + second)
    assert _holds(bucket, first)
    assert _holds(bucket, second)
    assert not _holds(bucket, (first + second)[offset : offset + 14])
