"""Benchmarks (`make bench`, `make bench-quick`): how fast, how big, how close to the limit.

Run as ``python -m bench`` (province scale) or ``python -m bench --quick``. Heavy
pieces run in their own subprocess (``python -m bench.pieces``) so each one's peak
RSS is its own. Results: rich tables on stdout, ``bench/results/latest.json``.
"""
