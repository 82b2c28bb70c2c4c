"""Input and output: read and validate input, deduplicate, weigh results fed back, write results."""
