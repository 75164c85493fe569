"""The one module that owns the HTTP client to Anthropic, so the engine can be swapped.

Engine: httpx's API over aiohttp's connection pool (``httpx-aiohttp``): plain httpx's own pool
was the bottleneck of a byte pipe on one core (see benches/RESULTS.md, "Upstream HTTP client").
One client per worker process, an explicit pool limit, HTTP/1.1 only (an abandoned HTTP/2
stream is never cancelled upstream; closing an HTTP/1.1 connection is), redirects never
followed, and every streamed response closed by the caller (``aclose``) on every path, which
closes the connection when its body was not read to the end."""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from .config import Config
from .errors import ProxyError

__all__ = ["Upstream", "UpstreamResponse"]

UpstreamResponse = httpx.Response


class Upstream:
    def __init__(self, cfg: Config) -> None:
        self.base = cfg.upstream_url.rstrip("/")
        self._cfg = cfg
        limits = httpx.Limits(
            max_connections=cfg.pool_size, max_keepalive_connections=cfg.pool_size
        )
        timeout = httpx.Timeout(
            connect=cfg.connect_timeout, read=cfg.read_timeout, write=60.0, pool=cfg.pool_timeout
        )

        def session() -> aiohttp.ClientSession:
            # Created lazily inside the running loop (aiohttp binds to the loop it starts on).
            connector = aiohttp.TCPConnector(
                limit=cfg.pool_size, keepalive_timeout=30, enable_cleanup_closed=True
            )
            return aiohttp.ClientSession(connector=connector, auto_decompress=False)

        self.client = httpx.AsyncClient(
            transport=AiohttpTransport(client=session, limits=limits),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )

    async def send(self, path: str, body: bytes, headers: list[tuple[str, str]]) -> httpx.Response:
        """Start a request and return once the status and headers arrived (body not read).

        Connection problems become ProxyError 502/504 in the route's own format upstream of here.
        The caller must ``aclose()`` the response."""
        request = self.client.build_request("POST", self.base + path, content=body, headers=headers)
        try:
            return await self.client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            # NOTE: httpx-aiohttp maps every aiohttp connection error (a refused connection
            # too) to ConnectTimeout; only a real timeout is a 504.
            if isinstance(exc.__cause__, aiohttp.ClientConnectorError):
                raise ProxyError(
                    502, "cannot connect to the upstream (Anthropic)", type="api_error"
                ) from None
            raise ProxyError(
                504, "timed out waiting for the upstream (Anthropic)", type="timeout_error"
            ) from None
        except httpx.HTTPError as exc:
            raise ProxyError(
                502,
                f"cannot reach the upstream (Anthropic): {type(exc).__name__}",
                type="api_error",
            ) from None

    async def aclose(self) -> None:
        await self.client.aclose()
