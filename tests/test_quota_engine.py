"""The quota engine without a server: GCRA and budget arithmetic, then the two stores (SQLite in
a ledger file, a real redis-server) under concurrency from several processes, then the engine's
429s, headers and store-failure policies with ``VirtualKey`` records built here."""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from ferrule import pricing
from ferrule.config import Config
from ferrule.errors import ProxyError, anthropic_error_body, openai_error_body
from ferrule.keys.model import VirtualKey
from ferrule.ledger.record import RequestRecord
from ferrule.ledger.recorder import account
from ferrule.quota import Bucket, Quota, Settlement, SQLiteQuotaStore, StoreError
from ferrule.quota.engine import _Plan
from ferrule.quota.limiter import (
    NANO,
    cost_nano,
    duration_text,
    estimate_reserve_nano,
    gcra,
    period_bounds,
    refund,
    rfc3339,
    usage_cost_nano,
)
from ferrule.quota.redis_store import RedisQuotaStore
from ferrule.quota.store import QuotaStore
from quota_helpers import admit_request
from redis_server import RedisServer, needs_redis, redis_server_fixture  # noqa: F401

MODEL = "claude-fable-5-2"  # priced in the packaged table: $8 in, $40 out per Mtok
US = 1_000_000


# -- arithmetic -----------------------------------------------------------------------------


def test_gcra_burst_then_one_per_interval() -> None:
    b = Bucket(limit=600, burst=6)  # one every 100 ms
    tat, now = 0.0, 1_000 * US
    taken = 0
    for _ in range(10):
        g = gcra(b, tat, now, 1)
        if g.allowed:
            tat, taken = g.tat, taken + 1
    assert taken == 6
    refused = gcra(b, tat, now, 1)
    assert not refused.allowed and refused.retry_after_us == pytest.approx(100_000)
    assert refused.remaining == 0
    assert gcra(b, tat, now + 100_000, 1).allowed


@pytest.mark.parametrize("rate", [11.0, 25.0, 400.0])
def test_gcra_any_minute_admits_at_most_limit_plus_burst(rate: float) -> None:
    """Open-loop arrivals above the limit: every sliding 60 s window holds at most N + B
    admissions, and a window in the steady state N (+-1)."""
    b = Bucket.per_minute(600, 0.01)
    assert b.burst == 6
    tat, admitted = 0.0, []
    t = 0.0
    while t < 180:
        g = gcra(b, tat, t * US, 1)
        if g.allowed:
            tat = g.tat
            admitted.append(t)
        t += 1 / rate
    for start in [x / 2 for x in range(0, 240)]:
        n = sum(1 for a in admitted if start <= a < start + 60)
        assert n <= 600 + 6
        if start >= 10:
            assert 599 <= n <= 601, (start, n)


def test_large_request_waits_for_a_full_bucket_then_pays_its_debt() -> None:
    b = Bucket.per_minute(6_000, 0.01)  # 100 tokens/s, burst 60
    g = gcra(b, 0.0, 0.0, 1_000)  # larger than the burst: only into a full bucket
    assert g.allowed and g.tat == pytest.approx(10 * US)
    assert not gcra(b, g.tat, 5 * US, 1).allowed  # the debt: 10 s of tokens
    # a refund of 900 tokens: as if only 100 had been taken (1 s)
    tat = refund(b, g.tat, 0.5 * US, -900)
    assert tat == pytest.approx(1 * US)
    assert refund(b, g.tat, 20 * US, -900) == 20 * US  # never fuller than full
    assert refund(b, 0.0, 3 * US, 50) == pytest.approx(3.5 * US)  # usage above the reservation


def test_period_bounds_are_utc_calendar_periods() -> None:
    t = dt.datetime(2026, 12, 9, 15, 30, tzinfo=dt.timezone.utc).timestamp()  # a Wednesday
    day, day_end = period_bounds("day", t)
    week, week_end = period_bounds("week", t)
    month, month_end = period_bounds("month", t)
    assert (day, rfc3339(day_end or 0)) == ("d2026-12-09", "2026-12-10T00:00:00Z")
    assert (week, rfc3339(week_end or 0)) == ("w2026-12-07", "2026-12-14T00:00:00Z")
    assert (month, rfc3339(month_end or 0)) == ("m2026-12", "2027-01-01T00:00:00Z")
    assert period_bounds("total", t) == ("total", None)
    with pytest.raises(ValueError):
        period_bounds("year", t)


