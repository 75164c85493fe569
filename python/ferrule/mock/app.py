"""The simulated Anthropic upstream as a plain ASGI application (Granian's ASGI interface).

Routes: ``POST /v1/messages`` (JSON or SSE), ``POST /v1/messages/count_tokens``,
``GET /v1/models[/{id}]``, and the test-only control endpoints under ``/_mock/``. Anything else is a
404 in Anthropic's error envelope.

A request goes through the checks in the order the API applies them: body size (from
``content-length``, before the body is read), credentials, ``anthropic-version``, JSON, the request
schema and rules (validate.py), then the directives that script the answer (answers.py).
Client disconnects are watched for with ``receive()``, because Granian's ``send()`` keeps succeeding
after the client left (reliability.md, "Verified here"); every pause races that watch, so a
cancelled stream is noticed within milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import orjson

from .answers import Plan, plan_answer
from .directives import Directives, from_request, parse_entry, parse_object
from .errors import ApiError, new_id, should_retry
from .models import MODELS, resolve
from .options import MockOptions
from .sse import CONTENT_TYPE as SSE_CONTENT_TYPE
from .sse import events
from .state import MockState
from .usage import PromptCache, forced, segments
from .validate import API_VERSIONS, validate_request

__all__ = ["ASGIApp", "MockApp", "build_app", "factory"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON = "application/json"
_ORGANIZATION_ID = "6d6c2a4e-6f63-4b2d-8a3e-66657272756c"
_RAW_RECORD_LIMIT = 256 * 1024


class _ClientGone(Exception):
    """The client disconnected while the request body was still being read."""


class _Disconnect:
    """Watches ``receive()`` for ``http.disconnect`` once the body has been read."""

    def __init__(self, receive: Receive) -> None:
        self.event = asyncio.Event()
        self._receive = receive
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.event.set()
                return

    @property
    def gone(self) -> bool:
        return self.event.is_set()

    async def sleep(self, seconds: float) -> bool:
        """Pause up to ``seconds``; True as soon as the client disconnects."""
        if self.event.is_set():
            return True
        if seconds <= 0:
            return False
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.event.wait(), seconds)
        return self.event.is_set()

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class _Request:
    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query: str = scope.get("query_string", b"").decode("latin-1")
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", []):
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers = headers
        self.receive = receive
        self.raw = b""
        self._parsed: Any = None
        self._parse_error: str | None = "nothing read yet"

    async def read_body(self, limit: int) -> bytes:
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(413)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ApiError(413)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self.raw = b"".join(chunks)
        try:
            self._parsed, self._parse_error = orjson.loads(self.raw), None
        except orjson.JSONDecodeError as exc:
            self._parsed, self._parse_error = None, str(exc)
        return self.raw

    @property
    def parsed(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        return self._parsed

    def json(self) -> Any:
        """The body as JSON; a 400 in the API's words when it is not."""
        if self._parse_error is not None:
            raise ApiError(400, f"The request body is not valid JSON: {self._parse_error}")
        return self._parsed


