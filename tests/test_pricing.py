"""Prices as dated data, cost per bucket, and savings: exact numbers per scenario."""

from __future__ import annotations

import datetime as dt

import pytest

from ferrule import pricing
from ferrule.pricing import Usage

# (scenario, model, usage, cost_usd, caching_saved_usd, write_premium_usd)
# USD/Mtok: sonnet 3 / 3.75 / 6 / 0.30 / 15, opus 5 / 6.25 / 10 / 0.50 / 25,
#           haiku 1 / 1.25 / 2 / 0.10 / 5.
COSTS = [
    # 1000*3 + 500*15 = 10500 micro-USD
    ("uncached", "claude-sonnet-4-6", Usage(1000, 0, 0, 0, 500), 0.0105, 0.0, 0.0),
    # 200*3 + 10000*3.75 + 100*15 = 39600; premium 10000*(3.75-3) = 7500
    ("5m write", "claude-sonnet-4-6", Usage(200, 10000, 0, 0, 100), 0.0396, 0.0, 0.0075),
    # 100*5 + 5000*10 + 1000*25 = 75500; premium 5000*(10-5) = 25000
    ("1h write", "claude-opus-4-6", Usage(100, 0, 5000, 0, 1000), 0.0755, 0.0, 0.025),
    # 50*1 + 100000*0.1 + 200*5 = 11050; saved 100000*(1-0.1) = 90000
    ("read", "claude-haiku-4-5", Usage(50, 0, 0, 100000, 200), 0.01105, 0.09, 0.0),
    # every bucket: 1000*3 + 2000*3.75 + 3000*6 + 10000*0.3 + 500*15 = 39000;
    # saved 10000*2.7 = 27000; premium 2000*0.75 + 3000*3 = 10500
    ("all", "claude-sonnet-4-6", Usage(1000, 2000, 3000, 10000, 500), 0.039, 0.027, 0.0105),
    # dated ids and -latest price as their model
    ("dated", "claude-sonnet-4-6-20260101", Usage(1000, 0, 0, 0, 500), 0.0105, 0.0, 0.0),
    ("latest", "claude-opus-4-6-latest", Usage(1_000_000, 0, 0, 0, 0), 5.0, 0.0, 0.0),
    ("zero", "claude-haiku-4-5", Usage(), 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize(
    ("model", "usage", "total", "saved", "premium"),
    [c[1:] for c in COSTS],
    ids=[c[0] for c in COSTS],
)
def test_cost_and_caching_savings(
    model: str, usage: Usage, total: float, saved: float, premium: float
) -> None:
    cost = pricing.cost(model, usage)
    assert cost is not None
    assert cost.total_usd == total
    parts = (
        cost.input_usd,
        cost.cache_write_5m_usd,
        cost.cache_write_1h_usd,
        cost.cache_read_usd,
        cost.output_usd,
    )
    assert sum(parts) == pytest.approx(total, abs=1e-12)
    s = pricing.savings(model, usage)
    assert s.caching_tokens == usage.cache_read_tokens
    assert s.caching_usd == saved
    assert s.cache_write_premium_usd == premium
    assert s.response_cache_usd == 0.0
    assert s.total_usd == pytest.approx(saved - premium)


def test_each_bucket_priced_separately() -> None:
    c = pricing.cost("claude-sonnet-4-6", Usage(1000, 2000, 3000, 10000, 500))
    assert c == pricing.Cost(0.003, 0.0075, 0.018, 0.003, 0.0075, 0.039)


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-9", "", "claude-3-5-haiku-20241022"])
def test_unknown_model_is_unpriced_never_zero(model: str) -> None:
    usage = Usage(1000, 100, 0, 5000, 100)
    assert pricing.cost(model, usage) is None
    acct = pricing.account(model, usage, compression_removed_tokens=300)
    assert acct.cost is None and acct.price is None
    s = acct.savings
    # tokens are still counted; dollars are unknown, not 0
    assert (s.caching_tokens, s.compression_tokens) == (5000, 300)
    assert s.caching_usd is None and s.compression_usd is None and s.response_cache_usd is None
    assert s.total_usd is None


def test_compression_saving_is_removed_tokens_at_input_price() -> None:
    s = pricing.savings("claude-sonnet-4-6", Usage(1000), compression_removed_tokens=2000)
    assert (s.compression_tokens, s.compression_usd) == (2000, 0.006)  # 2000 * 3
    s = pricing.savings("claude-opus-4-6", Usage(1000), compression_removed_tokens=-5)
    assert (s.compression_tokens, s.compression_usd) == (0, 0.0)


def test_response_cache_hit_saves_the_whole_request() -> None:
    usage = Usage(1000, 0, 0, 4000, 500)  # the replayed response's usage
    acct = pricing.account(
        "claude-sonnet-4-6", usage, compression_removed_tokens=700, response_cache_hit=True
    )
    assert acct.cost is not None and acct.cost.total_usd == 0.0  # nothing billed
    s = acct.savings
    # 1000*3 + 4000*0.3 + 500*15 = 11700 micro-USD; no caching/compression double count
    assert (s.response_cache_tokens, s.response_cache_usd) == (5500, 0.0117)
    assert (s.caching_tokens, s.caching_usd, s.compression_tokens) == (0, 0.0, 0)
    assert s.total_usd == 0.0117
    unpriced = pricing.account("mystery", usage, response_cache_hit=True)
    assert unpriced.cost is None
    assert (unpriced.savings.response_cache_tokens, unpriced.savings.response_cache_usd) == (
        5500,
        None,
    )


def test_packaged_table_matches_the_reference() -> None:
    table = pricing.default_table()  # the prices of data/models.toml
    assert {"claude-haiku-4-5-20251001", "claude-opus-4-6", "claude-sonnet-4-6"} <= set(
        table.models
    )
    assert table.checked == dt.date(2026, 12, 6)
    expected = {
        "claude-opus-4-6": ("5", "6.25", "10", "0.5", "25"),
        "claude-sonnet-4-6": ("3", "3.75", "6", "0.3", "15"),
        "claude-haiku-4-5": ("1", "1.25", "2", "0.1", "5"),
    }
    for model, prices in expected.items():
        p = table.lookup(model)
        assert p is not None
        got = (p.input, p.cache_write_5m, p.cache_write_1h, p.cache_read, p.output)
        assert tuple(x.normalize() for x in got) == tuple(
            pricing.Decimal(x).normalize() for x in prices
        )
        # the cache multipliers of the reference: 1.25x, 2x, 0.1x
        assert p.cache_write_5m == p.input * pricing.Decimal("1.25")
        assert p.cache_write_1h == p.input * 2
        assert p.cache_read == p.input / 10


DATED = """
[[price]]
model = "m"
since = 2026-01-01
input = 1.0
cache_write_5m = 1.25
cache_write_1h = 2.0
cache_read = 0.1
output = 5.0

[[price]]
model = "m"
since = 2026-06-01
input = 2.0
cache_write_5m = 2.5
cache_write_1h = 4.0
cache_read = 0.2
output = 10.0
"""


def test_dated_entries_apply_from_their_date() -> None:
    table = pricing.PriceTable.parse(DATED)
    usage = Usage(1_000_000)
    on = {
        dt.date(2025, 12, 1): 1.0,  # before the first entry: the first (older prices unknown)
        dt.date(2026, 1, 1): 1.0,
        dt.date(2026, 5, 31): 1.0,
        dt.date(2026, 6, 1): 2.0,
        dt.date(2027, 1, 1): 2.0,
    }
    for day, expected in on.items():
        cost = pricing.cost("m-20260101", usage, when=day, table=table)
        assert cost is not None and cost.total_usd == expected, day
    # a Unix time is a UTC date: 2026-05-31T23:59:59Z is still the old price
    ts = dt.datetime(2026, 5, 31, 23, 59, 59, tzinfo=dt.timezone.utc).timestamp()
    assert pricing.cost("m", usage, when=ts, table=table) == pricing.cost(
        "m", usage, when=dt.date(2026, 5, 31), table=table
    )
    newest = pricing.cost("m", usage, table=table)
    assert newest is not None and newest.total_usd == 2.0


@pytest.mark.parametrize(
    "bad",
    [
        '[[price]]\nmodel = "m"\nsince = 2026-01-01\ninput = 1',  # missing buckets
        '[[price]]\nmodel = "m"\nsince = "2026-01-01"\ninput = 1\ncache_write_5m = 1\n'
        "cache_write_1h = 1\ncache_read = 1\noutput = 1",  # since is a string
        '[[price]]\nmodel = "m"\nsince = 2026-01-01\ninput = -1\ncache_write_5m = 1\n'
        "cache_write_1h = 1\ncache_read = 1\noutput = 1",  # negative price
    ],
)
def test_invalid_table_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="price entry 1 is invalid"):
        pricing.PriceTable.parse(bad)


@pytest.mark.parametrize(
    ("model", "canonical"),
    [
        ("claude-sonnet-4-6-20260101", "claude-sonnet-4-6"),
        ("claude-haiku-4-5-latest", "claude-haiku-4-5"),
        ("Claude-Opus-4-6", "claude-opus-4-6"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-sonnet-4-6-2026", "claude-sonnet-4-6-2026"),  # not a date suffix
    ],
)
def test_canonical_model(model: str, canonical: str) -> None:
    assert pricing.canonical_model(model) == canonical


def test_usage_from_anthropic() -> None:
    # the 5m/1h split, when given, is used
    u = Usage.from_anthropic(
        {
            "input_tokens": 12,
            "cache_creation_input_tokens": 300,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
            "cache_read_input_tokens": 4000,
            "output_tokens": 50,
        }
    )
    assert u == Usage(12, 100, 200, 4000, 50)
    # without a split every write is a 5-minute write (the default TTL)
    assert Usage.from_anthropic({"cache_creation_input_tokens": 300}) == Usage(0, 300, 0, 0, 0)
    # a stream: message_start usage, then message_delta usage (later, non-null fields win)
    start = {"input_tokens": 10, "cache_read_input_tokens": 900, "output_tokens": 1}
    delta = {"output_tokens": 77, "input_tokens": None}
    assert Usage.from_anthropic(start, delta) == Usage(10, 0, 0, 900, 77)
    # junk is zero, never an exception
    assert Usage.from_anthropic(None, {"input_tokens": "x", "output_tokens": True}) == Usage()


def _decimal_account(price: pricing.Price, usage: Usage, removed: int) -> tuple[float, ...]:
    """The ledger's figures computed the slow way, in Decimal (how they were computed before
    the integer rates): the reference the integer arithmetic must equal to the bit."""
    from decimal import Decimal

    million = Decimal(1_000_000)
    r_in, r_w5, r_w1, r_read, r_out = price.rates(usage)
    parts = (
        usage.input_tokens * r_in,
        usage.cache_write_5m_tokens * r_w5,
        usage.cache_write_1h_tokens * r_w1,
        usage.cache_read_tokens * r_read,
        usage.output_tokens * r_out,
    )
    premium = usage.cache_write_5m_tokens * (r_w5 - r_in) + usage.cache_write_1h_tokens * (
        r_w1 - r_in
    )
    return (
        *(float(p / million) for p in parts),
        float(sum(parts, Decimal(0)) / million),
        float(usage.cache_read_tokens * (r_in - r_read) / million),
        float(premium / million),
        float(removed * r_in / million),
    )


def test_integer_rates_equal_decimal_arithmetic_to_the_bit() -> None:
    """Every price of the packaged table (both tiers), random and edge token counts: the
    integer arithmetic gives the same floats as Decimal's."""
    import random

    rnd = random.Random(12)
    table = pricing.default_table()
    prices = [table.lookup(m, e.since) for m in table.models for e in table._by_model[m]]
    assert len(prices) >= 5 and any(p and p.long_context for p in prices)
    edges = [0, 1, 3, 7, 999_999, 1_000_000, 200_001, 10**9 + 7]
    checked = 0
    for price in prices:
        assert price is not None
        alone = pricing.PriceTable([price])
        for _ in range(300):
            usage = Usage(*(rnd.choice(edges) if rnd.random() < 0.3 else rnd.randrange(0, 400_000)
                            for _ in range(5)))  # fmt: skip
            removed = rnd.randrange(0, 50_000)
            acct = pricing.account(
                price.model, usage, compression_removed_tokens=removed, table=alone
            )
            assert acct.cost is not None
            got = (
                acct.cost.input_usd, acct.cost.cache_write_5m_usd, acct.cost.cache_write_1h_usd,
                acct.cost.cache_read_usd, acct.cost.output_usd, acct.cost.total_usd,
                acct.savings.caching_usd, acct.savings.cache_write_premium_usd,
                acct.savings.compression_usd,
            )  # fmt: skip
            assert got == _decimal_account(price, usage, removed), (price.model, usage)
            checked += 1
    assert checked >= 1500
