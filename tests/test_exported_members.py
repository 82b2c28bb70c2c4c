"""The public API: everything exported is listed in ``__all__``, sorted, and importable."""

from __future__ import annotations

import bulkretry


def test_all_lists_every_public_name_and_only_those() -> None:
    """A public name missing from ``__all__`` (or a stale entry) fails here."""
    public = {name for name in dir(bulkretry) if not name.startswith("_")}
    assert set(bulkretry.__all__) - {"__version__"} == public


def test_all_is_sorted() -> None:
    """``__all__`` stays sorted, so additions are easy to review."""
    assert list(bulkretry.__all__) == sorted(bulkretry.__all__)


def test_every_exception_derives_from_bulkretry_error() -> None:
    """Users can catch everything bulkretry raises on purpose with one class."""
    exported = [getattr(bulkretry, name) for name in bulkretry.__all__]
    errors = [obj for obj in exported if isinstance(obj, type) and issubclass(obj, Exception)]
    assert errors
    assert all(issubclass(error, bulkretry.BulkRetryError) for error in errors)