def _bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return None


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[str, str]], content_type: str = _JSON
) -> None:
    all_headers = [("content-type", content_type), *headers, ("content-length", str(len(body)))]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode(), v.encode()) for k, v in all_headers],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class MockApp:
    """One simulated upstream; its state lives as long as the worker process."""

    def __init__(self, options: MockOptions) -> None:
        self.options = options
        self.state = MockState(cache=PromptCache(options.cache_min_tokens))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = _Request(scope, receive)
        request_id = new_id("req")
        try:
            await self._route(request, send, request_id)
        except ApiError as error:
            await self._send_error(send, error, request_id)
        except _ClientGone:
            self.state.requests_cancelled += 1
        except Exception:
            # A bug in the mock: say so in its log, and answer like the API's own 500 if the
            # response has not started yet (if it has, this send fails quietly).
            traceback.print_exc()
            with contextlib.suppress(Exception):
                await self._send_error(send, ApiError(500), request_id)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routing --------------------------------------------------------------------------------

    async def _route(self, request: _Request, send: Send, request_id: str) -> None:
        method, path = request.method, request.path
        if path.startswith("/_mock/"):
            await self._control(request, send)
            return
        self.state.requests += 1
        if method == "POST" and path == "/v1/messages":
            await self._messages(request, send, request_id)
        elif method == "POST" and path == "/v1/messages/count_tokens":
            await self._count_tokens(request, send, request_id)
        elif method == "GET" and (path == "/v1/models" or path.startswith("/v1/models/")):
            await self._models(request, send, request_id)
        else:
            self._record(request)
            known = path in ("/v1/messages", "/v1/messages/count_tokens", "/v1/models")
            if known:
                raise ApiError(405, "Method Not Allowed", error_type="invalid_request_error")
            raise ApiError(404, "Not Found")

    def _record(self, request: _Request, body: Any = None) -> None:
        self.state.recorded.append(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "headers": request.headers,
                "body": body,
                "raw": request.raw[:_RAW_RECORD_LIMIT].decode("utf-8", "replace"),
            }
        )

    def _base_headers(self, request_id: str) -> list[tuple[str, str]]:
        return [("request-id", request_id), ("anthropic-organization-id", _ORGANIZATION_ID)]

    async def _send_error(self, send: Send, error: ApiError, request_id: str) -> None:
        headers = self._base_headers(request_id)
        headers.append(("x-should-retry", "true" if should_retry(error.status) else "false"))
        headers += error.headers
        content_type = "text/html" if error.is_html else _JSON
        await _respond(send, error.status, error.body(request_id), headers, content_type)

    def _authenticate(self, request: _Request) -> str:
        """The API key (``x-api-key``, or the ``Authorization: Bearer`` SDK 2.x sends) and version."""
        key = request.headers.get("x-api-key") or _bearer(request.headers.get("authorization"))
        if not key:
            raise ApiError(401, "x-api-key header is required")
        if self.options.api_key is not None and key != self.options.api_key:
            raise ApiError(401, "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if not version:
            raise ApiError(400, "anthropic-version: header is required")
        if version not in API_VERSIONS:
            raise ApiError(400, f"anthropic-version: unknown version '{version}'")
        return version

    async def _receive(self, request: _Request) -> str:
        """Read and record the body, then check credentials; returns the API version.

        The request is logged before any check, so a test can see what a rejected request carried.
        """
        try:
            await request.read_body(self.options.max_body_bytes)
        except ApiError:
            self._record(request)
            raise
        self._record(request, request.parsed)
        return self._authenticate(request)

    # -- /v1/models -----------------------------------------------------------------------------

    async def _models(self, request: _Request, send: Send, request_id: str) -> None:
        self._record(request)
        self._authenticate(request)
        headers = self._base_headers(request_id)
        if request.path != "/v1/models":
            name = request.path.removeprefix("/v1/models/")
            model = resolve(name)
            if model is None:
                raise ApiError(404, f"model: {name}")
            await _respond(send, 200, orjson.dumps(model.to_json()), headers)
            return
        query = {k: v[-1] for k, v in parse_qs(request.query).items()}
        ids = [m.id for m in MODELS]
        start, stop = 0, len(ids)
        if query.get("after_id") in ids:
            start = ids.index(query["after_id"]) + 1
        if query.get("before_id") in ids:
            stop = ids.index(query["before_id"])
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else 20
        page = list(MODELS[start:stop])
        data = page[: max(1, min(limit, 1000))]
        body = {
            "data": [m.to_json() for m in data],
            "has_more": len(page) > len(data),
            "first_id": data[0].id if data else None,
            "last_id": data[-1].id if data else None,
        }
        await _respond(send, 200, orjson.dumps(body), headers)

    # -- /v1/messages/count_tokens --------------------------------------------------------------

    async def _count_tokens(self, request: _Request, send: Send, request_id: str) -> None:
        version = await self._receive(request)
        body = request.json()
        beta = "anthropic-beta" in request.headers
        validate_request(body, version=version, beta=beta, count_tokens=True)
        total = max(1, sum(s.tokens for s in segments(body)))
        headers = self._base_headers(request_id) + self.state.rate.headers()
        await _respond(send, 200, orjson.dumps({"input_tokens": total}), headers)

    # -- /v1/messages ---------------------------------------------------------------------------

    async def _messages(self, request: _Request, send: Send, request_id: str) -> None:
        state = self.state
        # A scripted entry belongs to the next request that arrives, whatever becomes of it.
        scripted = [state.script.popleft()] if state.script else []
        version = await self._receive(request)
        body = request.json()
        checked = validate_request(body, version=version, beta="anthropic-beta" in request.headers)
        directives = from_request(body, scripted)
        if directives.has("error") or (
            directives.has("midstream_error") and not body.get("stream")
        ):
            raise self._scripted_error(directives)

        segs = segments(body)
        if directives.has("cache"):
            cache = forced(sum(s.tokens for s in segs))
        else:
            cache = state.cache.account(checked.model.id, segs)
        plan = plan_answer(
            body,
            model=checked.model.id,
            directives=directives,
            options=self.options,
            cache=cache,
            thinking_on=checked.thinking_on,
            thinking_display=checked.thinking_display,
        )
        state.rate.count(
            input_tokens=cache.input_tokens + cache.cache_creation + cache.cache_read,
            output_tokens=plan.output_tokens,
        )
        headers = self._base_headers(request_id) + state.rate.headers()
        if directives.unknown:
            headers.append(("x-mock-unknown-directives", ",".join(directives.unknown)))

        disconnect = _Disconnect(request.receive)
        disconnect.start()
        try:
            if body.get("stream"):
                await self._stream(send, plan, directives, headers, disconnect)
            else:
                await self._json(send, plan, directives, headers, disconnect)
        finally:
            await disconnect.stop()

    def _scripted_error(self, directives: Directives) -> ApiError:
        status = int(directives.number("error", 500)) if directives.has("error") else 529
        if not 400 <= status <= 599:
            status = 500
        headers: list[tuple[str, str]] = []
        if status == 429:
            retry_after = directives.number("retry_after", 1)
            headers.append(("retry-after", f"{retry_after:g}"))
            headers += self.state.rate.headers(exhausted=True)
        return ApiError(status, headers=headers)

    def _hang_seconds(self, directives: Directives, name: str) -> float:
        return min(
            self.options.max_hang_s, max(0.0, directives.number(name, self.options.max_hang_s))
        )

    async def _json(
        self,
        send: Send,
        plan: Plan,
        directives: Directives,
        headers: list[tuple[str, str]],
        disconnect: _Disconnect,
    ) -> None:
        # Generating takes as long as streaming would have: one pause per token fragment.
        pause = plan.delay_s * sum(len(b.pieces) for b in plan.blocks)
        if directives.has("stall"):
            pause += self._hang_seconds(directives, "stall")
        if await disconnect.sleep(pause):
            self.state.requests_cancelled += 1
            return
        body = orjson.dumps(plan.to_json())
        if plan.fault not in ("hang", "truncate"):
            await _respond(send, 200, body, headers)
            return
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(k.encode(), v.encode()) for k, v in [("content-type", _JSON), *headers]],
        }
        await send(start)
        if plan.fault == "truncate":
            await send(
                {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
            )
        else:
            # An empty chunk makes the server flush the headers now; then nothing more comes.
            await send({"type": "http.response.body", "body": b"", "more_body": True})
            if await disconnect.sleep(self._hang_seconds(directives, "hang")):
                self.state.requests_cancelled += 1
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(
        self,
        send: Send,
        plan: Plan,
        directives: Directives,
        headers: list[tuple[str, str]],
        disconnect: _Disconnect,
    ) -> None:
        state = self.state
        state.streams_started += 1
        state.open_streams += 1
        outcome = "cancelled"
        try:
            if directives.has("stall") and await disconnect.sleep(
                self._hang_seconds(directives, "stall")
            ):
                return
            start_headers = [
                ("content-type", SSE_CONTENT_TYPE),
                ("cache-control", "no-cache"),
                *headers,
            ]
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(k.encode(), v.encode()) for k, v in start_headers],
                }
            )
            if plan.fault == "hang":
                await send({"type": "http.response.body", "body": b"", "more_body": True})
                if await disconnect.sleep(self._hang_seconds(directives, "hang")):
                    return
            else:
                for chunk, is_token in events(plan):
                    if is_token and plan.delay_s > 0:
                        if await disconnect.sleep(plan.delay_s):
                            return
                    elif disconnect.gone:
                        return
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            outcome = "completed"
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:
            # Any failure to write means the client is gone (servers differ in how they say so).
            outcome = "cancelled"
        finally:
            state.open_streams -= 1
            if outcome == "completed":
                state.streams_completed += 1
            else:
                state.streams_cancelled += 1

    # -- /_mock/ control endpoints --------------------------------------------------------------

    async def _control(self, request: _Request, send: Send) -> None:
        state = self.state
        route = (request.method, request.path)
        if route == ("GET", "/_mock/health"):
            result: Any = {"ok": True}
        elif route == ("GET", "/_mock/stats"):
            result = state.stats()
        elif route == ("GET", "/_mock/requests"):
            result = list(state.recorded)
        elif route == ("POST", "/_mock/reset"):
            await request.read_body(self.options.max_body_bytes)
            state.reset()
            result = {"ok": True}
        elif route == ("POST", "/_mock/script"):
            await request.read_body(self.options.max_body_bytes)
            entries = request.json()
            valid = isinstance(entries, list) and all(
                isinstance(e, (str, int, dict)) and not isinstance(e, bool) for e in entries
            )
            if not valid:
                raise ApiError(
                    400,
                    "/_mock/script takes a JSON list of directive strings, status codes or "
                    "objects with directives, tool_calls and text",
                )
            parsed: list[Directives] = []
            for i, entry in enumerate(entries):
                if not isinstance(entry, dict):
                    parsed.append(parse_entry(entry))
                    continue
                try:
                    parsed.append(parse_object(entry))
                except ValueError as exc:
                    raise ApiError(400, f"/_mock/script entry {i}: {exc}") from None
            # All or nothing: a bad entry queues none, so a test never runs half a script.
            state.script.extend(parsed)
            result = {"queued": len(state.script)}
        else:
            raise ApiError(404, "Not Found")
        await _respond(send, 200, orjson.dumps(result), [])


def build_app(options: MockOptions | None = None) -> ASGIApp:
    """A fresh simulated upstream (with its own empty state)."""
    return MockApp(options or MockOptions())


def factory() -> ASGIApp:
    """Granian's ``--factory`` target: options come from ``FERRULE_MOCK_*`` variables."""
    return build_app(MockOptions.from_env())
