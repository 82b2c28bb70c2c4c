"""``python -m bulkretry`` behaves as ``bulkretry``."""

from ._cli.main import entry

entry()
