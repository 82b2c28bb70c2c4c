"""Read and quote text a server wrote: Adobe's error fields, shown as one safe, short line.

Whatever comes over the network (an error message or code, a ``Location``, a request ID, an IMS
error description, a next-page link) ends up in results, logs, halt reasons and on a terminal.
:func:`one_line` is the only sanitiser, and every module that quotes a server calls it: every
character that is not printable becomes a space (newlines, so no forged log lines; ESC and the
escape sequences it starts, BEL, C1 controls such as CSI, bidi overrides, so nothing can drive
or fool the terminal), runs of spaces collapse, and the line is cut at a bounded length.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["FLOW_CODE", "MAX_MESSAGE_CHARS", "adobe_error", "one_line", "server_text"]

#: How much of a server's own text (an error message, a Location) a message quotes.
MAX_MESSAGE_CHARS = 300
#: Flow Service's error codes, as its ``type`` URIs carry them: ``FLOW-<number>-<status>``.
FLOW_CODE = re.compile(r"FLOW-(\d+)-(\d+)")


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Return a server's ``text`` as one printable line of at most ``limit`` characters."""
    if len(text) <= limit and text.isprintable() and "  " not in text and text == text.strip():
        return text
    printable = "".join(c if c.isprintable() else " " for c in text[: limit * 4])
    flat = " ".join(printable.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def server_text(value: object, limit: int = MAX_MESSAGE_CHARS) -> str | None:
    """Return ``value`` as :func:`one_line` if it is a string; None for anything else."""
    return one_line(value, limit) if isinstance(value, str) else None


def adobe_error(body: Any) -> tuple[str | None, str | None, str | None]:
    """Return ``(error_code, type, message)`` from a gateway or Flow Service error body.

    The fields are as the server wrote them: quote them through :func:`one_line`.
    """
    if not isinstance(body, dict):
        return None, None, None
    code = body.get("error_code")
    etype = body.get("type")
    message = body.get("message") or body.get("title")
    report = body.get("report")
    if isinstance(report, dict) and isinstance(report.get("detailed-message"), str):
        message = report["detailed-message"]
    if isinstance(etype, str) and code is None:
        match = FLOW_CODE.search(etype)
        if match:
            code = f"FLOW-{match.group(1)}-{match.group(2)}"
    return (
        str(code) if code is not None else None,
        etype if isinstance(etype, str) else None,
        message if isinstance(message, str) else None,
    )
