"""The CLI's side of ``--state``: open the ledger for a batch, resume from it, ``status``."""

from __future__ import annotations

import argparse
import os
import shlex
import sqlite3
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TextIO

import orjson

from .._config import Settings
from .._exceptions import ConfigurationError, StateError
from .._io.shard import Shard, parse_shard
from .._io.source import InputRecord
from .._ledger import files, schema
from .._ledger.ledger import STATES, BatchIdentity, Ledger
from .._model import Outcome
from .summary import ErrorCounts, summary_object

__all__ = [
    "STORED_OPTIONS",
    "apply_stored_options",
    "configure_status_parser",
    "identity_of",
    "ledger_batches",
    "open_ledger",
    "options_of",
    "read_stored",
    "refuse_shard",
    "resume_command",
    "run_status",
]

#: Options a state file keeps for its batch, so that a resume needs none of them again. Paths
#: of secret files are kept, never secrets; ``output`` only recognises the batch's results file.
STORED_OPTIONS = (
    "base_url",
    "op",
    "rate",
    "burst",
    "concurrency",
    "max_attempts",
    "timeout",
    "deadline",
    "halt_on",
    "on_ambiguous",
    "follow",
    "rounds",
    "round_delay",
    "poll",
    "follow_timeout",
    "retry_budget",
    "max_retriggers",
    "run_id_pattern",
    "ca_bundle",
    "token_file",
    "client_secret_file",
)
_IDENTITY_OPTIONS = {"base_url": "BULKRETRY_BASE_URL", "op": "BULKRETRY_OP"}
_OUTCOMES = frozenset(outcome.value for outcome in Outcome)


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


def resume_command(
    argv: Sequence[str], state: str | None, output: str | None, *, piped: bool, capped: bool = False
) -> str | None:
    """Return how to resume this batch, or None without a state file.

    The same command line continues it (and its own ``-o`` file): fed the same pipe again when
    the input was one, or with ``--resume`` and no input at all. After a stop at the cap
    (*capped*), a command that does not give ``--max-retriggers`` (the state file keeps it; the
    ``--resume`` form never gives it) gains ``--max-retriggers N``, to show where a higher one
    goes.
    """
    if state is None:
        return None
    args = [word for word in argv if word != "--append"]
    more = ["--max-retriggers", "N"] if capped else []
    again = shlex.join(["bulkretry", *args, *([] if "--max-retriggers" in args else more)])
    if not piped or "--resume" in args:  # a --resume reads no input: nothing to pipe
        return again
    alone = ["bulkretry", "run", "--state", state, "--resume"]
    if output not in (None, "-"):
        alone += ["-o", output]
    return f"... | {again}  (or, with no more input: {shlex.join([*alone, *more])})"


def resume_advice(
    argv: Sequence[str],
    state: str,
    output: str | None,
    capped: bool,
    cap: int | None,
    *,
    piped: bool,
) -> str:
    """Say how to carry on after a stop: resume, or after the cap (*capped*) raise it above
    *cap* (None: a shard's, a part of the flag's, gives no number to go above)."""
    command = resume_command(argv, state, output, piped=piped, capped=capped)
    if not capped:
        return f"to resume: {command}"
    above = "" if cap is None else f" above {cap}"
    return f"to go on, raise --max-retriggers{above} (the batch's count) in: {command}"


