"""Retries, a retry budget and a circuit breaker around the upstream call.

Policy (../shared/reference/reliability.md, section A):
- retry only before the first byte reached the client, which is always the case here: this module
  returns a response whose body has not been read, and the routes never retry after that;
- retryable: connection failures, time-to-first-byte timeouts, 408, 409, 429, 500, 502, 503,
  504, 529; never 400/401/403/404/413; an ``x-should-retry`` header overrides the table (as the
  Anthropic SDK does);
- back-off: full jitter, ``uniform(0, min(cap, base * 2**n))``; a ``retry-after`` is honoured when
  the total wait stays within ``retry_after_cap``, else the 429 goes back at once with its headers;
- a retry budget (Envoy's: retries may be at most ``budget_percent`` of requests in flight, with a
  floor of ``budget_min`` concurrent retries) so an upstream outage never multiplies its load;
- a circuit breaker: after ``breaker_threshold`` consecutive failed attempts the upstream is
  considered down for ``breaker_cooldown`` seconds and callers fail fast with 503 + retry-after
  (the seconds left until the trial, so an SDK that honours it is not stalled for longer), and
  a message naming the last failure; then one trial request is let through (half-open) and a
  success closes it again. Only upstream-health signals count as failures: 5xx (529 included),
  connection failures and timeouts. Any answer below 500 is the upstream being up, 429 included:
  a rate limit belongs to one key, and must never make Ferrule fail fast for every other key;
- 429 back-off belongs to the key that got it: a 429 with a ``retry-after`` Ferrule honours
  (within ``retry_after_cap``) cools that upstream key down, and that key's next requests wait
  out the rest before their first attempt, while other keys are not affected. Keys are held as
  a one-way hash (``tenant_id``), in a bounded table.
All state is per worker process; each Granian worker protects itself. The attempts a request
made are written on its ``Tally`` (the request context) as they happen, so they are right in the
answer's ``x-ferrule-attempts``, the ledger and the retries metric even when every one failed.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .errors import ProxyError
from .tenant import tenant_id
from .upstream import UpstreamClient, UpstreamResponse

if TYPE_CHECKING:
    from .upstream_pool import UpstreamPool

__all__ = [
    "Breaker",
    "KeyCooldowns",
    "OneKey",
    "Resilience",
    "RetryBudget",
    "RetryPolicy",
    "Tally",
    "Target",
    "Targets",
]

RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
# Upstream keys remembered as cooling down after a 429, per worker (then the oldest is dropped).
MAX_COOLING_KEYS = 4096


class Tally(Protocol):
    """Where :meth:`Resilience.send` writes how many upstream attempts the request made."""

    attempts: int


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    base: float = 0.5
    cap: float = 8.0
    retry_after_cap: float = 60.0
    budget_percent: float = 20.0
    budget_min: int = 3
    breaker_threshold: int = 5
    breaker_cooldown: float = 5.0
    first_byte_timeout: float = 120.0


class RetryBudget:
    """A retry is allowed while retries in flight stay under ``percent`` of the requests in
    flight (streams being answered included, as Envoy counts them), or under ``minimum``."""

    __slots__ = ("in_flight", "minimum", "percent", "retrying")

    def __init__(self, percent: float, minimum: int, in_flight: Callable[[], int]) -> None:
        self.percent = percent
        self.minimum = minimum
        self.in_flight = in_flight
        self.retrying = 0

    def allows(self) -> bool:
        return self.retrying < max(self.minimum, self.in_flight() * self.percent / 100.0)


class Breaker:
    """Consecutive-failure circuit breaker with a half-open trial."""

    __slots__ = ("cooldown", "failures", "last_cause", "open_until", "threshold", "trial")

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.open_until = 0.0
        self.trial = False
        self.last_cause = ""

    def check(self, host: str = "the upstream") -> bool:
        """Raise a fast 503 while open; let one trial through once the cooldown ran out.
        Returns True when the caller is that trial: it must report ``success``, ``failure`` or
        ``abandon``, else the breaker would stay half-open for good."""
        if self.failures < self.threshold:
            return False
        now = time.monotonic()
        if now < self.open_until or self.trial:
            # Honest: the seconds until a trial may go (1 while one is in flight), never more
            # than the cooldown, so a client that waits that long is not turned away again.
            left = self.open_until - now
            wait = min(max(1, math.ceil(left)), max(1, math.ceil(self.cooldown)))
            cause = f" (last error: {self.last_cause})" if self.last_cause else ""
            raise ProxyError(
                503,
                f"the upstream {host} is failing{cause}; Ferrule fails fast for {wait} s, "
                "then tries it again",
                type="overloaded_error",
                code="circuit_open",
                headers=[(b"retry-after", str(wait).encode())],
            )
        self.trial = True  # half-open: this caller is the trial
        return True

    def success(self) -> None:
        self.failures = 0
        self.trial = False

    def failure(self, cause: str = "") -> None:
        self.failures += 1
        self.trial = False
        if cause:
            self.last_cause = cause
        if self.failures >= self.threshold:
            self.open_until = time.monotonic() + self.cooldown

    def abandon(self) -> None:
        """The trial ended without a verdict (its client went away): the next caller tries."""
        self.trial = False


class KeyCooldowns:
    """Per upstream key: until when the upstream asked it to wait (a 429's ``retry-after``).
    Keys are held as ``tenant_id`` hashes, never as keys; at most ``limit`` of them."""

    __slots__ = ("limit", "until")

    def __init__(self, limit: int = MAX_COOLING_KEYS) -> None:
        self.limit = limit
        self.until: dict[str, float] = {}

    def left(self, key_id: str) -> float:
        """Seconds this key must still wait (0 when it may go)."""
        until = self.until.get(key_id)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self.until[key_id]
            return 0.0
        return left

    def cool(self, key_id: str, seconds: float) -> None:
        now = time.monotonic()
        until = max(now + seconds, self.until.pop(key_id, 0.0))
        if len(self.until) >= self.limit:
            for k in [k for k, t in self.until.items() if t <= now]:
                del self.until[k]
            while len(self.until) >= self.limit:
                del self.until[next(iter(self.until))]  # the oldest entry
        self.until[key_id] = until  # (re)inserted last: eviction order is insertion order


def _should_retry(resp: UpstreamResponse) -> bool:
    flag = resp.headers.get("x-should-retry")
    if flag == "true":
        return True
    if flag == "false":
        return False
    return resp.status_code in RETRYABLE


def _retry_after(resp: UpstreamResponse) -> float | None:
    """Seconds asked for by ``retry-after-ms`` or ``retry-after`` (seconds only; a date is rare
    from Anthropic and treated as absent)."""
    ms = resp.headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = resp.headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            return None
    return None


def _key_id(headers: list[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name == "x-api-key":
            return tenant_id(value)
    return None


class Target(Protocol):
    """Where one attempt goes: something with its own circuit breaker."""

    breaker: Breaker


class Targets(Protocol):
    """The upstream keys one request may use, and what each answer means for them."""

    def next(self, host: str) -> tuple[Target | None, float, ProxyError]:
        """The target of the next attempt, or ``(None, wait, refusal)``: none may be asked for
        ``wait`` seconds (0: none will), and the client gets ``refusal`` if it cannot wait."""
        ...

    def headers(self, target: Target) -> list[tuple[str, str]]:
        """The upstream headers of an attempt on ``target``."""
        ...

    def answered(self, target: Target, status: int, asked: float | None) -> bool:
        """Note ``target``'s answer (``asked``: its retry-after); True when the request should
        move to another target at once."""
        ...


class OneKey:
    """A request with one upstream key: the worker's breaker, and the key's 429 cool-down
    (waited out before the first attempt, set by a 429 whose retry-after Ferrule honours)."""

    __slots__ = ("_headers", "_key_id", "_res", "_started", "breaker")

    def __init__(self, res: Resilience, headers: list[tuple[str, str]]) -> None:
        self._res = res
        self._headers = headers
        self.breaker = res.breaker
        self._key_id = _key_id(headers) if res.cooldowns.until else None
        self._started = False

    def next(self, host: str) -> tuple[Target | None, float, ProxyError]:
        if not self._started:
            self._started = True
            left = self._res.cooldowns.left(self._key_id) if self._key_id is not None else 0.0
            if left > 0:  # this key was told to wait: do so before asking again
                return None, left, ProxyError(429, "this upstream key is rate limited")
        return self, 0.0, _NO_REFUSAL

    def headers(self, target: Target) -> list[tuple[str, str]]:
        return self._headers

    def answered(self, target: Target, status: int, asked: float | None) -> bool:
        if status == 429 and asked is not None and 0 < asked <= self._res.policy.retry_after_cap:
            # a wait Ferrule honours: this key's other requests honour it too
            kid = self._key_id or _key_id(self._headers)
            if kid is not None:
                self._res.cooldowns.cool(kid, asked)
        return False


_NO_REFUSAL = ProxyError(503, "unused")


class Resilience:
    """One per worker: the policy and the shared budget, breaker and key cooldown state."""

    def __init__(self, policy: RetryPolicy, in_flight: Callable[[], int]) -> None:
        self.policy = policy
        self.budget = RetryBudget(policy.budget_percent, policy.budget_min, in_flight)
        self.breaker = Breaker(policy.breaker_threshold, policy.breaker_cooldown)
        self.cooldowns = KeyCooldowns()
        self.retries_total = 0
        # With [[upstream_keys]]: the pool (per-member breakers and cool-downs) that
        # ferrule.upstream_pool sends operator-mode requests through instead.
        self.pool: UpstreamPool | None = None

    async def send(
        self,
        upstream: UpstreamClient,
        path: str,
        body: bytes,
        headers: list[tuple[str, str]],
        tally: Tally,
    ) -> UpstreamResponse:
        """The upstream response (body unread) for a request with one upstream key (the
        caller's or the operator's); see ``send_to``."""
        return await self.send_to(upstream, path, body, OneKey(self, headers), tally)

    async def send_to(
        self, upstream: UpstreamClient, path: str, body: bytes, targets: Targets, tally: Tally
    ) -> UpstreamResponse:
        """The one send loop: each attempt goes to ``targets.next()`` (one key, or a member of
        the upstream key pool), under the retry policy, budget and that target's breaker.
        ``tally.attempts`` is kept up to date with the attempts made (a fast breaker answer
        makes none). Raises ProxyError when every attempt failed without a response to pass
        back."""
        policy = self.policy
        host = upstream.host
        waited = 0.0
        attempt = 0
        retrying = False  # this request's current attempt is a retry, holding a budget slot
        trial: Target | None = None  # the target whose breaker let this request in half-open
        try:
            while True:
                target, wait, refusal = targets.next(host)
                if target is None:  # nothing may be asked now
                    if wait <= 0 or waited + wait > policy.retry_after_cap:
                        raise refusal
                    await asyncio.sleep(wait)
                    waited += wait
                    continue
                trial = target if target.breaker.check(host) else None
                attempt += 1
                tally.attempts = attempt
                try:
                    resp = await upstream.send(
                        path, body, targets.headers(target), policy.first_byte_timeout
                    )
                except (ProxyError, asyncio.TimeoutError) as exc:
                    err = (
                        exc
                        if isinstance(exc, ProxyError)
                        else ProxyError(
                            504,
                            f"the upstream {host} sent no response headers within "
                            f"{policy.first_byte_timeout:g} s",
                            type="timeout_error",
                            code="upstream_timeout",
                        )
                    )
                    if err.status not in (502, 504):
                        raise
                    trial = None
                    target.breaker.failure(err.message)
                    delay = self._backoff(attempt)
                    retrying = self._release(retrying)
                    if not self._may_retry(attempt, waited + delay):
                        raise err from None
                    retrying = self._take_slot()
                    waited += await self._sleep(delay)
                    continue
                trial = None
                status = resp.status_code
                if status >= 500:
                    target.breaker.failure(f"it answered HTTP {status}")
                else:  # the upstream is up; a 4xx is about this request or this key
                    target.breaker.success()
                asked = _retry_after(resp) if status >= 400 else None
                if targets.answered(target, status, asked):
                    # This target is out for now and another may take the request: at once.
                    retrying = self._release(retrying)
                    if not self._may_retry(attempt, waited):
                        return resp
                    await resp.aclose()
                    retrying = self._take_slot()
                    await self._sleep(0.0)
                    continue
                if not _should_retry(resp) or status < 400:
                    return resp
                delay = asked if asked is not None else self._backoff(attempt)
                retrying = self._release(retrying)
                if not self._may_retry(attempt, waited + delay):
                    return resp  # the caller passes it back with its headers
                await resp.aclose()
                retrying = self._take_slot()
                waited += await self._sleep(delay)
        finally:
            self._release(retrying)
            if trial is not None:  # cancelled (the client went away) before the upstream answered
                trial.breaker.abandon()

    def _backoff(self, attempt: int) -> float:
        p = self.policy
        return random.uniform(0, min(p.cap, p.base * 2 ** (attempt - 1)))

    def _may_retry(self, attempt: int, total_wait: float) -> bool:
        p = self.policy
        return attempt < p.max_attempts and total_wait <= p.retry_after_cap and self.budget.allows()

    def _take_slot(self) -> bool:
        """Each retry attempt holds a budget slot from the decision to retry until its answer
        is in (Envoy's budget counts retries in flight), so a second retry is judged again."""
        self.budget.retrying += 1
        return True

    def _release(self, retrying: bool) -> bool:
        if retrying:
            self.budget.retrying -= 1
        return False

    async def _sleep(self, delay: float) -> float:
        self.retries_total += 1
        await asyncio.sleep(delay)
        return delay
