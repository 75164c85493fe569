"""A large request body goes upstream in pieces, still with its Content-Length (never chunked),
byte for byte; a small one in one write as before."""

from __future__ import annotations

import asyncio

import pytest

from ferrule.config import Config
from ferrule.upstream import Upstream


@pytest.mark.parametrize("size", [100, 3 * 1024 * 1024 + 7])
def test_body_arrives_whole_with_its_length(size: int) -> None:
    async def main() -> tuple[str, bytes]:
        got: dict[str, object] = {}

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            head = (await r.readuntil(b"\r\n\r\n")).decode()
            length = next(
                int(line.split(":", 1)[1])
                for line in head.split("\r\n")
                if line.lower().startswith("content-length:")
            )
            got["head"], got["body"] = head, await r.readexactly(length)
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            await w.drain()
            w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        upstream = Upstream(Config(upstream_url=f"http://127.0.0.1:{port}"))
        body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
        resp = await upstream.send("/v1/messages", body, [("content-type", "application/json")])
        assert await resp.aread() == b"{}"
        await resp.aclose()
        await upstream.aclose()
        server.close()
        assert got["body"] == body
        return str(got["head"]), body

    head, _ = asyncio.run(main())
    assert "transfer-encoding" not in head.lower()
    assert head.lower().count("content-length:") == 1
