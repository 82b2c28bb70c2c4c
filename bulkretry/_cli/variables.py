"""The environment's BULKRETRY_* variables: which are known, and a warning for the others."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable, Mapping

from .option_kinds import note_empty_boolean
from .options import ENV_PREFIX, flag

__all__ = [
    "CREDENTIAL_VARIABLES",
    "command_variable",
    "environment_defaults",
    "unknown_variables",
]

#: Variables that are not options: credentials and where they come from.
CREDENTIAL_VARIABLES = frozenset(
    ENV_PREFIX + name
    for name in (
        "ACCESS_TOKEN",
        "API_KEY",
        "ORG_ID",
        "SANDBOX",
        "CLIENT_ID",
        "CLIENT_SECRET",
        "SCOPES",
        "IMS_URL",
    )
)


def unknown_variables(env: Mapping[str, str], known: Iterable[str]) -> list[str]:
    """Return a warning for each BULKRETRY_* variable nobody reads, naming the closest known."""
    names = frozenset(known) | CREDENTIAL_VARIABLES
    warnings = []
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in names:
            close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"unknown variable {name} is ignored{hint}")
    return warnings


#: Options every subcommand has that the environment never sets (or sets by another name).
_NOT_FROM_ENV = frozenset({"help", "version", "profile"})


def command_variable(command: str, dest: str, shared: frozenset[str]) -> str:
    """Return the variable of an option: run's own name if run has it, else per command."""
    if dest in shared:
        return ENV_PREFIX + dest.upper()
    return f"{ENV_PREFIX}{command.upper().replace('-', '_')}_{dest.upper()}"


def environment_defaults(
    parser: argparse.ArgumentParser,
    command: str,
    env: Mapping[str, str],
    shared: frozenset[str],
) -> list[str]:
    """Let ``command``'s options be set in the environment; return their variable names.

    An option that ``run`` has too keeps run's variable (``status --state`` reads
    ``BULKRETRY_STATE``); the others are ``BULKRETRY_<COMMAND>_<OPTION>``, so names never
    collide. A flag still wins; a value the option would refuse is a usage error naming it.
    """
    names = []
    for action in parser._actions:
        if not action.option_strings or action.dest in _NOT_FROM_ENV:
            continue
        variable = command_variable(command, action.dest, shared)
        names.append(variable)
        if action.help and "[env " not in action.help:
            action.help = f"{action.help} [env {variable}]"
        raw = env.get(variable)
        if raw == "" and action.nargs == 0:
            note_empty_boolean(parser, variable, action.option_strings)
        if raw is None or raw == "":
            continue  # any other variable set empty counts as unset (templated env files)
        try:
            if action.nargs == 0:
                value: object = flag(raw)
            elif action.type is not None and callable(action.type):
                value = action.type(raw)
            else:
                value = raw
        except (argparse.ArgumentTypeError, ValueError) as exc:
            parser.error(f"{variable}: {exc}")
        if action.choices is not None and value not in action.choices:
            parser.error(f"{variable}: {raw!r} is not one of {', '.join(map(str, action.choices))}")
        action.default = value
        action.required = False
    return names
