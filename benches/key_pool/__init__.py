"""Several upstream keys and Anthropic's per-organisation prompt cache: the corpus replayed across
a key pool with affinity, round-robin, and one key.

Run ``.venv/bin/python -m benches.key_pool`` (``--help`` for options)."""
