"""Benchmarks: run them as scripts; results land in benchmarks/results/."""
