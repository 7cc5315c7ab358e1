"""Benchmarks of the lakehouse against plain Polars, DuckDB and the JSON parse floor (issue 8).

Run with `make bench` (or `python -m benchmarks.run --help`); see benchmarks/README.md.
"""
