"""Pacing: the throttle, the retry budget and the halt detector."""
