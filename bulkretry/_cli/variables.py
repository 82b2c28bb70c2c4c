"""The environment's BULKRETRY_* variables: which are known, and a warning for the others."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from .options import ENV_PREFIX

__all__ = ["CREDENTIAL_VARIABLES", "unknown_variables"]

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
