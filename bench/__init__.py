"""Benchmarks: speed as ratios to a floor measured in the same run (never timed asserts)."""
