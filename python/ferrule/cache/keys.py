"""The response-cache key: one sha256 over everything that can change the answer.

Covered: the tenant (so one caller can never read another's answer), the route (an OpenAI and an
Anthropic client asking the same thing get separate entries, because their stored forms are
rendered differently at hit time by the routes), the whole translated Anthropic request (model,
messages, system, tools, tool_choice, thinking, every sampling field, stop sequences, metadata),
the ``anthropic-version`` and the ``anthropic-beta`` list.

Left out on purpose: ``stream``. The stored value is one canonical Anthropic message that serves
a streaming and a non-streaming request alike (see ``ferrule.cache.answers``), so the two must
share a key. Betas are compared as a set (order and spacing in the header carry no meaning).

The encoding is canonical: orjson with sorted keys, field by field (a list item by item), so two
bodies that differ only in the order of their object keys share a key. The key is an internal name: it is never sent to clients
(``x-cache`` says only HIT, MISS or BYPASS).

Pass the body *before* ``ferrule.breakpoints.place_breakpoints``: breakpoints do not change the
answer, and keying on the unmarked body keeps entries valid when the breakpoint settings change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["KEY_VERSION", "cache_key", "normalize_betas"]

KEY_VERSION = 2
"""Bump when the key's inputs or encoding change, so old entries are never misread."""


def normalize_betas(betas: str | None) -> list[str]:
    """The ``anthropic-beta`` header as a sorted list of distinct, non-empty names."""
    if not betas:
        return []
    return sorted({b.strip() for b in betas.split(",") if b.strip()})


def cache_key(
    *,
    tenant: str,
    route: str,
    body: Mapping[str, Any],
    anthropic_version: str,
    betas: str | None,
) -> str:
    """The 64-hex-character key of a request's answer (see the module docstring for why)."""
    opts = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    head = {
        "v": KEY_VERSION,
        "tenant": tenant,
        "route": route,
        "anthropic_version": anthropic_version,
        "betas": normalize_betas(betas),
    }
    # OPT_NON_STR_KEYS: a client body parsed elsewhere may hold non-str keys; never crash on it.
    digest = hashlib.sha256(orjson.dumps(head, option=opts))
    # The body field by field, and a list (the messages) item by item: the same canonical
    # bytes as one dump, in pieces, so that a large request (hashed in a thread) never holds
    # the GIL, and with it the event loop, for one long serialization.
    for name in sorted((k for k in body if k != "stream"), key=str):
        value = body[name]
        digest.update(b"\x00" + orjson.dumps(str(name)) + b":")
        if isinstance(value, list):
            digest.update(b"[")
            for item in value:
                digest.update(orjson.dumps(item, option=opts) + b",")
            digest.update(b"]")
        else:
            digest.update(orjson.dumps(value, option=opts))
    return digest.hexdigest()
