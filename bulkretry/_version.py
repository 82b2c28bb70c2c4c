"""The package's version, read by hatchling and by ``--version``."""

__version__ = "0.1.0"
