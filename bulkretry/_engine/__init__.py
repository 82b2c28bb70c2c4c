"""The engine: triage, flow control, one attempt at a time, the batch."""