@pytest.mark.parametrize("model", [MODEL, "claude-sonnet-4-6", "claude-haiku-5-5"])
@pytest.mark.parametrize(
    "tokens",
    [(90, 0, 0, 0, 37), (1200, 4000, 0, 9000, 800), (3, 0, 2048, 150_000, 64_000), (0,) * 5],
)
def test_settled_cost_is_the_ledgers_cost(model: str, tokens: tuple[int, ...]) -> None:
    """The integer settle path bills exactly what the ledger's Decimal ``account`` bills
    (cache writes and reads, output, a long-context tier)."""
    rec = RequestRecord(request_id="r", route="x", model=model)
    (rec.input_tokens, rec.cache_write_5m_tokens, rec.cache_write_1h_tokens,
     rec.cache_read_tokens, rec.output_tokens) = tokens  # fmt: skip
    ledger = account(rec).cost
    nano = usage_cost_nano(pricing.price_for(model, rec.ts), rec)
    if ledger is None:
        assert nano == 0
    else:
        assert nano == round(ledger.total_usd * NANO)


@pytest.mark.parametrize("model", pricing.default_table().models)
def test_reserve_estimate_is_the_decimal_sum_for_every_model_and_tier(model: str) -> None:
    """The cached integer path gives what the Decimal formula gives, on both sides of each
    model's long-context threshold and for both cache TTLs."""
    price = pricing.default_table().lookup(model)
    assert price is not None
    above = price.long_context.above_input_tokens if price.long_context else 200_000
    for prompt in (0, 1, 999, above - 1, above, above + 1, 3 * above):
        for max_out, ttl in ((0, "5m"), (64_000, "5m"), (777, "1h")):
            usage = pricing.Usage(
                input_tokens=prompt,
                cache_write_5m_tokens=0,
                cache_write_1h_tokens=0,
                cache_read_tokens=0,
                output_tokens=max_out,
            )
            r_in, r_w5, r_w1, _, r_out = price.rates(usage)
            rate = max(r_in, r_w1 if ttl == "1h" else r_w5)
            usd = (prompt * rate + max_out * r_out) / Decimal(1_000_000)
            want = int((usd * NANO).to_integral_value(rounding=ROUND_CEILING))
            assert estimate_reserve_nano(price, prompt, max_out, ttl) == want
            # the engine's per-key plan: the same figure from its two cached integer rates
            plan = _Plan(_key(), None, None, None, 1, price, ttl)
            assert plan.reserve(prompt, max_out, ttl) == want


def test_reserve_estimate_prices_prompt_and_max_output() -> None:
    price = pricing.price_for(MODEL)
    assert price is not None
    # 1,000 prompt tokens at the 5-minute write rate (1.25 x input) + 500 output tokens
    expected = (1000 * price.cache_write_5m + 500 * price.output) / 1_000_000
    assert estimate_reserve_nano(price, 1000, 500) == round(expected * NANO)
    assert estimate_reserve_nano(price, 1000, 500, "1h") > estimate_reserve_nano(price, 1000, 500)
    assert cost_nano(0.0123456789) == 12_345_679 and cost_nano(None) == 0
    assert duration_text(12_000) == "12ms" and duration_text(6_500_000) == "6.5s"
    assert duration_text(60_000_000) == "1m0s"


# -- the stores -----------------------------------------------------------------------------


_req = admit_request


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=needs_redis)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield "sqlite:" + str(tmp_path / "ledger.sqlite3")
        return
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.kill()


def _open(url: str) -> QuotaStore:
    if url.startswith("sqlite:"):
        return SQLiteQuotaStore(url.removeprefix("sqlite:"))
    return RedisQuotaStore(url)


