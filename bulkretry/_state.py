"""The CLI's side of ``--state``: open the ledger for a batch, resume from it, ``status``."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import AsyncIterator, Sequence
from typing import TextIO

from ._config import Settings
from ._exceptions import ConfigurationError
from ._ledger import STATES, BatchIdentity, Ledger
from ._source import InputRecord

__all__ = [
    "configure_status_parser",
    "identity_of",
    "ledger_batches",
    "open_ledger",
    "resume_command",
    "run_status",
]

_LISTABLE = ("in_doubt", "failed", "not_attempted", "pending", "retriggered")


def identity_of(settings: Settings) -> BatchIdentity:
    """Return what makes a batch the same batch: base URL, org, sandbox and operation.

    ``re-trigger`` and ``RE_TRIGGER`` are one operation, so switching spelling after a 1434
    answer keeps the batch's state.
    """
    credentials = settings.credentials
    if credentials is None:
        raise ConfigurationError("--state needs credentials (and is pointless with --dry-run)")
    return BatchIdentity(
        base_url=settings.base_url.rstrip("/"),
        org_id=credentials.org_id,
        sandbox=credentials.sandbox,
        op=settings.op.lower().replace("_", "-"),
    )


def open_ledger(path: str, settings: Settings, *, sync: str) -> Ledger:
    """Open (or create) the batch's ledger; StateError for any file that is not this batch's."""
    if settings.dry_run:
        raise ConfigurationError("--dry-run records nothing: drop --state")
    return Ledger.open(path, identity_of(settings), sync="full" if sync == "full" else "normal")


async def ledger_batches(ledger: Ledger, size: int = 512) -> AsyncIterator[list[InputRecord]]:
    """Yield the runs a ledger holds, in first-seen order, as input records for a resume."""
    batch: list[InputRecord] = []
    for run_id, source, line in ledger.resume_ids():
        batch.append(InputRecord(source, line, run_id, ""))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def resume_command(argv: Sequence[str], state: str | None, output: str | None) -> str | None:
    """Return the command that resumes this batch, or None without a state file.

    The inputs are dropped when they were a pipe (the ledger holds their run IDs), and an
    output file is overwritten: the resumed run writes a line for every record again.
    """
    if state is None:
        return None
    words = ["bulkretry"]
    args = list(argv)
    for position, word in enumerate(args):
        if word == "--append":
            continue
        if word == "-" and position > 0:
            continue
        words.append(word)
    if output not in (None, "-") and "--overwrite" not in words:
        words.append("--overwrite")
    return shlex.join(words)


def configure_status_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``status``'s options to ``parser``."""
    parser.add_argument("--state", required=True, metavar="PATH", help="the batch's state file")
    parser.add_argument(
        "--list",
        choices=_LISTABLE,
        metavar="STATE",
        help=f"print the run IDs in STATE ({', '.join(_LISTABLE)}), one per line",
    )


def run_status(ns: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print a batch's counts per state, or (``--list``) the run IDs in one state."""
    out = out or sys.stdout
    with Ledger.inspect(ns.state) as ledger:
        if ns.list:
            for run_id in ledger.list(ns.list):
                out.write(run_id + "\n")
            return 0
        info = ledger.info()
        counts = ledger.counts()
    rate = f"{info['rate']:.1f} runs/s" if isinstance(info["rate"], float) else "—"
    print(
        f"state file {info['path']}" + (" (a batch is running on it)" if info["live"] else ""),
        file=out,
    )
    print(
        f"batch: {info['base_url']}, org {info['org_id']}, "
        f"sandbox {info['sandbox']}, op {info['op']}",
        file=out,
    )
    print(
        f"created {info['created_at']}, last active {info['updated_at']}, "
        f"{info['invocations']} invocation(s), {info['elapsed']:.0f} s elapsed, {rate}",
        file=out,
    )
    for state in STATES:
        if counts.get(state):
            print(f"{state:>20}: {counts[state]}", file=out)
    print(f"{'total':>20}: {info['runs']}", file=out)
    return 0
