"""Paths to remote ASes: where they come from, how good they are, which one carries the traffic."""