def _worker(url: str, key: str, kind: str, n: int, start_at: float) -> list[str]:
    """One process: ``n`` concurrent admissions, all released at ``start_at``."""

    async def main() -> list[str]:
        store = _open(url)
        try:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            if kind == "rpm":
                reqs = [_req(key, rpm=Bucket(50, 50)) for _ in range(n)]
            elif kind == "budget":
                reqs = [
                    _req(key, budget_nano=500, reserve_nano=10, period="total",
                         lease_id=uuid.uuid4().hex)
                    for _ in range(n)
                ]  # fmt: skip
            else:
                reqs = [_req(key, max_parallel=7, lease_id=uuid.uuid4().hex) for _ in range(n)]
            results = await asyncio.gather(*(store.admit(r) for r in reqs))
            # what settles an admission (SQLite: the worker's holder; Redis: the request's lease)
            return [res.lease or "ok" for res in results if res.allowed]
        finally:
            await store.close()

    return asyncio.run(main())


def _from_processes(url: str, key: str, kind: str) -> tuple[list[str], float]:
    ctx = multiprocessing.get_context("fork")
    start_at = time.time() + 1.0
    t0 = time.monotonic()
    with ctx.Pool(4) as pool:
        parts = pool.starmap(_worker, [(url, key, kind, 20, start_at)] * 4)
    return [x for p in parts for x in p], time.monotonic() - t0


def test_rpm_is_exact_across_processes(store_url: str) -> None:
    """4 processes x 20 concurrent admissions against a burst of 50 at 50/min: exactly the
    burst passes (plus what refilled while they ran: one per 1.2 s)."""
    admitted, took = _from_processes(store_url, "k-rpm", "rpm")
    assert 50 <= len(admitted) <= 50 + int(took / 1.2) + 1


def test_budget_and_parallel_are_exact_across_processes(store_url: str) -> None:
    admitted, _ = _from_processes(store_url, "k-budget", "budget")
    assert len(admitted) == 50  # 500 nano budget / 10 reserved each
    admitted_p, _ = _from_processes(store_url, "k-par", "parallel")
    assert len(admitted_p) == 7

    async def settle_then_admit() -> tuple[int, int, int]:
        store = _open(store_url)
        try:
            for lease in admitted:  # each cost 7 of its 10 reserved: 350 spent
                await store.settle(Settlement("k-budget", lease, None, 0, "total", 7, 10))
            spent = await store.spent("k-budget", "total")
            more = [
                await store.admit(
                    _req("k-budget", budget_nano=500, reserve_nano=10, period="total",
                         lease_id=uuid.uuid4().hex)
                )
                for _ in range(40)
            ]  # fmt: skip
            for lease in admitted_p[:2]:
                await store.settle(Settlement("k-par", lease, None, 0, "", 0))
            par = [
                await store.admit(_req("k-par", max_parallel=7, lease_id=uuid.uuid4().hex))
                for _ in range(5)
            ]
            return spent, sum(r.allowed for r in more), sum(r.allowed for r in par)
        finally:
            await store.close()

    spent, more, par = asyncio.run(settle_then_admit())
    assert spent == 350
    assert more == 15  # (500 - 350) / 10
    assert par == 2


@needs_redis
def test_redis_an_admission_whose_caller_left_is_released() -> None:
    """The caller is cancelled while its admission script runs (here: the answer is slow to
    come back): the script admitted it, so the store releases the slot by itself."""
    server = RedisServer()
    server.start()
    try:
        store = RedisQuotaStore(server.url)
        run = store._run

        async def slow_answer(*args: Any) -> Any:
            out = await run(*args)  # the script has run: the slot is taken
            await asyncio.sleep(0.3)
            return out

        async def main() -> tuple[bool, bool]:
            try:
                store._run = slow_answer  # type: ignore[method-assign]
                task = asyncio.ensure_future(
                    store.admit(_req("k-gone", max_parallel=1, lease_id="gone"))
                )
                await asyncio.sleep(0.1)
                task.cancel()
                await asyncio.sleep(0.4)  # the script's answer arrives, the release follows
                return await _slot_back_after(store, task)
            finally:
                await store.close()

        assert asyncio.run(main()) == (True, True)
    finally:
        server.kill()


def test_a_lease_expires_so_a_dead_worker_frees_its_slot(store_url: str) -> None:
    async def main() -> tuple[bool, bool, bool]:
        store = _open(store_url)
        try:
            req = _req("k-lease", max_parallel=1, lease_ttl_s=0.2)
            first = await store.admit(replace(req, lease_id="a"))
            second = await store.admit(replace(req, lease_id="b"))
            await asyncio.sleep(0.3)
            third = await store.admit(replace(req, lease_id="c"))
            return first.allowed, second.allowed, third.allowed
        finally:
            await store.close()

    assert asyncio.run(main()) == (True, False, True)


