"""The CLI's side of the results file: a resume given its batch's own ``-o`` continues it."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .._io.written import (
    WrittenRecords,
    check_output,
    check_stdout,
    last_record,
    open_output,
)

if TYPE_CHECKING:
    from .._ledger.ledger import Ledger

__all__ = ["check_batch_output", "open_batch_output"]

log = logging.getLogger("bulkretry")


def check_batch_output(ns: argparse.Namespace, inputs: Sequence[str]) -> None:
    """Refuse now the output :func:`open_batch_output` would refuse, opening nothing.

    Called before stdin is read, which may take as long as its producer runs. A batch with a
    state file may go on with its own results file: whether it is its own waits for the ledger.
    """
    path = ns.output
    if path in (None, "-"):
        check_stdout(inputs)
        return
    own = ns.state is not None and not ns.overwrite
    check_output(path, append=ns.append or own, overwrite=ns.overwrite, inputs=inputs)


def open_batch_output(
    ns: argparse.Namespace,
    ledger: Ledger | None,
    stored: Mapping[str, object],
    inputs: Sequence[str],
) -> tuple[int, WrittenRecords | None]:
    """Open the output; a resume given its batch's own results file continues it."""
    path = ns.output
    own = ledger is not None and path not in (None, "-") and not ns.overwrite
    if own and ledger is not None and _is_own_output(path, ledger, stored):
        written = WrittenRecords.of_file(path, follow=bool(getattr(ns, "follow", False)))
        try:
            fd = open_output(path, append=True, overwrite=False, inputs=inputs)
        except BaseException:
            written.close()
            raise
        log.warning(
            "continuing %s (%d records there already): only what it lacks is added",
            path,
            written.count,
        )
        return fd, written
    return open_output(path, append=ns.append, overwrite=ns.overwrite, inputs=inputs), None


def _is_own_output(path: str, ledger: Ledger, stored: Mapping[str, object]) -> bool:
    """True for the results file this batch wrote: its path, and a last record the batch knows."""
    if stored.get("output") != os.path.realpath(path):
        return False
    try:
        if os.path.getsize(path) == 0:
            return False
        last = last_record(path)
    except OSError:
        return False
    if last is None:
        return False
    run_id = last.get("run_id")
    if last.get("outcome") == "invalid":
        return True
    return isinstance(run_id, str) and ledger.knows(run_id)
