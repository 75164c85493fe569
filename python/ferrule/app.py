"""The ASGI application: routing, lifespan (one upstream client per worker), error rendering in
each route's own format, and cancellation of the upstream call when the client goes away."""

from __future__ import annotations

import asyncio
import datetime
import gc
import logging
import secrets
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar, overload
from urllib.parse import parse_qs

import orjson

from . import __version__, accesslog, backend, jsonbody, threads
from .asgi import ClientGone, Message, Receive, Scope, Send, body_now, header, send_bytes
from .cache import ResponseStore, default_store_kind, open_store
from .cache.sealed import SealedStore
from .cache.stores import DEFAULT_SQLITE_NAME
from .config import Config, from_environment
from .errors import ProxyError, anthropic_error_body, openai_error_body
from .keys import VirtualKey
from .keys import admin as keys_admin
from .keys.gate import KeyGate, model_allowed, refuse_ferrule_keys
from .largebody import LargeBodies
from .ledger import LedgerWriter, PeriodError, Recorder, ledger_path, resolve_data_dir
from .metrics import Metrics
from .models import KNOWN_MODELS
from .quota import Quota
from .resilience import Resilience, RetryPolicy
from .routes.chat import chat_completions
from .routes.common import Admission, RequestContext, Route
from .routes.messages import count_tokens, messages
from .routes.responses import compact, responses, state_route
from .seal import Sealer, load_sealer
from .services import Services
from .stats_cli import stats_from_query
from .stored_responses import RESPONSES_SQLITE_NAME, ResponseState
from .thinking import THINKING_MAX_BYTES, THINKING_SQLITE_NAME, ThinkingMemory
from .ui import Live
from .ui import handle as ui_handle
from .upstream import UpstreamClient
from .upstream_native import open_upstream

__all__ = ["App", "create_app"]

log = logging.getLogger("ferrule")

Handler = Callable[[Services, RequestContext, Any, Send], Coroutine[Any, Any, None]]

# (method, path) -> (route family, handler)
_POST_ROUTES: dict[str, tuple[Route, Handler]] = {
    "/v1/chat/completions": ("openai", chat_completions),
    "/v1/messages": ("anthropic", messages),
    "/v1/messages/count_tokens": ("anthropic", count_tokens),
    "/v1/responses": ("openai", responses),
    "/v1/responses/compact": ("openai", compact),
}


_T = TypeVar("_T")


class _Forward(Generic[_T]):
    """An ``App`` attribute that lives on the app's ``Services`` record (read and set there)."""

    def __set_name__(self, owner: type[object], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: type[object] | None = None) -> _Forward[_T]: ...

    @overload
    def __get__(self, obj: App, objtype: type[object] | None = None) -> _T: ...

    def __get__(self, obj: App | None, objtype: type[object] | None = None) -> _T | _Forward[_T]:
        if obj is None:
            return self
        value: _T = getattr(obj.services, self.name)
        return value

    def __set__(self, obj: App, value: _T) -> None:
        setattr(obj.services, self.name, value)


# Python collects its youngest generation every 700 net container allocations. A request leaves
# a few dozen behind (asyncio futures and handles, exceptions, frames caught in cycles), so a
# worker collected every ~25 requests, and each collection also aged whatever the requests in
# flight held: ~40 us of CPU per request under load (a time.thread_time() gc.callbacks count,
# benches/RESULTS.md). Nearly every object a request makes is freed by reference counting, so a
# higher threshold changes what is freed when, not what is kept.
GC_YOUNG_THRESHOLD = 10_000


def _fewer_young_collections() -> None:
    young, middle, old = gc.get_threshold()
    if young and young < GC_YOUNG_THRESHOLD:  # 0: collection turned off; leave it so
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


