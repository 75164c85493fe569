"""The response cache: exact-match answers, keyed per tenant, shared across workers.

- :mod:`.keys`: the cache key (tenant, route, translated request, API version, betas).
- :mod:`.policy`: whether a request reads and/or stores (headers, determinism).
- :mod:`.stores`: the :class:`ResponseStore` interface with memory, SQLite and Redis backends.
- :mod:`.answers`: the stored form (one Anthropic message) and its replay as JSON or SSE.

The routes call, in order: ``decide`` -> ``cache_key`` -> ``store.get`` (HIT: ``load_message``
then render; ``StoreUnavailable``: BYPASS) -> upstream -> ``storable_json`` or
``MessageAccumulator.storable`` -> ``store.set``.
"""

from __future__ import annotations

from .answers import (
    MessageAccumulator,
    hit_usage,
    load_message,
    message_to_sse,
    storable_json,
)
from .keys import cache_key
from .policy import Decision, XCache, decide, decide_for
from .stores import (
    MemoryStore,
    ResponseStore,
    SqliteStore,
    StoreUnavailable,
    default_store_kind,
    open_store,
)

__all__ = [
    "Decision",
    "MemoryStore",
    "MessageAccumulator",
    "ResponseStore",
    "SqliteStore",
    "StoreUnavailable",
    "XCache",
    "cache_key",
    "decide",
    "decide_for",
    "default_store_kind",
    "hit_usage",
    "load_message",
    "message_to_sse",
    "open_store",
    "storable_json",
]
