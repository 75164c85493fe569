"""The Keys page's server side: virtual keys through the admin API (``ferrule.keys``), for a
signed-in session. Until keys mode is on (``FERRULE_AUTH=keys``) it answers that keys are off."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..asgi import Receive, Scope, Send
from ..errors import ProxyError

if TYPE_CHECKING:
    from ..app import App

__all__ = ["describe", "handle"]


async def describe(app: App, name: str) -> dict[str, Any] | None:
    """A key's limits and budget use for its page, or None (no keys mode, no such key)."""
    return None


async def handle(
    app: App, scope: Scope, receive: Receive, send: Send, method: str, path: str
) -> None:
    raise ProxyError(
        404,
        "virtual keys are off: start Ferrule with FERRULE_AUTH=keys to manage keys here",
        type="not_found_error",
    )
