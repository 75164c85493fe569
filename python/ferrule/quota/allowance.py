"""A worker's allowance: a small share of one key's limits, taken from the shared state in one
transaction, so that the requests that fit in it are admitted without a transaction or an
await of their own (the SQLite store; issue 15 asks keys to cost at most 10% more CPU).

Exact, because the shared state counts the whole allowance as used the moment it is taken:
its requests go through the key's RPM and TPM buckets (``gcra`` with the allowance's size as
the cost), its parallel slots and its budget are held in the worker's holder row like leases.
So no limit can be overshot by the workers together; what an allowance changes is only that a
share of a limit waits in one worker while another may be refused for it. That share is
``SHARE`` of each limit (0.1%), and an allowance is taken only when it holds at least
``MIN_REQUESTS`` requests like the one that asked, on every limit the key has; a key with
small limits (the ones where a request more or less matters) never gets one and is admitted
request by request, exactly as before.

An allowance lives ``LIFE_S``. ``RENEW_AHEAD`` before that (or once a request does not fit in
it) the worker's next batch gives back what was not used: the buckets' unused units
(``limiter.refund``), the unused slots and reservation from the holder row, and it charges the
exact costs of the requests that settled meanwhile to the budget. A request admitted from the
allowance that is still in flight then keeps its slot and reservation in the holder row and
settles like any other. If requests used the allowance and the key's limits did not change
under it, the same transaction takes the next one (``Allowance.renewable``): a busy key's
requests never find their worker without one and wait for a batch. An allowance nobody used is
given back and not renewed, so an idle key holds nothing for long.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .limiter import Bucket, Gcra, gcra

if TYPE_CHECKING:
    from .store import AdmitRequest

__all__ = ["LIFE_S", "MIN_REQUESTS", "RENEW_AHEAD", "SHARE", "Allowance", "Grant", "size_grant"]

SHARE = 0.001  # of each of the key's limits, per worker
MIN_REQUESTS = 32  # requests like the one that asked an allowance must hold, on every limit
# then the unused part goes back and the costs settled in it are written: a worker that dies
# loses at most this much of its settled spend from the budget's counter (the ledger has it)
LIFE_S = 0.25
# renewed this long before it ends: the batch that renews it runs well before its requests
# would find it over (a loaded loop turn is a few milliseconds)
RENEW_AHEAD = 0.05
_MICRO = 1_000_000


@dataclass(slots=True)
class Grant:
    """What a batch takes for an allowance (0: the key has no such limit)."""

    requests: int
    tokens: int
    slots: int
    budget_nano: int
    rpm: Gcra | None  # the buckets after it was taken (for the rate-limit headers)
    tpm: Gcra | None


def size_grant(req: AdmitRequest, now_us: float, state: Sequence[Any], spent: int) -> Grant | None:
    """The allowance a batch may take for ``req``'s key on top of the state it just updated
    (``req`` admitted), or None when any of the key's limits is too small for one or has no
    room for it now. ``state``: the key's row as the batch holds it (RPM and TPM theoretical
    arrival times, requests in flight, nano-dollars reserved)."""
    rpm_tat, tpm_tat, in_flight, reserved = state
    requests = tokens = slots = budget = 0
    rpm = tpm = None
    if req.rpm is not None:
        requests = math.floor(req.rpm.limit * SHARE)
        if requests < MIN_REQUESTS:
            return None
        rpm = gcra(req.rpm, rpm_tat, now_us, requests)
        if not rpm.allowed:
            return None
    if req.tpm is not None:
        tokens = math.floor(req.tpm.limit * SHARE)
        if tokens < MIN_REQUESTS * max(req.tokens, 1):
            return None
        tpm = gcra(req.tpm, tpm_tat, now_us, tokens)
        if not tpm.allowed:
            return None
    if req.max_parallel is not None:
        slots = math.floor(req.max_parallel * SHARE)
        if slots < MIN_REQUESTS or in_flight + slots > req.max_parallel:
            return None
    if req.budget_nano is not None:
        budget = math.floor(req.budget_nano * SHARE)
        if budget < MIN_REQUESTS * max(req.reserve_nano, 1):
            return None
        if spent + reserved + budget > req.budget_nano:
            return None
    return Grant(requests, tokens, slots, budget, rpm, tpm)


@dataclass(slots=True, eq=False)
class Allowance:
    """One key's allowance in one worker (see the module). Counters are what its requests
    took; what is left is the grant minus them."""

    key: str
    holder: str  # the holder row its slots and reservation are in
    period: str  # the budget period it was taken in ("" without a budget)
    rpm: Bucket | None  # the limits it was taken under (a key changed since: not used)
    tpm: Bucket | None
    max_parallel: int | None
    budget_nano: int | None
    grant: Grant
    now_s: float  # when it was taken (the store's clock)
    until: float  # monotonic: no request is admitted from it after this
    asked: AdmitRequest  # the request it was taken for: its renewal is sized the same way
    requests: int = 0  # admitted from it
    tokens_in_flight: int = 0  # TPM estimates of its requests in flight
    tokens_used: int = 0  # usage of its requests settled
    in_flight: int = 0
    reserved_in_flight: int = 0  # budget reservations of its requests in flight
    spent: dict[str, int] = field(default_factory=dict)  # exact costs settled, by period
    spent_total: int = 0
    exhausted: bool = False  # a request did not fit: give it back at the next batch
    stale: bool = False  # the key's limits or budget period changed: not renewed
    returned: bool = False

    def take(
        self,
        rpm: Bucket | None,
        tpm: Bucket | None,
        max_parallel: int | None,
        budget_nano: int | None,
        period: str,
        tokens: int,
        reserve_nano: int,
        now_mono: float,
    ) -> bool:
        """Admit a request (its key's limits, TPM estimate and budget reservation) from the
        allowance; False when it does not fit, the allowance is over or the key's limits
        changed since it was taken. Scalars, not an ``AdmitRequest``: this is every request."""
        if self.returned or now_mono >= self.until:
            return False
        # the plan's buckets are shared objects (``Bucket.per_minute``): identity first
        if (
            (rpm is not self.rpm and rpm != self.rpm)
            or (tpm is not self.tpm and tpm != self.tpm)
            or max_parallel != self.max_parallel
            or budget_nano != self.budget_nano
            or period != self.period
        ):
            self.exhausted = self.stale = True
            return False
        g = self.grant
        if (
            (rpm is not None and self.requests >= g.requests)
            or (tpm is not None and self.tokens_in_flight + self.tokens_used + tokens > g.tokens)
            or (max_parallel is not None and self.in_flight >= g.slots)
            or (
                budget_nano is not None
                and self.reserved_in_flight + self.spent_total + reserve_nano > g.budget_nano
            )
        ):
            self.exhausted = True
            return False
        self.requests += 1
        self.tokens_in_flight += tokens
        self.in_flight += 1
        self.reserved_in_flight += reserve_nano
        return True

    def view(self, now_s: float) -> tuple[int, float, int, float]:
        """``rpm_view`` and ``tpm_view`` at once (zeros for a limit the key does not have)."""
        g = self.grant
        rl, rr = _view(g.rpm, g.requests - self.requests, self.now_s, now_s)
        left = g.tokens - self.tokens_in_flight - self.tokens_used
        tl, tr = _view(g.tpm, left, self.now_s, now_s)
        return rl, rr, tl, tr

    def rpm_view(self, now_s: float) -> tuple[int, float]:
        """The RPM bucket for the rate-limit headers: what would pass now (the shared bucket's
        remaining at the grant plus what is left here) and microseconds until it is full."""
        g = self.grant
        return _view(g.rpm, g.requests - self.requests, self.now_s, now_s)

    def tpm_view(self, now_s: float) -> tuple[int, float]:
        g = self.grant
        return _view(g.tpm, g.tokens - self.tokens_in_flight - self.tokens_used, self.now_s, now_s)

    def settle(self, reserved_nano: int, tokens: int, used: int, period: str, cost: int) -> bool:
        """Settle a request admitted from this allowance (its reservation, TPM estimate,
        tokens used and exact cost); False when the allowance was given back already (the
        request then settles against the holder row like any other)."""
        if self.returned:
            return False
        self.in_flight -= 1
        self.reserved_in_flight -= reserved_nano
        self.tokens_in_flight -= tokens
        self.tokens_used += used
        if cost:
            self.spent[period] = self.spent.get(period, 0) + cost
            self.spent_total += cost
        return True

    def due(self, now_mono: float) -> bool:
        return not self.returned and (self.exhausted or now_mono >= self.until - RENEW_AHEAD)

    @property
    def renewable(self) -> bool:
        """Whether the batch that gives it back takes the next one: requests used it and the
        key's limits are still the ones it was taken under."""
        return self.requests > 0 and not self.stale

    def unused(self) -> tuple[int, int, int, int]:
        """What giving it back returns: requests, tokens (negative: more were used than taken,
        charged), slots, budget reservation (what its requests in flight keep stays held)."""
        g = self.grant
        return (
            g.requests - self.requests if self.rpm is not None else 0,
            g.tokens - self.tokens_in_flight - self.tokens_used if self.tpm is not None else 0,
            g.slots - self.in_flight if self.max_parallel is not None else 0,
            g.budget_nano - self.reserved_in_flight if self.budget_nano is not None else 0,
        )


def _view(after: Gcra | None, left_here: int, taken_s: float, now_s: float) -> tuple[int, float]:
    if after is None:
        return 0, 0.0
    reset = (taken_s - now_s) * _MICRO + after.reset_us
    return after.remaining + (left_here if left_here > 0 else 0), reset if reset > 0 else 0.0
