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

from .. import backend
from .limiter import Bucket, Gcra, gcra

if TYPE_CHECKING:
    from .._pure import AllowanceMeter
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
    """One key's allowance in one worker (see the module). What its requests took is counted
    by its ``meter`` (``backend.AllowanceMeter``: one native call per request admitted or
    settled); what is left is the grant minus that."""

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
    meter: AllowanceMeter = field(init=False)
    stale: bool = False  # the key's limits or budget period changed: not renewed

    def __post_init__(self) -> None:
        g = self.grant
        self.meter = backend.AllowanceMeter(
            g.requests if self.rpm is not None else None,
            g.tokens if self.tpm is not None else None,
            g.slots if self.max_parallel is not None else None,
            g.budget_nano if self.budget_nano is not None else None,
            _bucket(self.rpm, g.rpm),
            _bucket(self.tpm, g.tpm),
            self.now_s,
            self.until,
        )

    @property
    def returned(self) -> bool:
        return self.meter.returned

    @returned.setter
    def returned(self, value: bool) -> None:
        self.meter.returned = value

    def matches(
        self,
        rpm: Bucket | None,
        tpm: Bucket | None,
        max_parallel: int | None,
        budget_nano: int | None,
        period: str,
    ) -> bool:
        """Whether a request asks under the limits it was taken under; when not (the key
        changed, or the budget period), it is given back at the next batch, not renewed."""
        # the plan's buckets are shared objects (``Bucket.per_minute``): identity first
        if (
            (rpm is not self.rpm and rpm != self.rpm)
            or (tpm is not self.tpm and tpm != self.tpm)
            or max_parallel != self.max_parallel
            or budget_nano != self.budget_nano
            or period != self.period
        ):
            self.stale = self.meter.exhausted = True
            return False
        return True

    def view(self, now_s: float) -> tuple[int, float, int, float]:
        """The RPM and TPM buckets for the rate-limit headers: what would pass now (the shared
        bucket's remaining at the grant plus what is left here) and microseconds until it is
        full (zeros for a limit the key does not have)."""
        return self.meter.view(now_s)

    def settle(self, reserved_nano: int, tokens: int, used: int, cost: int) -> bool:
        """Settle a request admitted from this allowance (its reservation, TPM estimate,
        tokens used and exact cost, charged to the allowance's period); False when the
        allowance was given back already (the request then settles against the holder row
        like any other)."""
        return self.meter.settle(reserved_nano, tokens, used, cost)

    def due(self, now_mono: float) -> bool:
        return not self.returned and (self.meter.exhausted or now_mono >= self.until - RENEW_AHEAD)

    @property
    def renewable(self) -> bool:
        """Whether the batch that gives it back takes the next one: requests used it and the
        key's limits are still the ones it was taken under."""
        return self.meter.requests > 0 and not self.stale

    def unused(self) -> tuple[int, int, int, int]:
        """What giving it back returns: requests, tokens (negative: more were used than taken,
        charged), slots, budget reservation (what its requests in flight keep stays held)."""
        return self.meter.unused()


def _bucket(limit: Bucket | None, after: Gcra | None) -> tuple[int, int, float] | None:
    """A bucket as the meter takes it: the limit, and what the grant left of it."""
    if limit is None or after is None:
        return None
    return limit.limit, after.remaining, after.reset_us
