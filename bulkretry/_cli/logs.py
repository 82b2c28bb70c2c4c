"""Logs on stderr: text for people, or one JSON object per line for log collectors."""

from __future__ import annotations

import logging
import sys

import orjson

__all__ = ["configure_logging"]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(
            {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                "level": record.levelname.lower(),
                "message": record.getMessage(),
            }
        ).decode()


def configure_logging(*, quiet: bool, verbose: bool, fmt: str) -> None:
    """Send the ``bulkretry`` logger to stderr at the level the flags ask for."""
    logger = logging.getLogger("bulkretry")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("bulkretry: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING)
