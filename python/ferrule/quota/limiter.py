"""The arithmetic of limits and budgets, free of any store: the same rules run in SQLite (this
module, inside one transaction) and in Redis (the Lua scripts of ``redis_store``, which mirror
these functions line for line).

Rate limits are GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp):
a limit of ``N`` units per minute has an emission interval ``T = 60 s / N`` per unit and a
*burst* of ``B`` units (``limits_burst`` of the per-minute limit, at least 1). The state is the
theoretical arrival time ``tat``: the bucket is full when ``tat <= now``. A request of ``cost``
units fits when ``max(tat, now) + cost*T - max(B, cost)*T <= now``, and then sets
``tat = max(tat, now) + cost*T``. So any window of 60 s admits at most ``N + B`` units (``N``
in the steady state), and a request larger than the burst (a big ``max_tokens``) is admitted
only when the bucket is full, after which the key waits its debt out.

A token reservation that turns out too large is refunded: ``tat`` moves back by the unused
units (never before ``now``: a bucket holds no more than full), exactly as if only the used
units had been taken; usage above the reservation is charged the same way.

Budgets are in integer nano-dollars (1e-9 USD), so sums across workers and stores are exact
and a counter equals the ledger's float sum to far better than a cent.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from functools import lru_cache

from .. import pricing
from .._pure.meter import duration_text, rfc3339  # the header formats' one home (a kernel's)

__all__ = [
    "NANO",
    "Bucket",
    "Gcra",
    "cost_nano",
    "duration_text",
    "estimate_reserve_nano",
    "period_bounds",
    "refund",
    "reserve_rates",
    "rfc3339",
    "usage_cost_nano",
]

NANO = 1_000_000_000  # nano-dollars per dollar
_MICRO = 1_000_000  # microseconds per second


@dataclass(frozen=True, slots=True)
class Bucket:
    """One per-minute limit: ``limit`` units, ``burst`` of them at once."""

    limit: int
    burst: int
    interval_us: float = field(init=False, repr=False, compare=False)  # microseconds per unit
    limit_text: bytes = field(init=False, repr=False, compare=False)  # for the headers

    def __post_init__(self) -> None:
        # fields, not properties: read on every request
        object.__setattr__(self, "interval_us", 60 * _MICRO / self.limit)
        object.__setattr__(self, "limit_text", b"%d" % self.limit)

    @classmethod
    def per_minute(cls, limit: int, burst_fraction: float) -> Bucket:
        return _per_minute(limit, burst_fraction)


@lru_cache(maxsize=1024)
def _per_minute(limit: int, burst_fraction: float) -> Bucket:
    return Bucket(limit, max(1, math.floor(limit * burst_fraction)))


@dataclass(slots=True)  # not frozen: a frozen init costs a setattr call per field, per request
class Gcra:
    """One decision. Times are microseconds on the store's clock."""

    allowed: bool
    tat: float  # the new state (unchanged when refused)
    retry_after_us: float  # 0 when allowed
    remaining: int  # units that would pass right now, after this decision
    reset_us: float  # until the bucket is full again


def gcra(bucket: Bucket, tat: float, now: float, cost: int) -> Gcra:
    # conditional expressions rather than max(): this runs twice per request
    t = bucket.interval_us
    burst = bucket.burst
    base = tat if tat > now else now
    new_tat = base + cost * t
    allow_at = new_tat - (burst if burst > cost else cost) * t
    # _remaining inlined (every request): max(0, floor((now + burst*t - tat') / t))
    full = now + burst * t
    if now < allow_at:
        left = math.floor((full - base) / t)
        return Gcra(False, tat, allow_at - now, left if left > 0 else 0, base - now)
    left = math.floor((full - new_tat) / t)
    return Gcra(True, new_tat, 0.0, left if left > 0 else 0, new_tat - now)


def refund(bucket: Bucket, tat: float, now: float, units: int) -> float:
    """``tat`` after ``units`` more (positive) or fewer (negative) were used than reserved."""
    if units >= 0:
        return max(tat, now) + units * bucket.interval_us
    return max(now, tat + units * bucket.interval_us)


# -- budgets -----------------------------------------------------------------------------------


def period_bounds(period: str, now: float) -> tuple[str, float | None]:
    """The id of the budget period ``now`` (Unix seconds) falls in, and when it ends (None for
    ``total``). UTC: a day from midnight, a week from Monday (ISO), a month from the 1st."""
    if period == "total":
        return "total", None
    return _period_of_day(period, math.floor(now / 86400))


@lru_cache(maxsize=64)
def _period_of_day(period: str, day: int) -> tuple[str, float | None]:
    # every period starts at a UTC midnight: the answer is the same all day
    d = dt.date(1970, 1, 1) + dt.timedelta(days=day)
    if period == "day":
        start, end = d, d + dt.timedelta(days=1)
        pid = f"d{d.isoformat()}"
    elif period == "week":
        start = d - dt.timedelta(days=d.weekday())
        end = start + dt.timedelta(days=7)
        pid = f"w{start.isoformat()}"
    elif period == "month":
        start = d.replace(day=1)
        end = (start + dt.timedelta(days=32)).replace(day=1)
        pid = f"m{start.isoformat()[:7]}"
    else:
        raise ValueError(f"unknown budget period {period!r}")
    midnight = dt.datetime.combine(end, dt.time(), dt.timezone.utc)
    return pid, midnight.timestamp()


