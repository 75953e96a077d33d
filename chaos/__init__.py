"""Chaos tooling: fault injection and fuzzing runs kept out of `make test`."""
