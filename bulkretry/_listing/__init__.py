"""Listing failed runs (``list-failed``) page by page."""
