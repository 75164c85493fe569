"""Admission and settlement of a virtual key's limits and budget, for the pipeline.

``Quota.admit`` runs before the upstream call: it reserves one request (RPM), the request's
token estimate (TPM: prompt + ``max_tokens``), a parallel slot, and its dollar estimate against
the budget, in one atomic step of the store, or refuses with a 429 in the route's own shape.
``Quota.settle`` runs when the ``Exchange`` writes the ledger row (once, however the request
ended): the parallel slot and the reservation are released, the budget is charged the exact
cost the ledger row gets (``ledger.recorder.account`` of the same record), and the TPM bucket
is refunded what was reserved and not used. No virtual key on the request: nothing happens.

The prompt estimate is one token per 4 bytes of the request body (no tokenizer on the hot
path); it is only a reservation: what is charged is Anthropic's usage.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import backend, pricing
from ..errors import ProxyError
from .allowance import Allowance
from .limiter import (
    NANO,
    Bucket,
    estimate_reserve_nano,
    period_bounds,
    reserve_rates,
    usage_cost_nano,
)
from .limiter import rfc3339 as _rfc3339
from .store import (
    WATCHED,
    AdmitRequest,
    AdmitResult,
    QuotaStore,
    Settlement,
    SQLiteQuotaStore,
    StoreError,
)

if TYPE_CHECKING:
    from ..config import Config
    from ..keys.model import VirtualKey
    from ..ledger.record import RequestRecord
    from ..metrics import Metrics
    from ..routes.common import RequestContext

__all__ = ["Quota", "Ticket", "open_store"]

log = logging.getLogger("ferrule.quota")

_BYTES_PER_TOKEN = 4
_WARN_EVERY_S = 10.0


class _Plan:
    """What a key's record asks of every request for one model, worked out once per record
    (the gate hands out the same record until the key changes): its RPM and TPM buckets,
    parallel limit and budget in nano-dollars (None: not limited), and the model's price as
    the reservation's two integer rates (nano-dollars per prompt and per output token)."""

    __slots__ = ("above", "budget_nano", "limited", "parallel", "period", "price", "rates", "rpm",
                 "tpm", "vkey")  # fmt: skip

    def __init__(
        self,
        vkey: VirtualKey,
        rpm: Bucket | None,
        tpm: Bucket | None,
        parallel: int | None,
        budget_nano: int | None,
        price: pricing.Price | None,
        cache_ttl: str,
    ) -> None:
        self.vkey = vkey  # held, so its id (the plan's key) is not reused while the plan lives
        self.rpm, self.tpm, self.parallel, self.budget_nano = rpm, tpm, parallel, budget_nano
        self.limited = not (
            rpm is None and tpm is None and parallel is None and budget_nano is None
        )
        self.price = price
        # the base tier's rates when they are whole nano-dollars; a prompt above the long
        # context threshold (or rates with more decimals) takes estimate_reserve_nano
        self.rates = reserve_rates(price, cache_ttl) if price is not None else None
        tier = price.long_context if price is not None else None
        self.above = tier.above_input_tokens if tier is not None else 1 << 62
        # the budget period: its id, its end, and the next UTC midnight (worked out again then)
        self.period: tuple[str, float | None, float] = ("", None, -math.inf)

    def period_at(self, now: float) -> tuple[str, float | None]:
        """``period_bounds`` of ``now``, worked out once a UTC day (a period starts at
        midnight)."""
        got = self.period
        if now >= got[2]:
            period, end = period_bounds(self.vkey.budget_period, now)
            got = self.period = (period, end, (math.floor(now / 86400) + 1) * 86400)
        return got[0], got[1]

    def reserve(self, prompt: int, max_out: int, cache_ttl: str) -> int:
        r = self.rates
        if r is not None and prompt <= self.above:
            return prompt * r[0] + max_out * r[1]
        assert self.price is not None
        return estimate_reserve_nano(self.price, prompt, max_out, cache_ttl)


@dataclass(slots=True)
class Ticket:
    """What an admitted request holds until it settles."""

    key: str
    lease_id: str | None
    tpm: Bucket | None
    tokens: int  # reserved for TPM
    period: str  # "" without a budget
    reserve_nano: int  # reserved from the budget
    headers: list[tuple[bytes, bytes]]
    allowance: Allowance | None = None  # admitted from this worker's allowance (SQLite)
    settled: bool = False


def open_store(cfg: Config, data_dir: Path) -> QuotaStore:
    """Redis when ``redis_url`` is set (shared by every process using it), else SQLite in the
    ledger's file (shared by this host's workers)."""
    if cfg.redis_url:
        from .redis_store import RedisQuotaStore

        return RedisQuotaStore(cfg.redis_url)
    from ..ledger import ledger_path

    data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteQuotaStore(ledger_path(data_dir))


