"""Stored Responses (``/v1/responses`` with ``store``): by (tenant, id), the response object and
the conversation's input items, in a sealed store of the response-cache family, with a TTL.

Its own module so that ``ferrule.services`` can name the type without importing a route."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import orjson

from .cache import StoreUnavailable
from .cache.stores import ResponseStore
from .errors import ProxyError

__all__ = ["RESPONSES_SQLITE_NAME", "ResponseState"]

RESPONSES_SQLITE_NAME = "responses.sqlite3"
_KEY_DOMAIN = b"ferrule-response-v1\x00"
_DELETED = b"\x00deleted"


class ResponseState:
    """Stored responses by (tenant, id): the response object and the conversation's items."""

    def __init__(self, store: ResponseStore, ttl_s: float) -> None:
        self._store = store
        self._ttl = ttl_s

    @staticmethod
    def _key(tenant: str, response_id: str) -> str:
        digest = hashlib.sha256(_KEY_DOMAIN + tenant.encode() + b"\x00" + response_id.encode())
        return "response:" + digest.hexdigest()

    async def save(self, tenant: str, response: dict[str, Any], input_items: list[Any]) -> None:
        value = orjson.dumps({"response": response, "input": input_items})
        # a store that is down: a later previous_response_id gets a clear 404
        with contextlib.suppress(StoreUnavailable):
            await self._store.set(self._key(tenant, response["id"]), value, self._ttl)

    async def load(self, tenant: str, response_id: str) -> dict[str, Any] | None:
        try:
            value = await self._store.get(self._key(tenant, response_id))
        except StoreUnavailable:
            raise ProxyError(
                503, "the response store is unavailable; retry shortly", type="api_error"
            ) from None
        if value is None or value == _DELETED:
            return None
        record = orjson.loads(value)
        return record if isinstance(record, dict) else None

    async def delete(self, tenant: str, response_id: str) -> bool:
        if await self.load(tenant, response_id) is None:
            return False
        await self._store.set(self._key(tenant, response_id), _DELETED, self._ttl)
        return True

    async def close(self) -> None:
        await self._store.close()
