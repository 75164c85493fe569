"""Offline prompt-cache simulator: what share of the uncached input cost an agent pays with
Ferrule's automatic breakpoints, against a simple baseline and a clairvoyant bound.

Run ``.venv/bin/python -m benches.cache_sim`` (``--help`` for options)."""