async def _slot_back_after(store: QuotaStore, gone: asyncio.Future[Any]) -> tuple[bool, bool]:
    """(the caller was cancelled, a request of the same key fits its parallel limit of 1 after
    the store has written what it does when such a caller goes)."""
    with pytest.raises(asyncio.CancelledError):
        await gone
    await store.flush()
    after = await store.admit(_req("k-gone", max_parallel=1, lease_id="next"))
    return gone.cancelled(), after.allowed


def test_one_batch_applies_its_admissions_in_order(tmp_path: Path) -> None:
    """Admissions that arrive in one loop turn share one SQLite transaction (group commit):
    each still sees the ones before it, so a batch of 30 cannot overshoot a parallel limit of 7
    or a budget of 5 reservations, and a settlement in the batch frees its slot first."""
    store = SQLiteQuotaStore(tmp_path / "ledger.sqlite3")
    transactions = 0
    original = store._batch

    def counted() -> None:
        nonlocal transactions
        transactions += 1
        original()

    store._batch = counted  # type: ignore[method-assign]

    async def main() -> tuple[int, int, int]:
        try:
            par = [_req("k-par", max_parallel=7, lease_id=f"p{i}") for i in range(30)]
            got = await asyncio.gather(*(store.admit(r) for r in par))
            budget = [
                _req("k-bud", budget_nano=50, reserve_nano=10, period="total", lease_id=f"b{i}")
                for i in range(30)
            ]
            got_b = await asyncio.gather(*(store.admit(r) for r in budget))
            first = got[0].lease
            assert first is not None
            store.queue(Settlement("k-par", first, None, 0, "", 0))
            again = await asyncio.gather(*(store.admit(r) for r in par[20:]))
            return (
                sum(r.allowed for r in got),
                sum(r.allowed for r in got_b),
                sum(r.allowed for r in again),
            )
        finally:
            await store.close()

    assert asyncio.run(main()) == (7, 5, 1)
    assert transactions == 3  # 30 + 30 + 10 admissions (and the settlement): 3 transactions


def test_an_admission_whose_caller_left_is_released(tmp_path: Path) -> None:
    """The caller is cancelled after its admission was written but before it saw the answer:
    nobody will settle that request, so the store releases its parallel slot itself."""
    store = SQLiteQuotaStore(tmp_path / "ledger.sqlite3", settle_delay=0.0)

    async def main() -> tuple[bool, bool]:
        try:
            req = _req("k-gone", max_parallel=1, lease_id="gone")
            task = asyncio.ensure_future(store.admit(req))
            original = store._batch

            def batch_then_cancel() -> None:
                original()  # written: the slot is taken
                task.cancel()  # ... and the caller goes away before it resumes

            store._batch = batch_then_cancel  # type: ignore[method-assign]
            return await _slot_back_after(store, task)
        finally:
            await store.close()

    assert asyncio.run(main()) == (True, True)


def test_a_batch_that_raises_fails_its_admissions_instead_of_hanging(tmp_path: Path) -> None:
    """A bug in a batch (here: a settlement that cannot be applied) must not leave admissions
    waiting for ever: they get a StoreError (the engine's failure policy answers), the bad
    settlement is dropped, and the next batch works."""
    store = SQLiteQuotaStore(tmp_path / "ledger.sqlite3")

    async def main() -> tuple[bool, bool]:
        try:
            store.queue(Settlement("k", None, Bucket(60, 1), "not a number", "", 0))  # type: ignore[arg-type]
            with pytest.raises(StoreError):
                await asyncio.wait_for(store.admit(_req("k", max_parallel=1, lease_id="a")), 5)
            res = await asyncio.wait_for(store.admit(_req("k", max_parallel=1, lease_id="b")), 5)
            return True, res.allowed
        finally:
            await store.close()

    assert asyncio.run(main()) == (True, True)


