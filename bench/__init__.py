"""Benchmarks: `make bench` runs them and prints one table; see bench/RESULTS.md for the latest."""
