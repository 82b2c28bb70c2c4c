"""Pacing: the bucket and the controller that steers it (joined as the throttle), the concurrency
cap, the retry budget and the halt detector."""
