"""The state file of a batch (``--state``): its format, its lock and its writes."""
