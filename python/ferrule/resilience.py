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
  considered down for ``breaker_cooldown`` seconds and callers fail fast with 503 + retry-after;
  then one trial request is let through (half-open) and a success closes it again.
All state is per worker process; each Granian worker protects itself.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ProxyError
from .upstream import Upstream, UpstreamResponse

__all__ = ["Breaker", "Resilience", "RetryBudget", "RetryPolicy"]

RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    base: float = 0.5
    cap: float = 8.0
    retry_after_cap: float = 60.0
    budget_percent: float = 20.0
    budget_min: int = 3
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0
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

    __slots__ = ("cooldown", "failures", "open_until", "threshold", "trial")

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.open_until = 0.0
        self.trial = False

    def check(self) -> None:
        """Raise a fast 503 while open; let one trial through once the cooldown ran out."""
        if self.failures < self.threshold:
            return
        now = time.monotonic()
        if now < self.open_until or self.trial:
            wait = max(1, round(self.open_until - now)) if now < self.open_until else 1
            raise ProxyError(
                503,
                "the upstream (Anthropic) is failing; Ferrule is failing fast for a few seconds",
                type="overloaded_error",
                code="circuit_open",
                headers=[(b"retry-after", str(wait).encode())],
            )
        self.trial = True  # half-open: this caller is the trial

    def success(self) -> None:
        self.failures = 0
        self.trial = False

    def failure(self) -> None:
        self.failures += 1
        self.trial = False
        if self.failures >= self.threshold:
            self.open_until = time.monotonic() + self.cooldown


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


class Resilience:
    """One per worker: the policy and the shared budget and breaker state."""

    def __init__(self, policy: RetryPolicy, in_flight: Callable[[], int]) -> None:
        self.policy = policy
        self.budget = RetryBudget(policy.budget_percent, policy.budget_min, in_flight)
        self.breaker = Breaker(policy.breaker_threshold, policy.breaker_cooldown)
        self.retries_total = 0

    async def send(
        self, upstream: Upstream, path: str, body: bytes, headers: list[tuple[str, str]]
    ) -> tuple[UpstreamResponse, int]:
        """The upstream response (body unread) and the number of attempts it took.

        Raises ProxyError when every attempt failed without a response to pass back."""
        policy = self.policy
        waited = 0.0
        attempt = 0
        retrying = False  # this request's current attempt is a retry, holding a budget slot
        try:
            while True:
                attempt += 1
                self.breaker.check()
                try:
                    resp = await asyncio.wait_for(
                        upstream.send(path, body, headers), policy.first_byte_timeout
                    )
                except (ProxyError, asyncio.TimeoutError) as exc:
                    err = (
                        exc
                        if isinstance(exc, ProxyError)
                        else ProxyError(
                            504,
                            "the upstream (Anthropic) sent no response in time",
                            type="timeout_error",
                        )
                    )
                    if err.status not in (502, 504):
                        raise
                    self.breaker.failure()
                    delay = self._backoff(attempt)
                    retrying = self._release(retrying)
                    if not self._may_retry(attempt, waited + delay):
                        raise err from None
                    retrying = self._take_slot()
                    waited += await self._sleep(delay)
                    continue
                if resp.status_code < 500 and resp.status_code not in (408, 429):
                    self.breaker.success()
                elif resp.status_code >= 500:
                    self.breaker.failure()
                if not _should_retry(resp) or resp.status_code < 400:
                    return resp, attempt
                asked = _retry_after(resp)
                delay = asked if asked is not None else self._backoff(attempt)
                retrying = self._release(retrying)
                if not self._may_retry(attempt, waited + delay):
                    return resp, attempt  # the caller passes it back with its headers
                await resp.aclose()
                retrying = self._take_slot()
                waited += await self._sleep(delay)
        finally:
            self._release(retrying)

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
