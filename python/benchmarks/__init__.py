"""Benchmarks of the pipeline and the server (`make bench`, `make bench-pipeline`).

Not part of the `ranker` wheel: run them from python/ as `python -m benchmarks.<name>`.
"""
