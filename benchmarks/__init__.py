"""Benchmarks: each figure beside a baseline measured alternately in the same run (the machine is shared)."""