class Quota:
    """One per worker. The store is opened on first use (a worker that never sees a virtual
    key never opens it)."""

    def __init__(
        self,
        cfg: Config,
        metrics: Metrics | None = None,
        data_dir: Callable[[], Path] | None = None,
        store: QuotaStore | None = None,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self._data_dir = data_dir
        self._store = store
        self._pending: set[asyncio.Task[None]] = set()
        self._warned_at = -math.inf
        self._plans: dict[tuple[int, bool, str], _Plan] = {}
        self.lease_ttl_s = cfg.stream_deadline + cfg.first_byte_timeout * cfg.max_attempts + 60
        # lease ids: unique across workers and restarts without a syscall per request
        self._lease_prefix = os.urandom(8).hex() + "-"
        self._lease_seq = itertools.count()
        self._price_memo: tuple[int, str, pricing.Price | None] = (-1, "", None)

    @property
    def store(self) -> QuotaStore:
        if self._store is None:
            assert self._data_dir is not None
            self._store = open_store(self.cfg, self._data_dir())
            if isinstance(self._store, SQLiteQuotaStore):
                self._store.on_error = self._flush_failed
        return self._store

    def _flush_failed(self, exc: Exception) -> None:
        if self.metrics is not None:
            self.metrics.quota_store_error("settle")
        log.warning("quota store (sqlite): settlements not written yet (%s); retried", exc)

    # -- admission ------------------------------------------------------------------------------

    def _plan(self, vkey: VirtualKey, rpm_only: bool, model: str) -> _Plan:
        burst = self.cfg.limits_burst
        budgeted = vkey.budget_usd is not None and not rpm_only
        price = None
        if budgeted:
            price = pricing.price_for(model)  # the table is read once per process
            if price is None:
                raise ProxyError(
                    400,
                    f"model {model!r} has no price in Ferrule's table, so the budget of key "
                    f"{vkey.name!r} cannot be enforced for it",
                    code="model_unpriced",
                )
        plan = _Plan(
            vkey,
            Bucket.per_minute(vkey.rpm, burst) if vkey.rpm else None,
            Bucket.per_minute(vkey.tpm, burst) if vkey.tpm and not rpm_only else None,
            vkey.max_parallel if vkey.max_parallel and not rpm_only else None,
            round(vkey.budget_usd * NANO) if vkey.budget_usd is not None and budgeted else None,
            price,
            self.cfg.prompt_cache_ttl,
        )
        if len(self._plans) >= 4096:  # records are replaced when keys change: bounded
            self._plans.clear()
        self._plans[(id(vkey), rpm_only, model)] = plan
        return plan

    async def admit(
        self,
        ctx: RequestContext,
        *,
        model: str,
        max_tokens: Any,
        rpm_only: bool = False,
    ) -> Ticket | None:
        """Reserve this request's share of its key's limits and budget; a ``ProxyError`` (429)
        when it does not fit. None when the request has no virtual key or the key no limit.
        ``max_tokens``: the translated request's (anything but a positive int counts 0)."""
        vkey: VirtualKey | None = getattr(ctx, "vkey", None)
        if vkey is None:
            return None
        plan = self._plans.get((id(vkey), rpm_only, model))
        if plan is None or plan.vkey is not vkey:
            plan = self._plan(vkey, rpm_only, model)
        if not plan.limited:
            return None
        rpm, tpm, parallel, budget_nano = plan.rpm, plan.tpm, plan.parallel, plan.budget_nano
        prompt = len(ctx.raw_body) // _BYTES_PER_TOKEN
        max_out = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 0
        tokens = prompt + max_out
        reserve = 0
        period, period_end = "", None
        now_s = time.time()
        if budget_nano is not None:
            reserve = plan.reserve(prompt, max_out, self.cfg.prompt_cache_ttl)
            period, period_end = plan.period_at(now_s)
        store = self._store
        if type(store) is SQLiteQuotaStore:
            a = store.allowance(vkey.name)
            if a is not None and a.matches(rpm, tpm, parallel, budget_nano, period):
                # from the worker's allowance: no transaction, no await (``quota.allowance``),
                # one native call that takes the request and makes its headers
                anthropic = ctx.route == "anthropic"
                headers = a.meter.admit(tokens, reserve, time.monotonic(), now_s, anthropic)
                if headers is not None:
                    return Ticket(
                        vkey.name, a.holder or None, tpm, tokens, period, reserve, headers, a
                    )
        watched = parallel is not None or budget_nano is not None  # a lease until settled
        # positional: a keyword call of eleven fields costs twice as much (every request)
        req = AdmitRequest(
            vkey.name, rpm, tpm, tokens, parallel, budget_nano, reserve, period, period_end,
            None, self.lease_ttl_s,
        )  # fmt: skip
        try:
            store = self._store if self._store is not None else self.store
            if type(store) is SQLiteQuotaStore:
                # the store names the worker's holder row itself (``AdmitResult.lease``)
                req.lease_id = WATCHED if watched else None
                # the batch's future itself: no coroutine of the store's per request
                waiter = store.admit_waiter(req)
                try:
                    res = await waiter
                except asyncio.CancelledError:
                    store.abandon(req, waiter)
                    raise
            else:
                req.lease_id = self._lease_id() if watched else None
                res = await store.admit(req)
        except (StoreError, OSError, RuntimeError) as exc:  # RuntimeError: no redis-py
            self._store_failed(exc, req)
            return None
        if not res.allowed:
            if self.metrics is not None:
                self.metrics.quota_rejected(res.reason or "")
            raise self._refusal(ctx, vkey, req, res)
        headers = _headers(ctx.route, res, rpm, tpm)
        return Ticket(vkey.name, res.lease, tpm, tokens, period, reserve, headers)

    def _lease_id(self) -> str:
        return self._lease_prefix + str(next(self._lease_seq))

    def _price_on(self, model: str, ts: float) -> pricing.Price | None:
        """``pricing.price_for(model, ts)``, remembered for the last model and UTC day (a
        price applies from a date: the same all day)."""
        day = int(ts // 86400)
        memo = self._price_memo
        if memo[0] == day and memo[1] == model:
            return memo[2]
        price = pricing.price_for(model, ts)
        self._price_memo = (day, model, price)
        return price

    def _store_failed(self, exc: BaseException, req: AdmitRequest) -> None:
        """The store did not answer: refuse (closed) or let the request through (open), as
        configured, with a warning (at most one per 10 s per worker) and a metric."""
        budget_closed = req.budget_nano is not None and self.cfg.budgets_on_redis_error == "closed"
        limits = req.rpm is not None or req.tpm is not None or req.max_parallel is not None
        limits_closed = limits and self.cfg.limits_on_redis_error == "closed"
        closed = budget_closed or limits_closed
        if self.metrics is not None:
            self.metrics.quota_store_error("closed" if closed else "open")
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "quota store (%s) unavailable (%s): requests with %s are %s",
                self._store.kind if self._store is not None else "not opened",
                exc,
                "budgets" if budget_closed else "limits",
                "refused (503)" if closed else "let through unlimited",
            )
        if closed:
            raise ProxyError(
                503,
                "Ferrule cannot check this key's "
                + ("budget" if budget_closed else "rate limits")
                + " right now (its quota store is unavailable); retry shortly",
                type="api_error",
                code="quota_unavailable",
                headers=[(b"retry-after", b"1")],
            )

    def _refusal(
        self, ctx: RequestContext, vkey: VirtualKey, req: AdmitRequest, res: AdmitResult
    ) -> ProxyError:
        anthropic = ctx.route == "anthropic"
        headers = _headers(ctx.route, res, req.rpm, req.tpm)
        retry = res.retry_after_s
        if res.reason == "budget":
            assert vkey.budget_usd is not None
            reset = rfc3339(req.period_end) if req.period_end is not None else None
            when = f"; it resets at {reset}" if reset else " (a total budget does not reset)"
            message = (
                f"key {vkey.name!r} is over its {vkey.budget_period} budget of "
                f"${vkey.budget_usd:.2f}: ${res.spent_nano / NANO:.4f} spent, "
                f"${res.reserved_nano / NANO:.4f} reserved by requests in flight, and this "
                f"request may cost up to ${req.reserve_nano / NANO:.4f}{when}"
            )
            # The SDKs would retry a 429: a budget does not come back within their back-off.
            headers.append((b"x-should-retry", b"false"))
            if reset is not None:
                headers.append((b"x-ferrule-budget-reset", reset.encode()))
                headers.append((b"retry-after", str(max(1, math.ceil(retry))).encode()))
            return ProxyError(
                429,
                message,
                type="rate_limit_error" if anthropic else "insufficient_quota",
                code="budget_exceeded",
                headers=headers,
                extra={"budget_reset_at": reset},
            )
        if res.reason == "parallel":
            message = (
                f"key {vkey.name!r} already has {req.max_parallel} requests in flight, its "
                "limit; retry when one finishes"
            )
            code, etype = "parallel_limit_exceeded", "rate_limit_error"
        else:
            what = "requests" if res.reason == "rpm" else "tokens"
            limit = (
                req.rpm.limit
                if res.reason == "rpm" and req.rpm
                else (req.tpm.limit if req.tpm else 0)
            )
            message = (
                f"rate limit of key {vkey.name!r} reached: {limit} {what} per minute; "
                f"retry in {retry:.3f} s"
            )
            # OpenAI's own 429s name the limit as the type ("requests", "tokens")
            code, etype = "rate_limit_exceeded", what
        headers.append((b"retry-after", str(max(1, math.ceil(retry))).encode()))
        # read first by the openai and anthropic SDKs: the exact wait, not a whole second more
        headers.append((b"retry-after-ms", str(max(1, math.ceil(retry * 1000))).encode()))
        return ProxyError(
            429,
            message,
            type="rate_limit_error" if anthropic else etype,
            code=code,
            headers=headers,
        )

    # -- settlement -----------------------------------------------------------------------------

    def settle(self, ticket: Ticket, record: RequestRecord) -> None:
        """Settle ``ticket`` with the finished request's ledger record (once). Called from
        ``Exchange.close`` (synchronous, possibly while the request is being cancelled): the
        exact cost is computed here, the store is written by a task."""
        if ticket.settled:
            return
        ticket.settled = True
        hit = record.cache_status == "hit"  # a hit is billed $0
        cost = 0
        if ticket.period and not hit:
            # what the ledger row will say: the same record, priced at its start
            cost = usage_cost_nano(self._price_on(record.model, record.ts), record)
        used = 0
        if not hit:
            used = (
                record.input_tokens
                + record.cache_write_5m_tokens
                + record.cache_write_1h_tokens
                + record.cache_read_tokens
                + record.output_tokens
            )
        allowance = ticket.allowance
        if allowance is not None and allowance.meter.settle(
            ticket.reserve_nano, ticket.tokens, used, cost
        ):
            return  # into the worker's allowance: written when it is given back
        delta = used - ticket.tokens if ticket.tpm is not None else 0
        if ticket.lease_id is None and not delta and not cost:
            return
        s = Settlement(
            ticket.key, ticket.lease_id, ticket.tpm, delta, ticket.period, cost, ticket.reserve_nano
        )
        store = self._store if self._store is not None else self.store
        if type(store) is SQLiteQuotaStore:
            store.queue(s)  # rides in the worker's next transaction (no task of its own)
            return
        task = asyncio.ensure_future(self._settle(s))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle(self, s: Settlement) -> None:
        try:
            await self.store.settle(s)
        except (StoreError, OSError) as exc:
            if self.metrics is not None:
                self.metrics.quota_store_error("settle")
            # the lease expires by itself; the spend of this request is not counted
            log.warning(
                "quota store (%s): request of key %r not settled (%s): $%.6f not charged",
                self.store.kind,
                s.key,
                exc,
                s.cost_nano / NANO,
            )

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for settlements still being written (tests, shutdown)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)
        if self._store is not None:
            try:
                await asyncio.wait_for(self._store.flush(), timeout)
            except (StoreError, OSError, asyncio.TimeoutError) as exc:
                log.warning("quota store (%s): settlements not written (%s)", self.store.kind, exc)

    async def close(self) -> None:
        await self.drain()
        if self._store is not None:
            await self._store.close()