class App:
    """One worker: the lifecycle (lifespan startup and shutdown), the HTTP dispatch, and the
    routes that are not request stages (health, models, metrics, stats, the dashboard, key
    administration). The proxied routes get ``self.services`` (``ferrule.services``), never
    the App; its attributes of the same names forward to that record."""

    def __init__(self, cfg: Config) -> None:
        resilience = Resilience(
            RetryPolicy(
                max_attempts=cfg.max_attempts,
                base=cfg.retry_base,
                cap=cfg.retry_cap,
                retry_after_cap=cfg.retry_after_cap,
                budget_percent=cfg.retry_budget_percent,
                breaker_threshold=cfg.breaker_threshold,
                breaker_cooldown=cfg.breaker_cooldown,
                first_byte_timeout=cfg.first_byte_timeout,
            ),
            in_flight=lambda: self.in_flight,
        )
        self.in_flight = 0  # proxied requests being served by this worker
        self._helpers_batched = False  # ferrule.threads.batch_helpers ran
        self.admission = Admission(cfg)  # Host, Origin and content type of proxied requests
        self.draining = False
        metrics = Metrics(tenant_label=cfg.metrics_tenant_label, key_label=cfg.metrics_key_label)
        # What the request stages use. The stores (response cache, thinking blocks of tool turns,
        # stored Responses), the sealer, the ledger's recorder and the upstream client are set
        # on it by the lifespan, inside the worker.
        self.services = Services(
            cfg=cfg,
            resilience=resilience,
            metrics=metrics,
            # Virtual keys' limits and budgets (ferrule.quota); its store opens on first use.
            quota=Quota(cfg, metrics, lambda: self.data_dir),
            live=Live(),  # the dashboard's live feed (ferrule.ui.live)
            large_bodies=LargeBodies(cfg.large_body_bytes, cfg.large_body_budget, cfg.body_timeout),
            recorder=Recorder(None, metrics),
        )
        # The ledger writer (a thread) starts in the lifespan too.
        self.ledger: LedgerWriter | None = None
        self.data_dir = resolve_data_dir(cfg.data_dir or None)
        # Virtual keys (keys mode, /admin/keys): the key store, opened on first use
        self.vkeys = KeyGate(cfg, self.data_dir)

    # -- the services' fields, as App attributes (the dashboard, key admin, tests) --------------

    cfg: _Forward[Config] = _Forward()
    resilience: _Forward[Resilience] = _Forward()
    metrics: _Forward[Metrics] = _Forward()
    quota: _Forward[Quota] = _Forward()
    live: _Forward[Live] = _Forward()
    large_bodies: _Forward[LargeBodies] = _Forward()
    upstream: _Forward[UpstreamClient] = _Forward()  # made on first use without lifespan support
    recorder: _Forward[Recorder] = _Forward()
    store: _Forward[ResponseStore | None] = _Forward()
    thinking: _Forward[ThinkingMemory | None] = _Forward()
    responses: _Forward[ResponseState | None] = _Forward()
    sealer: _Forward[Sealer | None] = _Forward()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _fewer_young_collections()
                self.services.upstream = open_upstream(self.cfg)
                await self._open_stores()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.draining = True
                svc = self.services
                upstream = svc.opened_upstream()
                if upstream is not None:
                    await upstream.aclose()
                if svc.store is not None:
                    await svc.store.close()
                if svc.thinking is not None:
                    await svc.thinking.close()
                if svc.responses is not None:
                    await svc.responses.close()
                if self.ledger is not None:
                    await asyncio.to_thread(self.ledger.close)  # flushes what is queued
                await self.vkeys.close()
                await self.quota.close()  # settlements still being written first
                await asyncio.to_thread(self.metrics.close)  # this worker's last snapshot
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _open_stores(self) -> None:
        """The ledger writer, the sealer and the stores, set on ``self.services`` (so that
        every request stage sees them)."""
        svc = self.services
        cfg = svc.cfg
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("data folder %s is not usable (%s): ledger disabled", self.data_dir, exc)
        if cfg.database_url:
            # The shared ledger in PostgreSQL; rows spool under the data folder while it is down.
            from .ledger.postgres import PostgresLedgerWriter, spool_root

            self.ledger = PostgresLedgerWriter(
                cfg.database_url,
                spool_root=spool_root(self.data_dir),
                on_drop=self.metrics.ledger_dropped,
            )
        else:
            self.ledger = LedgerWriter(
                ledger_path(self.data_dir), on_drop=self.metrics.ledger_dropped
            )
        # The request path only queues each record: pricing, metrics and the access log run in
        # the writer's thread, in batches.
        svc.recorder = Recorder(self.ledger, svc.metrics, defer=True)
        try:
            # seals cached answers and kept thinking blocks at rest (ferrule.seal)
            sealer = load_sealer(cfg.secret_key, self.data_dir)
        except OSError as exc:
            # No data folder to keep a generated secret in: one for this process only (its
            # memory stores work; nothing sealed with it outlives the process anyway).
            log.warning("secret key not kept (%s): a per-process one seals cached data", exc)
            sealer = Sealer([secrets.token_hex(32)])
        svc.sealer = sealer
        kind = cfg.response_cache
        if kind == "auto":
            kind = default_store_kind(cfg.workers, redis_url=cfg.redis_url or None)
        if kind != "off":
            try:
                svc.store = SealedStore(
                    open_store(
                        kind,
                        path=str(self.data_dir / DEFAULT_SQLITE_NAME),
                        redis_url=cfg.redis_url or None,
                        max_bytes=cfg.response_cache_max_bytes,
                    ),
                    sealer,
                )
            except Exception as exc:  # the proxy serves without a cache rather than not at all
                log.warning("response cache %s unavailable (%s): caching off", kind, exc)
        # Thinking blocks of tool turns, for OpenAI clients (ferrule.thinking): its own store of
        # the same family, so it works whatever the response cache is set to.
        try:
            thinking_store = open_store(
                default_store_kind(cfg.workers, redis_url=cfg.redis_url or None),
                path=str(self.data_dir / THINKING_SQLITE_NAME),
                redis_url=cfg.redis_url or None,
                max_bytes=THINKING_MAX_BYTES,
            )
            svc.thinking = ThinkingMemory(thinking_store, sealer, cfg.thinking_ttl)
        except Exception as exc:  # tool loops with thinking then degrade (ferrule.thinking)
            log.warning("thinking store unavailable (%s): tool turns lose their thinking", exc)
        try:
            svc.responses = ResponseState(
                SealedStore(
                    open_store(
                        default_store_kind(cfg.workers, redis_url=cfg.redis_url or None),
                        path=str(self.data_dir / RESPONSES_SQLITE_NAME),
                        redis_url=cfg.redis_url or None,
                        max_bytes=cfg.response_cache_max_bytes,
                    ),
                    sealer,
                ),
                cfg.responses_ttl,
            )
        except Exception as exc:  # /v1/responses then answers 503
            log.warning("response store unavailable (%s): /v1/responses is off", exc)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._helpers_batched:  # Granian's threads exist once requests come
            self._helpers_batched = True
            threads.batch_helpers()
        path: str = scope["path"]
        method: str = scope["method"]
        route = _POST_ROUTES.get(path)
        family: Route = "anthropic" if path.startswith("/v1/messages") else "openai"
        svc = self.services
        cfg = svc.cfg
        ctx = RequestContext(
            scope, route[0] if route else family, cfg.max_body_bytes, cfg.body_timeout
        )
        ctx.body_now = body_now(send)
        started = False
        answered = [False]  # the last byte of the response went out

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered[0] = True
                # alone in the worker: Granian writes the response before the accounting runs
                threads.hand_over(self.in_flight > (1 if route is not None else 0))

        try:
            if route is not None:
                if method != "POST":
                    raise ProxyError(405, f"{method} is not allowed on {path}; use POST")
                self.admission.check(scope)  # before any work: a web page gets nothing done
                if self.in_flight >= cfg.max_concurrent:
                    # Shed load at once rather than queue without bound.
                    raise ProxyError(
                        503,
                        "Ferrule is at its concurrent request limit; retry shortly",
                        type="overloaded_error",
                        code="concurrency_limit",
                        headers=[(b"retry-after", b"1")],
                    )
                self.in_flight += 1
                try:
                    await self._authorize(ctx)
                    # the chat route parses the body itself, only when its native request
                    # path declines (routes.chat): the path reads the bytes
                    body = await ctx.read_json(
                        receive, svc.large_bodies, parse=route[1] is not chat_completions
                    )
                    await self._until_disconnect(
                        route[1](svc, ctx, body, tracked_send), receive, ctx, answered
                    )
                finally:
                    self.in_flight -= 1
                    kept = ctx.finish()
                    if kept:  # a large request's objects, freed a slice at a time
                        await asyncio.to_thread(jsonbody.dismantle, kept)
            elif method == "GET" and path == "/v1/models":
                if header(scope, b"anthropic-version") is not None:
                    ctx.route = "anthropic"  # an Anthropic SDK gets its own error shape
                # Like the POST routes: with an access key only its holders see this server.
                await self._authorize(ctx)
                await self._models(scope, tracked_send, ctx.vkey)
            elif method == "GET" and path in ("/health", "/healthz"):
                await self._health(tracked_send)
            elif method == "GET" and path == "/health/liveness":
                await send_bytes(tracked_send, 200, b'{"status":"alive"}')
            elif method == "GET" and path == "/health/readiness":
                await self._readiness(tracked_send)
            elif method == "GET" and path == "/metrics":
                if not cfg.metrics_public:  # a scraper may send the key as a Bearer token
                    ctx.authorize(cfg.access_key_sha256, "", bearer_ok=True)
                svc.metrics.set_upstream_pool(svc.upstream.in_use, cfg.pool_size)
                body_bytes, ctype = await asyncio.to_thread(self._render_metrics)
                await send_bytes(tracked_send, 200, body_bytes, ctype.encode())
            elif path.startswith("/v1/responses/") and method in ("GET", "DELETE"):
                await self._authorize(ctx)
                await state_route(svc, ctx, method, path, tracked_send)
            elif method == "GET" and path == "/stats":
                ctx.authorize(cfg.access_key_sha256, "")
                await self._stats(scope, tracked_send)
            elif path == "/ui" or path.startswith("/ui/"):
                await ui_handle(self, scope, receive, tracked_send)  # the dashboard (docs/ui.md)
            elif path == keys_admin.PREFIX or path.startswith(keys_admin.PREFIX + "/"):
                await keys_admin.handle(self, ctx, receive, tracked_send)  # docs/keys.md
            else:
                raise ProxyError(404, f"no route {method} {path}", type="not_found_error")
        except ClientGone:
            log.info("request %s: client went away", ctx.request_id)
        except Exception as exc:
            # An unexpected error is still answered in the caller's format (Granian's own
            # answer would be a plain-text 500).
            err = exc if isinstance(exc, ProxyError) else _unexpected(ctx, exc)
            if started:
                log.warning(
                    "request %s failed after the response started: %s", ctx.request_id, err.message
                )
                return
            own = ctx.response_headers()
            mine = {k for k, _ in own}  # e.g. a virtual key's rate limits: not the upstream's
            headers = [*(h for h in err.headers if h[0] not in mine), *own]
            if ctx.route == "anthropic":
                body_bytes = anthropic_error_body(err, ctx.request_id)
                # Anthropic SDKs read the request id from this header
                headers.append((b"request-id", ctx.request_id.encode()))
            else:
                body_bytes = openai_error_body(err)
            await send_bytes(send, err.status, body_bytes, headers=headers)

    async def _authorize(self, ctx: RequestContext) -> None:
        """Who may call a client route: a virtual key in keys mode (docs/keys.md), else the
        access key (when set) and the caller's or the operator's Anthropic key."""
        cfg = self.services.cfg
        if cfg.auth == "keys":
            if not self.vkeys.admit_now(ctx):  # the worker's cache answers nearly every request
                await self.vkeys.admit(ctx)
        else:
            ctx.authorize(cfg.access_key_sha256, cfg.upstream_api_key)
            refuse_ferrule_keys(ctx, cfg.admin_key_sha256)  # never sent upstream

    async def _until_disconnect(
        self,
        work: Coroutine[Any, Any, None],
        receive: Receive,
        ctx: RequestContext,
        answered: list[bool],
    ) -> None:
        """Run ``work``; if the client disconnects first, cancel it (which closes the upstream
        response, and with it the upstream connection).

        The work runs in this task, not a task of its own, and the watch is the server's own
        future for the next message when it gives one (Granian does): no task is made, run or
        cancelled per request, and the disconnect reaches this task one loop turn sooner.

        NOTE: Granian reports ``http.disconnect`` as soon as a response is complete, even on a
        keep-alive connection; once the last byte went out, the work (storing the answer,
        accounting) is finished, not cancelled."""
        gone = ctx.gone  # only this list is shared with the callback, never the context
        me = asyncio.current_task()
        # [the work is over, this task was cancelled because the client went]
        state = [False, False]

        def on_message(w: asyncio.Future[Any]) -> None:
            # runs on the loop, so only while this task waits inside the work
            if not _disconnected(w):
                return  # cancelled: the work is over
            gone[0] = True  # the pipeline reads it before the upstream call
            if state[0] or answered[0] or me is None:
                return
            state[1] = True
            me.cancel()

        # After the body, the only message ASGI has is ``http.disconnect``. Granian's
        # ``receive()`` returns a future (``asyncio.isfuture``), watched as it is: no task is
        # made, run and cancelled per request. Another server's coroutine becomes a task, which
        # starts to wait before the work does.
        waiting = receive()
        watcher = waiting if asyncio.isfuture(waiting) else asyncio.ensure_future(waiting)
        if watcher is not waiting:
            await asyncio.sleep(0)
        if watcher.done():
            # A client that is already gone (Granian still hands over its body) must not
            # cause an upstream request at all.
            if _disconnected(watcher):
                gone[0] = True
                work.close()
                log.info("request %s: client gone before the upstream call", ctx.request_id)
                return
        else:
            watcher.add_done_callback(on_message)  # Granian's future keeps one callback
        try:
            await work
        except asyncio.CancelledError:
            if not state[1]:
                raise  # cancelled from outside (shutdown): not ours to swallow
            uncancel = getattr(me, "uncancel", None)  # Python 3.11+: the cancel is handled
            if uncancel is not None:
                uncancel()
            log.info("request %s: client went away, upstream call cancelled", ctx.request_id)
        finally:
            state[0] = True
            watcher.cancel()

    def _render_metrics(self) -> tuple[bytes, str]:
        self.recorder.sync()  # this worker's records still queued for the writer count first
        return self.metrics.render()

    async def _models(self, scope: Scope, send: Send, vkey: VirtualKey | None = None) -> None:
        known = KNOWN_MODELS  # keys mode: only the models the key may use
        if vkey is not None and vkey.models:
            known = tuple(m for m in KNOWN_MODELS if model_allowed(vkey, m[0]))
        anthropic_shape = any(k == b"anthropic-version" for k, _ in scope["headers"])
        if anthropic_shape:
            data = [
                {"type": "model", "id": mid, "display_name": name, "created_at": _iso(created)}
                for mid, name, created in known
            ]
            body = {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        else:
            body = {
                "object": "list",
                "data": [
                    {"id": mid, "object": "model", "created": created, "owned_by": "anthropic"}
                    for mid, _, created in known
                ],
            }
        await send_bytes(send, 200, orjson.dumps(body))

    async def _readiness(self, send: Send) -> None:
        checks: dict[str, bool] = {
            "not_draining": not self.draining,
            "ledger_writable": self.ledger is not None and self.ledger.healthy,
        }
        ready = all(checks.values())
        if self.cfg.redis_url and self.store is not None:
            # Reported, never gating: Redis is shared by every replica, so an outage would make
            # them all not-ready at once (a balancer then has nowhere to send), while each one
            # still serves: the cache is bypassed, limits fail open, budgets as configured.
            checks["redis_reachable"] = await self.store.ping()
        status = "ready" if ready else "not_ready"
        if ready and not all(checks.values()):
            status = "degraded"
        body = orjson.dumps({"status": status, "checks": checks})
        await send_bytes(send, 200 if ready else 503, body)

    async def _stats(self, scope: Scope, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))

        def one(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        ledger = self.cfg.database_url or ledger_path(self.data_dir)
        try:
            data = await asyncio.to_thread(
                stats_from_query, ledger, one("since"), one("until"), one("by")
            )
        except PeriodError as exc:
            raise ProxyError(400, str(exc)) from None
        except Exception as exc:
            if not self.cfg.database_url or not _is_db_error(exc):
                raise
            # The shared database is down: say so (the rows wait in the spool), not a 500.
            raise ProxyError(
                503, "the ledger database is unreachable; try again later", type="api_error"
            ) from None
        await send_bytes(send, 200, orjson.dumps(data))

    async def _health(self, send: Send) -> None:
        body = {"status": "ok", "backend": backend.NAME, "version": __version__}
        await send_bytes(send, 200, orjson.dumps(body))


def _is_db_error(exc: Exception) -> bool:
    import psycopg

    from .ledger import LedgerError

    return isinstance(exc, (psycopg.Error, LedgerError))


def _unexpected(ctx: RequestContext, exc: Exception) -> ProxyError:
    """Log a bug: where it happened, not the exception's text (which may quote a header value,
    and so a key)."""
    log.error(
        "request %s: unexpected %s\n%s",
        ctx.request_id,
        type(exc).__name__,
        "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
    )
    return ProxyError(
        500, f"Ferrule failed on this request (internal error, logged as {ctx.request_id})"
    )


def _disconnected(message: asyncio.Future[Any]) -> bool:
    """Whether ``message``, the server's next message once done, says the client has gone
    (not when it was cancelled or failed)."""
    try:
        return bool(message.result()["type"] == "http.disconnect")
    except (asyncio.CancelledError, Exception):
        return False


def _iso(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def create_app() -> App:
    """Granian factory: one App per worker, from the config the parent process validated."""
    cfg = from_environment()
    logging.basicConfig(level=cfg.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    accesslog.configure(cfg.log_level, mode=cfg.access_log)
    threads.enable()  # a Granian worker: its helper threads yield to the loop
    return App(cfg)
