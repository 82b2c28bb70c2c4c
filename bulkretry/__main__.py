"""``python -m bulkretry`` behaves as ``bulkretry``."""

from ._cli import entry

entry()