def rfc3339(unix_s: float) -> str:
    return _rfc3339(unix_s)


def _headers(
    route: str, res: AdmitResult, rpm: Bucket | None, tpm: Bucket | None
) -> list[tuple[bytes, bytes]]:
    """The key's own rate-limit headers, in the route's convention.

    OpenAI (``x-ratelimit-limit-requests``, ``-remaining-``, ``-reset-`` and the ``-tokens``
    trio; resets as Go durations such as ``12ms``): as api.openai.com sends them, see
    https://community.openai.com/t/how-to-get-rate-limit-reset-time-for-response-api/1268905
    and https://github.com/sashabaranov/go-openai/blob/master/ratelimit.go (parses the reset
    as a duration). Anthropic (``anthropic-ratelimit-requests-limit``, ``-remaining``,
    ``-reset`` and ``anthropic-ratelimit-tokens-*``; resets as RFC 3339 times): as
    api.anthropic.com sends them, see a recorded response at
    https://rdrr.io/cran/tidyllm/src/tests/testthat/claude/api.anthropic.com/v1/messages-e050b5-POST.R
    "remaining" is what would pass right now (the burst), "reset" when the bucket is full."""
    g, h = res.rpm, res.tpm
    return backend.rate_headers(
        route == "anthropic",
        rpm.limit if rpm is not None and g is not None else None,
        tpm.limit if tpm is not None and h is not None else None,
        res.now,
        g.remaining if g is not None else 0,
        g.reset_us if g is not None else 0.0,
        h.remaining if h is not None else 0,
        h.reset_us if h is not None else 0.0,
    )
