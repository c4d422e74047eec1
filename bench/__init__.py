"""Benchmarks and probes behind the library decisions in docs/decisions.md."""
