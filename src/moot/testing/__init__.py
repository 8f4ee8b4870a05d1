"""Helpers for testing and benchmarking Moot without a real provider: see `moot.testing.servers`."""