def test_a_ledger_made_by_an_earlier_quota_schema_still_works(tmp_path: Path) -> None:
    """Earlier versions kept a row per lease (``quota_leases``): a request still in flight in
    such a ledger keeps its slot (as one holder row) until its lease expires, then the usual
    sweep frees it; the old table is gone."""
    import sqlite3

    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE quota_state (key TEXT PRIMARY KEY, rpm_tat REAL NOT NULL, "
            "tpm_tat REAL NOT NULL, in_flight INTEGER NOT NULL, reserved_nano INTEGER NOT NULL) "
            "WITHOUT ROWID"
        )
        conn.execute(
            "CREATE TABLE quota_leases (id TEXT PRIMARY KEY, key TEXT NOT NULL, "
            "reserved_nano INTEGER NOT NULL, expires REAL NOT NULL)"
        )
        conn.execute("CREATE INDEX quota_leases_key ON quota_leases (key, expires)")
        conn.execute("INSERT INTO quota_state VALUES ('k', 0, 0, 1, 0)")
        conn.execute("INSERT INTO quota_leases VALUES ('old', 'k', 0, ?)", (time.time() + 0.5,))
    store = SQLiteQuotaStore(path)

    async def main() -> list[bool]:
        try:
            out = [(await store.admit(_req("k", max_parallel=1, lease_id="a"))).allowed]
            await asyncio.sleep(0.6)  # the old lease has expired
            res = await store.admit(_req("k", max_parallel=1, lease_id="b"))
            out.append(res.allowed)
            out.append((await store.admit(_req("k", max_parallel=1, lease_id="c"))).allowed)
            assert res.lease is not None
            await store.settle(Settlement("k", res.lease, None, 0, "", 0))
            await store.flush()
            out.append((await store.admit(_req("k", max_parallel=1, lease_id="d"))).allowed)
            return out
        finally:
            await store.close()

    assert asyncio.run(main()) == [False, True, False, True]
    with sqlite3.connect(path) as conn:
        tables = conn.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE 'quota_leases%'"
        ).fetchall()
    assert tables == []


def test_a_settlement_of_a_swept_holder_releases_nothing(tmp_path: Path) -> None:
    """A holder row that expired is swept by any worker; a settlement that comes after must not
    take its lease from the key again (the sweep already did), nor from a later holder."""
    store = SQLiteQuotaStore(tmp_path / "ledger.sqlite3", settle_delay=0.0)
    other = SQLiteQuotaStore(tmp_path / "ledger.sqlite3")

    async def main() -> list[bool]:
        try:
            req = _req("k", max_parallel=2, lease_ttl_s=0.2, lease_id="x")
            first = await store.admit(req)
            second = await store.admit(req)
            await asyncio.sleep(0.3)  # both expired; the other worker's refusal sweeps them
            a = await other.admit(replace(req, lease_ttl_s=600.0))
            b = await other.admit(replace(req, lease_ttl_s=600.0))
            # (a, b) took the slots after the sweep; the stale settlement frees neither
            assert first.lease is not None and first.lease == second.lease
            await store.settle(Settlement("k", first.lease, None, 0, "", 0))
            await store.flush()
            c = await store.admit(replace(req, lease_ttl_s=600.0))
            return [first.allowed, second.allowed, a.allowed, b.allowed, c.allowed]
        finally:
            await store.close()
            await other.close()

    assert asyncio.run(main()) == [True, True, True, True, False]


def test_a_batch_nets_its_admissions_and_releases_of_one_holder(tmp_path: Path) -> None:
    """Settlements of this worker's live holder ride in the batch's one upsert of its row, net
    of the batch's admissions (more released than admitted makes a negative delta): the row and
    the key's aggregates agree after every batch, and the parallel limit stays exact."""
    import sqlite3

    path = tmp_path / "ledger.sqlite3"
    store = SQLiteQuotaStore(path)

    def counts() -> tuple[tuple[int, int], tuple[int, int]]:
        with sqlite3.connect(path) as conn:
            held = conn.execute(
                "SELECT sum(in_flight), sum(reserved_nano) FROM quota_holders WHERE key = 'k'"
            ).fetchone()
            state = conn.execute(
                "SELECT in_flight, reserved_nano FROM quota_state WHERE key = 'k'"
            ).fetchone()
        return tuple(held), tuple(state)

    async def main() -> list[tuple[tuple[int, int], tuple[int, int]]]:
        req = _req("k", max_parallel=6, budget_nano=10**6, reserve_nano=10, period="total")
        req.lease_id = "watched"
        seen = []
        try:
            first = await asyncio.gather(*(store.admit(req) for _ in range(5)))
            seen.append(counts())
            holder = first[0].lease
            assert holder is not None and all(r.lease == holder for r in first)
            for _ in range(3):
                store.queue(Settlement("k", holder, None, 0, "total", 1, 10))
            more = await asyncio.gather(*(store.admit(req) for _ in range(2)))
            seen.append(counts())
            for _ in range(4):
                store.queue(Settlement("k", holder, None, 0, "total", 1, 10))
            over = await asyncio.gather(*(store.admit(req) for _ in range(6)))
            seen.append(counts())
            assert all(r.allowed for r in first + more)
            assert sum(r.allowed for r in over) == 6  # 4 + 4 released + 6 would be 6: all fit
            for _ in range(6):
                store.queue(Settlement("k", holder, None, 0, "total", 1, 10))
            await store.flush()
            seen.append(counts())
            return seen
        finally:
            await store.close()

    assert asyncio.run(main()) == [
        ((5, 50), (5, 50)),
        ((4, 40), (4, 40)),
        ((6, 60), (6, 60)),
        ((0, 0), (0, 0)),
    ]


