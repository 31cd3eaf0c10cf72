"""Benchmarks (`make bench`): real local nodes, results as JSON and plots."""
