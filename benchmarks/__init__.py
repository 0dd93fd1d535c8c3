"""Benchmarks: the pipeline against the primitives it is made of (see README.md here)."""