def cost_nano(usd: float | None) -> int:
    """A settled cost (the ledger's float) in nano-dollars."""
    return 0 if usd is None else max(0, round(usd * NANO))


_Rates = tuple[Decimal, Decimal, Decimal, Decimal, Decimal]
_PerToken = tuple[int, int, int, int, int]


def _per_token_nano(rates: _Rates) -> _PerToken | None:
    """USD per Mtok as whole nano-dollars per token (x 1,000), or None when a rate has more
    decimals than that (the exact Decimal path is then taken)."""
    out = []
    for r in rates:
        n = r * 1000
        if n != n.to_integral_value():
            return None
        out.append(int(n))
    return (out[0], out[1], out[2], out[3], out[4])


# id(price) -> (price, its base rates, its long-context rates) as _per_token_nano. Keyed by
# identity: hashing a Price hashes its seven Decimals, which cost more than the arithmetic.
# The entry holds the price, so its id is not reused while the entry lives.
_NANO_RATES: dict[int, tuple[pricing.Price, _PerToken | None, _PerToken | None]] = {}


def _nano_rates(price: pricing.Price) -> tuple[_PerToken | None, _PerToken | None]:
    got = _NANO_RATES.get(id(price))
    if got is None or got[0] is not price:
        t, p = price.long_context, price
        long = None
        if t is not None:
            long = _per_token_nano(
                (t.input, t.cache_write_5m, t.cache_write_1h, t.cache_read, t.output)
            )
        base = _per_token_nano(
            (p.input, p.cache_write_5m, p.cache_write_1h, p.cache_read, p.output)
        )
        if len(_NANO_RATES) >= 1024:  # tables are few; bounded all the same
            _NANO_RATES.clear()
        got = _NANO_RATES[id(price)] = (price, base, long)
    return got[1], got[2]


def usage_cost_nano(price: pricing.Price | None, usage: pricing.UsageLike) -> int:
    """Exactly what the ledger's ``pricing.account`` bills ``usage`` (its Decimal sum), in
    nano-dollars, in integer arithmetic (the settle path runs once per request)."""
    if price is None:
        return 0  # unpriced: the ledger's cost is NULL, nothing is charged
    i, w5, w1, r, o = (
        usage.input_tokens,
        usage.cache_write_5m_tokens,
        usage.cache_write_1h_tokens,
        usage.cache_read_tokens,
        usage.output_tokens,
    )
    base, long = _nano_rates(price)
    tier = price.long_context  # the tier rule of Price.rates
    n = long if tier is not None and i + w5 + w1 + r > tier.above_input_tokens else base
    if n is None:
        rates = price.rates(usage)
        tokens = (i, w5, w1, r, o)
        usd = sum((t * x for t, x in zip(tokens, rates, strict=True)), Decimal(0)) / 1_000_000
        return int((usd * NANO).to_integral_value())
    return i * n[0] + w5 * n[1] + w1 * n[2] + r * n[3] + o * n[4]


def reserve_rates(price: pricing.Price, cache_ttl: str = "5m") -> tuple[int, int] | None:
    """``estimate_reserve_nano``'s two rates for a prompt within the base tier (nano-dollars
    per prompt token, per output token), or None when they are not whole nano-dollars: then
    ``estimate_reserve_nano(price, p, o) == p * rates[0] + o * rates[1]``."""
    n = _nano_rates(price)[0]
    if n is None:
        return None
    return max(n[0], n[2] if cache_ttl == "1h" else n[1]), n[4]


def estimate_reserve_nano(
    price: pricing.Price, prompt_tokens: int, max_output: int, cache_ttl: str = "5m"
) -> int:
    """What a request may cost at most, by estimate: its prompt at the dearest rate a prompt
    token of it can be billed (a cache write, when Ferrule places breakpoints) and its whole
    ``max_tokens`` at the output rate (thinking is output), long-context tier included."""
    tier = price.long_context
    long = tier is not None and prompt_tokens > tier.above_input_tokens
    base, long_rates = _nano_rates(price)
    n = long_rates if long else base
    if n is not None:  # whole nano-dollars per token: integer arithmetic (every request)
        prompt_rate = max(n[0], n[2] if cache_ttl == "1h" else n[1])
        return prompt_tokens * prompt_rate + max_output * n[4]
    rates = price.rates(_usage_of(prompt_tokens, max_output))
    r_in, r_w5, r_w1, _, r_out = rates
    r_prompt = max(r_in, r_w1 if cache_ttl == "1h" else r_w5)
    usd = (prompt_tokens * r_prompt + max_output * r_out) / Decimal(1_000_000)
    return int((usd * NANO).to_integral_value(rounding=ROUND_CEILING))


def _usage_of(prompt_tokens: int, max_output: int) -> pricing.Usage:
    return pricing.Usage(
        input_tokens=prompt_tokens,
        cache_write_5m_tokens=0,
        cache_write_1h_tokens=0,
        cache_read_tokens=0,
        output_tokens=max_output,
    )


# -- header values -------------------------------------------------------------------------
