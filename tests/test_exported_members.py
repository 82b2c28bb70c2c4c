"""The public API: everything exported is listed in ``__all__``, sorted, and importable."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import bulkretry
from bulkretry import _exceptions


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


def package_errors() -> dict[str, type[BaseException]]:
    """Return every exception class defined in the package (the simulator, a wing apart, aside)."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(bulkretry.__path__, "bulkretry."):
        if info.name.startswith(("bulkretry._simulator", "bulkretry.__main__")):
            continue
        module = importlib.import_module(info.name)
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_error_of_the_package_is_in_the_tree() -> None:
    """Each exception class derives from BulkRetryError and is drawn in _exceptions' docstring."""
    errors = package_errors()
    assert "bulkretry._exceptions.BatchHalted" in errors
    tree = _exceptions.__doc__ or ""
    for where, error in errors.items():
        assert issubclass(error, bulkretry.BulkRetryError), where
        assert f" {error.__name__} " in tree or f" {error.__name__}\n" in tree, where
