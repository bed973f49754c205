"""Benchmarks of the serving core (run with ``python -m bench.run``; see docs/benchmarks.md)."""
