"""Count an input's records ahead of reading it, for the progress display's total."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .source import BOM, STDIN

__all__ = ["count_records"]


def count_records(paths: Sequence[str]) -> int | None:
    """Count the lines that will become records, for the progress display's total.

    None when an input is a pipe or stdin: its length is not known before it is read.
    """
    total = 0
    for path in paths:
        if path == STDIN or not os.path.isfile(path):
            return None
        with open(path, "rb") as fh:
            for raw in fh:
                stripped = raw.strip()
                if stripped and not stripped.startswith(b"#") and stripped != BOM:
                    total += 1
    return total