def read_stored(path: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Return a state file's stored options and batch identity, ({}, {}) if it has none.

    Read-only and forgiving: a file that is not a usable ledger is refused, with its reason,
    when the batch opens it.
    """
    # Only the meta table is read: the whole-file check (quick_check) is the batch's own, when
    # it opens the file, and running it here too cost a resume over 1M runs 0.6 s each time.
    try:
        if not files.precheck(path):
            return {}, {}
        conn = files.connect_readonly(path)
    except (StateError, sqlite3.Error):
        return {}, {}
    try:
        if conn.execute("PRAGMA application_id").fetchone()[0] != schema.APPLICATION_ID:
            return {}, {}
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error:
        return {}, {}
    finally:
        conn.close()
    try:
        options = orjson.loads(meta.get("options", "{}"))
    except orjson.JSONDecodeError:
        options = {}
    if not isinstance(options, dict) or any(n not in meta for n in schema.IDENTITY_FIELDS):
        return {}, {}
    return options, {name: str(meta[name]) for name in schema.IDENTITY_FIELDS}


def apply_stored_options(
    ns: argparse.Namespace, env: Mapping[str, str], *, given: frozenset[str]
) -> tuple[dict[str, Any], Mapping[str, str]]:
    """Fill the options not given on the command line from the state file's batch.

    Precedence: the command line, then the state file, then the environment, then the
    default; but the batch identity (base URL, op, org, sandbox) comes from the state file only
    when neither names it, so that a mismatch is refused rather than silently overridden.
    Return the stored options and the environment to build with.
    """
    options, identity = read_stored(ns.state)
    if not identity:
        return options, env
    if options and hasattr(ns, "shard"):  # (no options: the batch never stored them)
        _same_shard(ns, options, named="shard" in given or bool(env.get("BULKRETRY_SHARD")))
    options.setdefault("base_url", identity["base_url"])
    for key in STORED_OPTIONS:
        named = key in given or (key in _IDENTITY_OPTIONS and env.get(_IDENTITY_OPTIONS[key]))
        if key in options and not named:
            setattr(ns, key, options[key])
    env = dict(env)
    for name, var in (("org_id", "BULKRETRY_ORG_ID"), ("sandbox", "BULKRETRY_SANDBOX")):
        if not env.get(var):
            env[var] = identity[name]
    return options, env


def _same_shard(ns: argparse.Namespace, options: Mapping[str, Any], *, named: bool) -> None:
    """Take the state file's ``--shard``; refuse another one named on the command line or in
    the environment: the file holds that shard's runs, and the other shards' runs are not in
    it (they would be sent by this shard and by theirs)."""
    shard = _stored_shard(options, ns.state)
    if named and ns.shard != shard:
        kept = f"shard {shard}" if shard is not None else "the whole input (no --shard)"
        raise ConfigurationError(
            f"--shard {ns.shard}, but the batch of {ns.state} is {kept}: each shard needs its "
            "own state file, and a batch keeps its shard (drop --shard to take the file's)"
        )
    ns.shard = shard


def refuse_shard(options: Mapping[str, Any], path: str) -> None:
    """Refuse to look up the lost answers of one shard of several (``check --state``): another
    shard's new run of the same flow looks like this shard's lost re-trigger."""
    shard = _stored_shard(options, path)
    if shard is not None and shard.count > 1:
        raise ConfigurationError(
            f"{path} is shard {shard} of a batch: a look-up cannot tell another shard's new "
            "run from this shard's lost re-trigger; check all the shards' results together "
            "instead: cat r1.jsonl r2.jsonl ... | bulkretry check"
        )


def _stored_shard(options: Mapping[str, Any], path: str) -> Shard | None:
    """The ``--shard`` a state file's batch stored (None: the whole input)."""
    stored = options.get("shard")
    try:
        return parse_shard(stored) if isinstance(stored, str) else None
    except ValueError as exc:
        raise ConfigurationError(f"the batch of {path} stores a broken shard: {exc}") from None


def options_of(ns: argparse.Namespace) -> dict[str, Any]:
    """Return the options a state file keeps for the batch (paths of secrets, not secrets)."""
    options = {key: getattr(ns, key) for key in STORED_OPTIONS}
    options["shard"] = None if ns.shard is None else str(ns.shard)
    if ns.output not in (None, "-"):
        options["output"] = os.path.realpath(ns.output)
    return options


def configure_status_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``status``'s options to ``parser``."""
    parser.add_argument("--state", required=True, metavar="PATH", help="the batch's state file")
    parser.add_argument(
        "--list",
        choices=STATES,
        metavar="STATE",
        help=f"print the run IDs in STATE ({', '.join(STATES)}), one per line",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        metavar="text|json",
        help="text for people, or the summary object of --summary-json plus the batch's "
        "identity [default text]",
    )


def run_status(ns: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print a batch's counts per state, or (``--list``) the run IDs in one state."""
    # (`status --list ... | head`: a reader that went away is the console script's to handle.)
    return _status(ns, out or sys.stdout)


def _status(ns: argparse.Namespace, out: TextIO) -> int:
    with Ledger.inspect(ns.state) as ledger:
        if ns.list:
            for run_id in ledger.list(ns.list):
                out.write(run_id + "\n")
            out.flush()
            return 0
        info = ledger.info()
        counts = ledger.counts()
        ledger_rounds = ledger.counts(rounds=True)
        if ns.format == "json":
            kinds, codes = ledger.error_counts()
            attempts, ambiguous = ledger.totals()
    if ns.format == "json":
        summary = _status_object(info, counts, kinds, codes, attempts, ambiguous)
        summary["further_rounds"] = dict(ledger_rounds)  # every state, 0 when none
        if ledger_rounds["in_doubt"] + ledger_rounds["in_flight"] and not summary["exit_code"]:
            summary["exit_code"] = 1
        print(orjson.dumps(summary).decode(), file=out)
        return 0
    rate = f"{info['rate']:.1f} runs/s sent" if isinstance(info["rate"], float) else "—"
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
    rounds = {state: n for state, n in ledger_rounds.items() if n}
    if rounds:
        shown = ", ".join(f"{n} {state}" for state, n in rounds.items())
        print(f"{'further rounds':>20}: {shown} (run --follow --rounds)", file=out)
    out.flush()
    return 0


def _status_object(
    info: Mapping[str, Any],
    counts: Mapping[str, int],
    kinds: dict[str, int],
    codes: dict[str, int],
    attempts: int,
    ambiguous: int,
) -> dict[str, Any]:
    """The summary object of ``run --summary-json``, for a state file, plus its identity."""
    errors = ErrorCounts()
    errors.kinds.update(kinds)
    errors.codes.update(codes)
    outcomes = {state: count for state, count in counts.items() if state in _OUTCOMES}
    unfinished = counts["pending"] + counts["not_attempted"]
    code = 3 if unfinished else 1 if counts["failed"] + counts["in_doubt"] else 0
    summary = summary_object(
        outcomes=outcomes,
        errors=errors,
        requests=attempts,
        throttled=None,
        ambiguous_attempts=ambiguous,
        learned_rate=None,
        elapsed=float(info["elapsed"]),
        exit_code=code,
    )
    summary["pending"] = counts["pending"] + counts["in_flight"]
    summary["batch"] = {
        name: info[name] for name in ("base_url", "org_id", "sandbox", "op", "path", "live")
    }
    summary["invocations"] = info["invocations"]
    summary["rate"] = info["rate"]
    return summary
