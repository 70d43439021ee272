"""Benchmarks of the embedding pipeline (`make bench`); not collected by pytest.

`run.py` is the entry point. Everything heavy runs in subprocesses pointed at a dedicated
database (`bench_clips`), so the developer's own clips and cache are never touched.
"""
