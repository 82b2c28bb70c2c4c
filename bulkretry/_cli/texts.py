"""What each command's --help says: one line, a description, examples, exit codes.

Kept as data so that every command's help has the same parts in the same order (a test checks
them), and main.py only wires commands.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from .options import EXIT_CODES_HELP, Parser

__all__ = ["COMMANDS", "add_command"]


@dataclass(frozen=True, slots=True)
class CommandText:
    """The help of one command."""

    help: str
    description: str
    examples: tuple[str, ...]
    exit_codes: str


def _codes(*pairs: tuple[int, str]) -> str:
    return "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in pairs)


COMMANDS = {
    "run": CommandText(
        "re-trigger the run IDs read from FILEs or stdin",
        "Re-trigger failed dataflow runs: read run IDs (or earlier results lines) from FILEs or "
        "stdin, send one re-trigger per run under a rate limit, back off on 429 and 5xx, and "
        "write one JSON line per input line (old ID, new ID, etag, outcome) to stdout or "
        "--output. Progress, logs and the summary go to stderr.",
        (
            "cat failed-run-ids.txt | bulkretry run > results.jsonl",
            "bulkretry run ids1.txt ids2.txt -o results.jsonl --rate 20 --concurrency 8",
            "bulkretry list-failed --flow-id F --since 2d | bulkretry run --state batch.db "
            "-o results.jsonl",
            "bulkretry run --state batch.db --resume                    # finish a stopped batch",
            "bulkretry run --only failed results.jsonl > second-pass.jsonl",
            "bulkretry run ids.txt --shard 2/4 --rate 200 -o r2.jsonl   # one of 4 processes",
        ),
        EXIT_CODES_HELP,
    ),
    "status": CommandText(
        "counts of a batch's state file, or its run IDs",
        "Show what a batch's state file (--state) holds: its identity, invocations, elapsed "
        "time and sending rate, and how many runs are in each state; or, with --list, the run "
        "IDs in one state, one per line, ready to check or pipe back. Read-only: safe while a "
        "batch runs.",
        (
            "bulkretry status --state batch.db",
            "bulkretry status --state batch.db --list in_doubt > to-check.txt",
        ),
        _codes((0, "shown"), (2, "the state file is missing or not a state file")),
    ),
    "report": CommandText(
        "merge results files of several passes into one current line per run",
        "Merge the results files of several passes, in any order, into one current line per run "
        "ID on stdout: the line with the most advanced evidence (retriggered = "
        "already_retriggered > in_doubt > failed > the rest; a later line wins among equals), "
        "as it was written. Counts and the top error codes go to stderr.",
        (
            "bulkretry report pass1.jsonl pass2.jsonl > current.jsonl",
            "cat pass*.jsonl | bulkretry report --format json > current.jsonl",
        ),
        _codes(
            (0, "every run is retriggered or already_retriggered"),
            (1, "some run is not"),
            (2, "a usage error (an unreadable file)"),
        ),
    ),
    "config": CommandText(
        "show the effective settings and where each came from",
        "Show every setting of run and list-failed as it would be used now: its value and where "
        "it came from (the environment, a profile of the config file, or the default). Secrets "
        "are masked.",
        ("bulkretry config", "bulkretry config --profile dev"),
        _codes((0, "shown"), (2, "the profile or the config file is wrong")),
    ),
    "simulate": CommandText(
        "serve the built-in Flow Service simulator",
        "Serve the built-in Flow Service simulator on loopback: seeded failed runs, re-trigger, "
        "run listings and look-ups, an IMS token endpoint, and the trouble you ask for (quotas, "
        "5xx, resets, lost answers). Prints its base URL; stops on Ctrl-C.",
        (
            "bulkretry simulate --print-failed > failed.txt",
            "bulkretry simulate --quota-rate 50 --error-rate 0.05 --port 8080",
            "bulkretry simulate --env > sim.env & sleep 1; . ./sim.env",
        ),
        _codes((0, "stopped"), (2, "a usage error")),
    ),
    "demo": CommandText(
        "re-trigger a few thousand runs on the built-in simulator",
        "Seed the built-in simulator with failed runs behind a quota with some 5xx answers, "
        "re-trigger them all with the real pipeline, and check against the simulator's own "
        "records that every run was re-triggered exactly once.",
        ("bulkretry demo", "bulkretry demo --runs 500 -o demo.jsonl"),
        _codes((0, "every run re-triggered exactly once"), (1, "otherwise")),
    ),
    "completion": CommandText(
        "print a shell completion script (bash, zsh or fish)",
        "Print a completion script for SHELL, generated from bulkretry's own options.",
        (
            "bulkretry completion bash > /etc/bash_completion.d/bulkretry",
            'eval "$(bulkretry completion zsh)"     # in ~/.zshrc',
            "bulkretry completion fish > ~/.config/fish/completions/bulkretry.fish",
        ),
        _codes((0, "printed"), (2, "an unknown shell")),
    ),
}


def add_command(commands: argparse._SubParsersAction[Parser], name: str) -> argparse.ArgumentParser:
    """Add command ``name`` with its help, description, examples and exit codes."""
    text = COMMANDS[name]
    examples = "examples:\n" + "\n".join(f"  {line}" for line in text.examples)
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=text.help,
        description=text.description,
        epilog=f"{examples}\n\n{text.exit_codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser
