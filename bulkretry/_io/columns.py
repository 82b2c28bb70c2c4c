"""Where the run ID is in a CSV or TSV input line (``--column``): a delimiter and an index."""

from __future__ import annotations

import csv

from .._exceptions import InputError

__all__ = ["Columns"]


class Columns:
    """Where the run ID is in a CSV or TSV input: a delimiter and a column index.

    The delimiter is a tab when the first line holds one, else a comma; fields are read as the
    ``csv`` module reads them (quotes included). A column named by its header skips that line;
    a 1-based number reads every line.
    """

    __slots__ = ("delimiter", "header", "index")

    def __init__(self, delimiter: str, index: int, *, header: bool) -> None:
        self.delimiter = delimiter
        self.index = index
        self.header = header

    def __repr__(self) -> str:
        return f"Columns(delimiter={self.delimiter!r}, index={self.index}, header={self.header})"

    @classmethod
    def of_first_line(cls, raw: bytes, column: str, where: str) -> Columns:
        """Find the column in the first line of input *where*; InputError if a named one is not
        there."""
        delimiter = "\t" if b"\t" in raw else ","
        if column.isdecimal() and int(column) >= 1:
            return cls(delimiter, int(column) - 1, header=False)
        names = [name.strip() for name in _fields(raw, delimiter)]
        if column not in names:
            shown = ", ".join(repr(name) for name in names[:20])
            if column.isdecimal():  # 0: a slip for a 0-based index, most likely
                raise InputError(
                    f"--column {column}: columns are numbered from 1 (and no column in the "
                    f"header of {where} is named {column!r}: {shown})"
                )
            raise InputError(f"--column {column!r} is not in the header of {where} ({shown})")
        return cls(delimiter, names.index(column), header=True)

    def field(self, raw: bytes) -> bytes | None:
        """Return the run ID field of one line, None when the line has no such column."""
        fields = _fields(raw, self.delimiter)
        return fields[self.index].encode() if self.index < len(fields) else None


def _fields(raw: bytes, delimiter: str) -> list[str]:
    text = raw.decode("utf-8", "replace").rstrip("\r\n")
    return next(csv.reader([text], delimiter=delimiter), [])