def test_a_retired_holder_row_goes_once_empty(tmp_path: Path) -> None:
    """A holder id is replaced after one lease TTL; its row, emptied by the settlements that
    came before the replacement, is deleted rather than left behind."""
    import sqlite3

    path = tmp_path / "ledger.sqlite3"
    store = SQLiteQuotaStore(path, settle_delay=0.0)

    def holders() -> list[tuple[str, int]]:
        with sqlite3.connect(path) as conn:
            return conn.execute("SELECT holder, in_flight FROM quota_holders").fetchall()

    async def main() -> tuple[list[tuple[str, int]], list[tuple[str, int]], str, str]:
        req = _req("k", max_parallel=5, lease_ttl_s=0.2, lease_id="watched")
        try:
            first = await store.admit(req)
            before = holders()
            await asyncio.sleep(0.25)  # the holder's TTL is over: the next admission replaces it
            assert first.lease is not None
            store.queue(Settlement("k", first.lease, None, 0, "", 0))
            second = await store.admit(req)
            assert second.lease is not None
            return before, holders(), first.lease, second.lease
        finally:
            await store.close()

    before, after, old, new = asyncio.run(main())
    assert old != new
    assert before == [(old, 1)]
    assert after == [(new, 1)]


def test_tpm_refund_through_the_store(store_url: str) -> None:
    async def main() -> list[bool]:
        store = _open(store_url)
        tpm = Bucket(6000, 60)  # 100 tokens/s
        try:
            out = [(await store.admit(_req("k-tpm", tpm=tpm, tokens=1000))).allowed]
            out.append((await store.admit(_req("k-tpm", tpm=tpm, tokens=10))).allowed)
            # 950 of the 1000 were not used: the bucket is nearly full again
            await store.settle(Settlement("k-tpm", None, tpm, -950, "", 0))
            out.append((await store.admit(_req("k-tpm", tpm=tpm, tokens=10))).allowed)
            return out
        finally:
            await store.close()

    assert asyncio.run(main()) == [True, False, True]


# -- the engine -------------------------------------------------------------------------------


def _key(**kw: Any) -> VirtualKey:
    base: dict[str, Any] = {
        "name": "agent-7",
        "digest": "0" * 64,
        "budget_usd": None,
        "budget_period": "day",
        "rpm": None,
        "tpm": None,
        "max_parallel": None,
        "models": (),
        "expires_at": None,
        "created_at": 0.0,
    }
    base.update(kw)
    return VirtualKey(**base)


def _ctx(vkey: VirtualKey | None, route: str = "openai", body: bytes = b"x" * 400) -> Any:
    return SimpleNamespace(vkey=vkey, route=route, raw_body=body)


def _quota(tmp_path: Path, **cfg: Any) -> Quota:
    return Quota(Config(**cfg), None, lambda: tmp_path)


def test_no_virtual_key_costs_nothing(tmp_path: Path) -> None:
    q = _quota(tmp_path)

    async def main() -> Any:
        return await q.admit(_ctx(None), model=MODEL, max_tokens=10)

    assert asyncio.run(main()) is None
    assert q._store is None  # never opened


