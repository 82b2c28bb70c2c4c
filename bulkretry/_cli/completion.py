"""``bulkretry completion bash|zsh|fish``: shell completion generated from the parser itself.

Generated, not hand-written, so that a new option completes as soon as it exists. Bash gets a
completion function; zsh loads the same through ``bashcompinit``; fish gets one ``complete``
line per command and option, with its help text.
"""

from __future__ import annotations

import argparse
import shlex

__all__ = ["SHELLS", "completion_script"]

SHELLS = ("bash", "zsh", "fish")


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its subparsers nowhere public
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> list[tuple[list[str], str, bool]]:
    """Return (option strings, help, takes a value) of each option of ``parser``."""
    flags = []
    for action in parser._actions:
        if action.option_strings:
            text = (action.help or "").split(" [env")[0].replace("%%", "%")
            flags.append((list(action.option_strings), text, action.nargs != 0))
    return flags


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """Return the completion script of ``parser`` for ``shell`` (one of :data:`SHELLS`)."""
    commands = _commands(parser)
    if shell == "fish":
        return _fish(commands)
    script = _bash(commands)
    if shell == "zsh":
        return "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script


def _bash(commands: dict[str, argparse.ArgumentParser]) -> str:
    cases = []
    for name, sub in commands.items():
        words = " ".join(flag for flags, _, _ in _flags(sub) for flag in flags)
        cases.append(f"        {name}) opts={shlex.quote(words)} ;;")
    names = " ".join(commands)
    return (
        "_bulkretry() {\n"
        '    local cur="${COMP_WORDS[COMP_CWORD]}" command="${COMP_WORDS[1]}" opts\n'
        '    if [ "$COMP_CWORD" -eq 1 ]; then\n'
        f'        COMPREPLY=($(compgen -W "{names} --help --version" -- "$cur"))\n'
        "        return\n"
        "    fi\n"
        '    case "$command" in\n' + "\n".join(cases) + "\n        *) opts= ;;\n    esac\n"
        '    if [[ "$cur" == -* ]]; then\n'
        '        COMPREPLY=($(compgen -W "$opts" -- "$cur"))\n'
        "    else\n"
        '        COMPREPLY=($(compgen -f -- "$cur"))\n'
        "    fi\n"
        "}\n"
        "complete -o filenames -F _bulkretry bulkretry\n"
    )


def _fish(commands: dict[str, argparse.ArgumentParser]) -> str:
    lines = ["complete -c bulkretry -f"]
    for name, sub in commands.items():
        about = shlex.quote((sub.description or name).split(". ")[0][:80])
        lines.append(f"complete -c bulkretry -n __fish_use_subcommand -a {name} -d {about}")
        for flags, text, takes_value in _flags(sub):
            parts = [f"complete -c bulkretry -n '__fish_seen_subcommand_from {name}'"]
            for flag in flags:
                parts.append(f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}")
            if takes_value:
                parts.append("-r -F")
            parts.append(f"-d {shlex.quote(text[:80])}")
            lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"
