"""Tenants: who a cached answer belongs to, without ever holding the caller's API key.

A response cache must never serve one caller's answer to another, so every cache key starts with
the caller's tenant id. The id is a one-way hash of the API key: stores (memory, SQLite, Redis)
and logs only ever see this short hex string, never the key itself. The hash is domain-separated
(``ferrule-tenant-v1``) so the same key hashed elsewhere for another purpose gives another value.

Sixteen hex characters are 64 bits: a collision between two real keys is out of reach (about
2**32 keys before one is likely), and API keys carry far more entropy than that, so the id gives
nothing away that would help guess a key.
"""

from __future__ import annotations

import hashlib

__all__ = ["tenant_id"]

_DOMAIN = b"ferrule-tenant-v1\x00"


def tenant_id(api_key: str) -> str:
    """A short, stable, one-way id for ``api_key``: 16 lower-case hex characters."""
    return hashlib.sha256(_DOMAIN + api_key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
