"""Profiles: named sets of options in a TOML file, for the sandboxes a user switches between.

The file is ``$BULKRETRY_CONFIG``, else ``$XDG_CONFIG_HOME/bulkretry/config.toml``, else
``~/.config/bulkretry/config.toml``; each ``[profiles.NAME]`` table holds options by their long
name with underscores (``base_url``, ``org_id``, ``sandbox``, ``api_key``, ``client_id``,
``client_secret_file``, ``token_file``, ``rate``…). ``--profile NAME`` (any command) or
``BULKRETRY_PROFILE`` chooses one. A profile becomes environment variables beneath the real
environment (flag, then environment, then profile, then default), except that a ``--profile``
given on the command line beats the environment for the keys it sets.
"""

from __future__ import annotations

import difflib
import os
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._exceptions import ConfigurationError
from .options import ENV_PREFIX, Option, default_in_words, flag
from .variables import CREDENTIAL_VARIABLES

__all__ = [
    "CONFIG_VARIABLE",
    "PROFILE_VARIABLE",
    "Profile",
    "choose_profile",
    "config_path",
    "describe",
    "load_profile",
    "merged_environment",
]

PROFILE_VARIABLE = ENV_PREFIX + "PROFILE"
CONFIG_VARIABLE = ENV_PREFIX + "CONFIG"
#: Keys naming the batch: a variable that disagrees with the profile on one draws a warning.
_IDENTITY = ("base_url", "org_id", "sandbox")
#: Secrets written inline, which deserve a private file.
_SECRETS = ("client_secret", "access_token")


@dataclass(frozen=True, slots=True)
class Profile:
    """A chosen profile: where it came from, and the variables it sets."""

    name: str
    path: str
    variables: dict[str, str] = field(default_factory=dict)
    #: True when --profile was given on the command line (it then beats the environment).
    from_flag: bool = False


def config_path(env: Mapping[str, str]) -> str:
    """Return the path of the config file the environment points at."""
    if env.get(CONFIG_VARIABLE):
        return env[CONFIG_VARIABLE]
    base = env.get("XDG_CONFIG_HOME") or os.path.join(
        env.get("HOME") or os.path.expanduser("~"), ".config"
    )
    return os.path.join(base, "bulkretry", "config.toml")


def choose_profile(args: Sequence[str], env: Mapping[str, str]) -> tuple[str | None, bool]:
    """Return the profile named by ``--profile`` (then ``BULKRETRY_PROFILE``), and if by flag."""
    words = list(args)
    for index, word in enumerate(words):
        if word == "--profile" and index + 1 < len(words):
            return words[index + 1], True
        if word.startswith("--profile="):
            return word.partition("=")[2], True
    name = env.get(PROFILE_VARIABLE)
    return (name or None), False


def load_profile(
    name: str,
    env: Mapping[str, str],
    options: Iterable[Option],
    *,
    from_flag: bool,
    warn: Callable[[str], None],
) -> Profile:
    """Read profile ``name``: ConfigurationError naming the file and key for any mistake."""
    path = config_path(env)
    try:
        with open(path, "rb") as fh:
            document = tomllib.load(fh)
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ConfigurationError(f"profile {name!r}: no config file at {path}") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None
    profiles = document.get("profiles")
    if not isinstance(profiles, dict) or not isinstance(profiles.get(name), dict):
        known = sorted(profiles) if isinstance(profiles, dict) else []
        raise ConfigurationError(
            f"config file {path} has no profile {name!r} "
            f"(it has: {', '.join(known) or 'none'}); profiles are [profiles.NAME] tables"
        )
    by_key = {option.dest: option for option in options}
    credentials = {name.removeprefix(ENV_PREFIX).lower() for name in CREDENTIAL_VARIABLES}
    variables: dict[str, str] = {}
    for key, value in profiles[name].items():
        try:
            variable = _variable(key, by_key, credentials)
        except ConfigurationError as exc:
            raise ConfigurationError(f"config file {path}, profile {name!r}: {exc}") from None
        variables[variable] = _text(path, name, key, value, by_key.get(key))
        if key in _SECRETS and mode & (stat.S_IRWXG | stat.S_IRWXO):
            warn(
                f"config file {path} holds {key} inline and others can read it: "
                f"chmod 600 {path}, or use {key}_file"
            )
    profile = Profile(name, path, variables, from_flag)
    for key in _IDENTITY:
        variable = ENV_PREFIX + key.upper()
        ours, theirs = variables.get(variable), env.get(variable)
        if ours is not None and theirs and theirs != ours:
            winner = "the profile" if from_flag else variable
            warn(
                f"{variable}={theirs} disagrees with profile {name!r} ({key} = {ours}); "
                f"{winner} wins: check which you meant"
            )
    return profile


def _variable(key: str, options: Mapping[str, Option], credentials: set[str]) -> str:
    if key in options:
        return options[key].env
    if key in credentials:
        return ENV_PREFIX + key.upper()
    known = sorted([*options, *credentials])
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigurationError(f"unknown key {key!r} in a profile{hint}")


def _text(path: str, profile: str, key: str, value: Any, option: Option | None) -> str:
    """Return a profile value as the text of its variable, checked against its option's type."""
    where = f"config file {path}, profile {profile!r}, key {key!r}"
    if isinstance(value, bool):
        if option is None or option.type is not None:
            raise ConfigurationError(f"{where}: expected a string or a number, not true/false")
        return "1" if value else "0"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = repr(value)
    elif isinstance(value, str):
        text = value
    else:
        raise ConfigurationError(f"{where}: expected a string or a number")
    if option is not None:
        convert = option.type or flag
        try:
            convert(text)
        except Exception as exc:  # argparse.ArgumentTypeError, ValueError: both say why
            raise ConfigurationError(f"{where}: {exc}") from None
    return text


def merged_environment(env: Mapping[str, str], profile: Profile | None) -> dict[str, str]:
    """Return the environment the commands read: the profile beneath (or above) the real one."""
    if profile is None:
        return dict(env)
    if profile.from_flag:
        return {**env, **profile.variables}
    return {**profile.variables, **env}


_MASKED = frozenset(ENV_PREFIX + name for name in ("ACCESS_TOKEN", "CLIENT_SECRET", "API_KEY"))


def describe(
    env: Mapping[str, str], profile: Profile | None, options: Iterable[Option]
) -> list[str]:
    """Return one line per setting: its effective value and where it came from (``config``)."""
    merged = merged_environment(env, profile)
    lines = []
    # Named after their variables (a command's own -o is watch_output, check_output, ...), and
    # each once: run and list-failed share --base-url, --rate, ...
    names: dict[str, str] = {}
    for option in options:
        names.setdefault(option.env, default_in_words(option))
    names.update((v, "none") for v in sorted(CREDENTIAL_VARIABLES))
    for variable, default in names.items():
        key = variable.removeprefix(ENV_PREFIX).lower()
        value = merged.get(variable)
        if value is None or value == "":
            shown, source = default, "default"
        else:
            ours = profile is not None and variable in profile.variables
            if ours and (profile.from_flag or variable not in env):  # type: ignore[union-attr]
                source = f"profile {profile.name} ({profile.path})"  # type: ignore[union-attr]
            else:
                source = f"environment {variable}"
            shown = _mask(value) if variable in _MASKED else value
        lines.append(f"{key:>20} = {shown}  [{source}]")
    return lines


def _mask(secret: str) -> str:
    return "****" if len(secret) < 12 else f"{secret[:2]}****{secret[-2:]}"
