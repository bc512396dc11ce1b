"""The benchmark: `python -m benchmarks` (see README.md)."""
