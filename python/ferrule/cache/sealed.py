"""A store whose values are sealed at rest (``ferrule.seal``).

Cached answers can carry thinking blocks with Anthropic's signatures and a conversation's
content; the SQLite file and Redis then hold only AES-GCM ciphertext, bound to the entry's key
(itself derived from the tenant), so a value copied under another key does not open. A value that
does not open (a retired secret, a damaged row) reads as a miss: a cache may always forget."""

from __future__ import annotations

from ..seal import Sealer, SealError
from .stores import ResponseStore

__all__ = ["SealedStore"]


class SealedStore(ResponseStore):
    kind = "sealed"

    def __init__(self, inner: ResponseStore, sealer: Sealer) -> None:
        self._inner = inner
        self._sealer = sealer

    async def get(self, key: str) -> bytes | None:
        value = await self._inner.get(key)
        if value is None:
            return None
        try:
            return self._sealer.open(value.decode("ascii"), key.encode())
        except (SealError, UnicodeDecodeError):
            return None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._inner.set(key, self._sealer.seal(value, key.encode()).encode("ascii"), ttl_s)

    async def ping(self) -> bool:
        return await self._inner.ping()

    async def close(self) -> None:
        await self._inner.close()
