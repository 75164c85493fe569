"""A very fast fake Anthropic upstream for the upstream-client benchmark.

Raw ``asyncio.Protocol`` on uvloop, HTTP/1.1 keep-alive, no framework. Every request is answered
the same way, whatever its path:

* a body containing ``"stream":true`` (or ``"stream": true``) gets ``text/event-stream``: 56 SSE
  events shaped like Anthropic's (message_start, content_block_start, ping, 50 x
  content_block_delta, content_block_stop, message_delta, message_stop), one HTTP chunk per event
  (``Transfer-Encoding: chunked``, as Anthropic sends them), written in one go;
* any other body gets a fixed ~1 KB ``application/json`` Messages response.

A request header ``x-bench-pace-ms: N`` makes a stream send its events one write at a time with N
ms between them (for the client-disconnect check); a closed downstream then stops the stream,
and the counters below record it.

Usage: ``python fast_upstream.py [--host 127.0.0.1] [--port 8089]``. ``GET /__stats`` returns the
counters (requests, streams, paced streams aborted and active, connections accepted and open) as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import cast

NON_STREAM_TEXT = (
    "Ferrule benchmark reply. " * 30
)  # pads the JSON body to about 1 KB, like a short real answer

NON_STREAM_BODY = json.dumps(
    {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": NON_STREAM_TEXT.strip()}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 512,
            "output_tokens": 180,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    },
    separators=(",", ":"),
).encode()


def _sse(event: str, data: dict[str, object]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _events() -> list[bytes]:
    words = ["Hello", " there", ",", " this", " is", " a", " streamed", " reply", " from", " the"]
    events = [
        _sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-sonnet-4-5-20250929",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 512, "output_tokens": 1},
                },
            },
        ),
        _sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        _sse("ping", {"type": "ping"}),
    ]
    for i in range(50):
        events.append(
            _sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": words[i % len(words)]},
                },
            )
        )
    events += [
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 50},
            },
        ),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    assert len(events) == 56
    return events


EVENTS = _events()
CHUNKS = [b"%x\r\n%b\r\n" % (len(e), e) for e in EVENTS]
LAST_CHUNK = b"0\r\n\r\n"

JSON_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: application/json\r\n"
    b"request-id: req_bench\r\n"
    b"content-length: %d\r\n\r\n%b" % (len(NON_STREAM_BODY), NON_STREAM_BODY)
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"request-id: req_bench\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
STREAM_RESPONSE = STREAM_HEAD + b"".join(CHUNKS) + LAST_CHUNK

STATS = {
    "requests": 0,
    "streams": 0,
    "paced_aborted": 0,
    "paced_active": 0,
    "accepted": 0,
    "open_connections": 0,
    "bad": 0,
}


def _stats_response() -> bytes:
    body = json.dumps(STATS).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (
        len(body),
        body,
    )


class Upstream(asyncio.Protocol):
    __slots__ = ("buf", "closed", "paused_for_pace", "transport")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.paused_for_pace = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        STATS["open_connections"] += 1
        STATS["accepted"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        STATS["open_connections"] -= 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.paused_for_pace:
            self._process()

    def _process(self) -> None:
        buf = self.buf
        transport = self.transport
        assert transport is not None
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            length = 0
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                length = int(head[i + 17 : j if j >= 0 else len(head)])
            elif b"\r\ntransfer-encoding:" in head:
                # Chunked request bodies are not supported: the clients under test send lengths.
                STATS["bad"] += 1
                transport.write(b"HTTP/1.1 411 Length Required\r\ncontent-length: 0\r\n\r\n")
                transport.close()
                return
            total = end + 4 + length
            if len(buf) < total:
                return
            body = bytes(buf[end + 4 : total])
            del buf[:total]
            STATS["requests"] += 1
            if head.startswith(b"get /__stats"):
                transport.write(_stats_response())
            elif b'"stream":true' in body or b'"stream": true' in body:
                STATS["streams"] += 1
                k = head.find(b"\r\nx-bench-pace-ms:")
                if k >= 0:
                    j = head.find(b"\r\n", k + 2)
                    pace_ms = float(head[k + 18 : j if j >= 0 else len(head)])
                    self.paused_for_pace = True
                    asyncio.get_running_loop().create_task(self._paced(pace_ms))
                    return
                transport.write(STREAM_RESPONSE)
            else:
                transport.write(JSON_RESPONSE)
            if b"\r\nconnection: close" in head:
                transport.close()
                return

    async def _paced(self, pace_ms: float) -> None:
        transport = self.transport
        assert transport is not None
        STATS["paced_active"] += 1
        try:
            transport.write(STREAM_HEAD)
            for chunk in CHUNKS:
                if self.closed:
                    STATS["paced_aborted"] += 1
                    return
                transport.write(chunk)
                await asyncio.sleep(pace_ms / 1000)
            if self.closed:
                STATS["paced_aborted"] += 1
                return
            transport.write(LAST_CHUNK)
        finally:
            STATS["paced_active"] -= 1
        self.paused_for_pace = False
        self._process()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"fast_upstream listening on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args.host, args.port))
    except ImportError:  # pragma: no cover - uvloop is a dependency of the project
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
