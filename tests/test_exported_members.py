"""The public API: everything exported is listed in ``__all__``, sorted, and importable."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

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


def run_python(code: str) -> str:
    """Run *code* in a fresh interpreter (this one has imported everything); return stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_the_engine_and_aiohttp_load_on_first_use_of_retrigger() -> None:
    """`import bulkretry` (and the command line before its command runs) is quick: a Ctrl-C
    there, while Python still imports aiohttp, found no handler to say it was a stop."""
    code = (
        "import sys, bulkretry\n"
        "print('aiohttp' in sys.modules, 'retrigger' in dir(bulkretry))\n"
        "print(bulkretry.retrigger.__module__, 'aiohttp' in sys.modules)\n"
    )
    assert run_python(code).splitlines() == ["False True", "bulkretry._api True"]


def test_orjsons_own_imports_are_loaded_before_it() -> None:
    """orjson's init crashes the process (SIGSEGV) if an import of its own fails, as a Ctrl-C
    makes it: loaded first, they are only looked up there (ijl/orjson#310)."""
    code = (
        "import sys\n"
        "seen = []\n"
        "class Spy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        seen.append(name)\n"
        "sys.meta_path.insert(0, Spy())\n"
        "import bulkretry\n"
        "first = seen.index('orjson')\n"
        "print(sorted({'datetime', 'json', 'uuid', 'dataclasses', 'enum'} - set(seen[:first])))\n"
    )
    assert run_python(code) == "[]"
