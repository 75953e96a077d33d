"""Tests of the `make chaos` harness itself."""
