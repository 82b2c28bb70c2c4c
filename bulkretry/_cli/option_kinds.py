"""Kinds of command-line values: argparse converters, and :class:`Option`, an option as data.

Every option can also be set by an environment variable (``BULKRETRY_<OPTION>`` for ``run``'s).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from .._io.shard import Shard

__all__ = [
    "EMPTY_BOOLEANS",
    "ENV_PREFIX",
    "EXIT_USAGE",
    "Option",
    "Parser",
    "choice",
    "empty_boolean",
    "flag",
    "non_negative_float",
    "note_empty_boolean",
    "outcome_list",
    "positive_float",
    "positive_int",
    "shard_spec",
]

ENV_PREFIX = "BULKRETRY_"
#: A usage error (README's table of exit codes).
EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse's parser, with one-line errors and no abbreviated flags.

    ``--rat 5`` is a typo, not ``--rate 5``: a prefix accepted silently ran a live batch at a
    rate nobody asked for, and a prefix that a later flag makes ambiguous would break scripts.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print one clear line, not the whole usage, and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of at least 0")
    return value


def outcome_list(text: str) -> frozenset[str]:
    from .._model import Outcome

    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(names - {o.value for o in Outcome})
    if not names or unknown:
        known = ", ".join(o.value for o in Outcome)
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of outcomes ({known})")
    return names


def shard_spec(text: str) -> Shard:
    from .._io.shard import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a yes/no value (use 1 or 0)")


def choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return parse


@dataclass(frozen=True, slots=True)
class Option:
    """One option of ``run``: its flags, its parser, its default, and its environment variable."""

    flags: tuple[str, ...]
    type: Callable[[str], Any] | None
    default: Any
    help: str
    metavar: str | None = None
    #: The default in words for --help, where the value itself says nothing (None: "none").
    shown: str | None = None
    #: The environment variable, when it is not BULKRETRY_<OPTION> (a subcommand's own option).
    env_name: str | None = None

    @property
    def dest(self) -> str:
        return self.flags[-1].lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return self.env_name or ENV_PREFIX + self.dest.upper()


#: The parsed namespace's list of the boolean variables set empty of the command that runs.
EMPTY_BOOLEANS = "empty_booleans"


def note_empty_boolean(
    parser: argparse.ArgumentParser, variable: str, flags: Sequence[str]
) -> None:
    """Remember a boolean *variable* set empty, which the command refuses unless one of its
    *flags* (``--x``, or ``--no-x``) says on or off (:func:`empty_boolean`)."""
    both = tuple(flags) + tuple("--no-" + f[2:] for f in flags if f.startswith("--"))
    noted = parser.get_default(EMPTY_BOOLEANS) or ()
    parser.set_defaults(**{EMPTY_BOOLEANS: (*noted, (variable, both))})


def empty_boolean(ns: argparse.Namespace, args: Sequence[str]) -> str | None:
    """Return the refusal of a boolean variable set empty that no flag overrides, if any.

    Set but empty, on or off cannot be told (a dry run meant this way was a real batch).
    """
    given = {word.split("=", 1)[0] for word in args}
    for variable, flags in getattr(ns, EMPTY_BOOLEANS, ()):
        if not given & set(flags):
            return f"{variable} is empty: set it to 1 or 0, or unset it"
    return None