def test_rpm_refusal_openai_and_anthropic_shapes(tmp_path: Path) -> None:
    q = _quota(tmp_path)
    vkey = _key(rpm=60)  # burst 1

    async def main() -> tuple[Any, ProxyError, ProxyError]:
        ok = await q.admit(_ctx(vkey), model=MODEL, max_tokens=10)
        errs = []
        for route in ("openai", "anthropic"):
            with pytest.raises(ProxyError) as info:
                await q.admit(_ctx(vkey, route), model=MODEL, max_tokens=10)
            errs.append(info.value)
        await q.close()
        return ok, errs[0], errs[1]

    ok, oa, an = asyncio.run(main())
    assert dict(ok.headers)[b"x-ratelimit-limit-requests"] == b"60"
    assert dict(ok.headers)[b"x-ratelimit-remaining-requests"] == b"0"
    assert oa.status == 429 and oa.code == "rate_limit_exceeded" and oa.type == "requests"
    h = dict(oa.headers)
    assert 0 < int(h[b"retry-after-ms"]) <= 1000 and h[b"retry-after"] == b"1"
    assert b"x-ratelimit-reset-requests" in h
    body = orjson.loads(anthropic_error_body(an))
    assert body["error"]["type"] == "rate_limit_error"
    assert b"anthropic-ratelimit-requests-reset" in dict(an.headers)


def test_budget_refusal_and_exact_settlement(tmp_path: Path) -> None:
    q = _quota(tmp_path)
    vkey = _key(budget_usd=0.01, budget_period="day")
    max_tokens = 100  # 100 prompt tokens (400 bytes / 4) + 100 output: ~ $0.005

    async def main() -> tuple[int, ProxyError, int]:
        t1 = await q.admit(_ctx(vkey), model=MODEL, max_tokens=max_tokens)
        t2 = await q.admit(_ctx(vkey), model=MODEL, max_tokens=max_tokens)
        with pytest.raises(ProxyError) as info:
            await q.admit(_ctx(vkey), model=MODEL, max_tokens=max_tokens)
        rec = RequestRecord(request_id="r", route="/v1/chat/completions", model=MODEL)
        rec.input_tokens, rec.output_tokens = 90, 37
        assert t1 is not None and t2 is not None
        q.settle(t1, rec)
        q.settle(t1, rec)  # once only
        q.settle(t2, RequestRecord(request_id="s", route="x", model=MODEL))  # failed: $0
        await q.drain()
        spent = await q.store.spent(vkey.name, period_bounds("day", time.time())[0])
        again = await q.admit(_ctx(vkey), model=MODEL, max_tokens=max_tokens)
        await q.close()
        return spent, info.value, int(again is not None)

    spent, err, again = asyncio.run(main())
    rec = RequestRecord(request_id="r", route="x", model=MODEL, input_tokens=90, output_tokens=37)
    ledger_cost = account(rec).cost
    assert ledger_cost is not None and spent == round(ledger_cost.total_usd * NANO)
    assert err.status == 429 and err.type == "insufficient_quota" and err.code == "budget_exceeded"
    payload = orjson.loads(openai_error_body(err))["error"]
    assert payload["budget_reset_at"].endswith("T00:00:00Z")
    headers = dict(err.headers)
    assert headers[b"x-should-retry"] == b"false"
    assert 0 < int(headers[b"retry-after"]) <= 86400
    assert again == 1  # released reservations make room again


def test_a_budget_period_ends_at_utc_midnight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine works a key's period out once a day: the request after midnight (UTC)
    reserves against the new day's budget, not the old one."""
    q = _quota(tmp_path)
    vkey = _key(budget_usd=1.0, budget_period="day")
    midnight = (int(time.time()) // 86400 + 1) * 86400.0
    clock = [midnight - 0.5]
    monkeypatch.setattr(time, "time", lambda: clock[0])

    async def main() -> list[str]:
        periods = []
        for now in (midnight - 0.5, midnight - 0.001, midnight, midnight + 3600):
            clock[0] = now
            ticket = await q.admit(_ctx(vkey), model=MODEL, max_tokens=10)
            assert ticket is not None
            periods.append(ticket.period)
        await q.close()
        return periods

    before = period_bounds("day", midnight - 1)[0]
    after = period_bounds("day", midnight)[0]
    assert before != after
    assert asyncio.run(main()) == [before, before, after, after]


def test_settlements_carried_by_a_batch_need_no_batch_of_their_own(tmp_path: Path) -> None:
    """A settlement waits at most ``settle_delay`` for a transaction. When admissions come
    meanwhile it rides in theirs, and its timer goes: the next settlement gets a whole delay
    to find admissions to ride with, instead of a transaction of its own when the old timer
    fires."""
    store = SQLiteQuotaStore(tmp_path / "ledger.sqlite3", settle_delay=1.0)
    transactions = 0
    original = store._batch

    def counted() -> None:
        nonlocal transactions
        transactions += 1
        original()

    store._batch = counted  # type: ignore[method-assign]

    async def main() -> tuple[int, list[bool]]:
        try:
            first = await store.admit(_req("k", max_parallel=2, lease_id="a"))
            assert first.lease is not None
            store.queue(Settlement("k", first.lease, None, 0, "", 0))  # timer: at 1.0 s
            second = await store.admit(_req("k", max_parallel=2, lease_id="b"))  # carries it
            assert second.lease is not None
            await asyncio.sleep(0.6)
            store.queue(Settlement("k", second.lease, None, 0, "", 0))  # its timer: 1.6 s
            await asyncio.sleep(0.6)
            third = await store.admit(_req("k", max_parallel=1, lease_id="c"))  # carries it
            return transactions, [first.allowed, second.allowed, third.allowed]
        finally:
            await store.close()

    assert asyncio.run(main()) == (3, [True, True, True])


def test_unpriced_model_with_a_budget_is_refused_clearly(tmp_path: Path) -> None:
    q = _quota(tmp_path)

    async def main() -> None:
        await q.admit(_ctx(_key(budget_usd=1.0)), model="claude-nonesuch", max_tokens=None)

    with pytest.raises(ProxyError) as info:
        asyncio.run(main())
    assert info.value.status == 400 and info.value.code == "model_unpriced"


@needs_redis
@pytest.mark.parametrize(
    ("limits", "budgets", "with_budget", "refused"),
    [
        ("open", "closed", False, False),  # the defaults: limits open...
        ("open", "closed", True, True),  # ... budgets closed
        ("closed", "closed", False, True),
        ("open", "open", True, False),
    ],
)
def test_redis_down_policies(
    redis_server: RedisServer, limits: str, budgets: str, with_budget: bool, refused: bool
) -> None:
    from ferrule.metrics import Metrics

    metrics = Metrics()
    cfg = Config(redis_url=redis_server.url, limits_on_redis_error=limits,
                 budgets_on_redis_error=budgets)  # fmt: skip
    q = Quota(cfg, metrics, store=RedisQuotaStore(redis_server.url))
    vkey = _key(rpm=600, budget_usd=5.0 if with_budget else None)
    redis_server.kill()

    async def main() -> Any:
        try:
            return await q.admit(_ctx(vkey), model=MODEL, max_tokens=5)
        finally:
            await q.close()

    if refused:
        with pytest.raises(ProxyError) as info:
            asyncio.run(main())
        assert info.value.status == 503 and info.value.code == "quota_unavailable"
    else:
        assert asyncio.run(main()) is None  # let through, unlimited
    policy = "closed" if refused else "open"
    assert metrics.quota_store_errors.series[(policy,)] == 1.0


def test_sqlite_unwritable_is_a_store_error(tmp_path: Path) -> None:
    store = SQLiteQuotaStore(tmp_path / "missing-dir" / "ledger.sqlite3")

    async def main() -> None:
        await store.admit(_req("k", rpm=Bucket(1, 1)))

    with pytest.raises(StoreError):
        asyncio.run(main())


def test_an_unusable_data_folder_follows_the_failure_policy(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    q = Quota(Config(), None, lambda: blocker / "data")  # mkdir fails: the store cannot open

    async def main(vkey: VirtualKey) -> Any:
        return await q.admit(_ctx(vkey), model=MODEL, max_tokens=5)

    assert asyncio.run(main(_key(rpm=10))) is None  # limits: open
    with pytest.raises(ProxyError) as info:
        asyncio.run(main(_key(budget_usd=1.0)))  # budgets: closed
    assert info.value.status == 503 and info.value.code == "quota_unavailable"
