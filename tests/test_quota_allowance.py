"""Allowances (``ferrule.quota.allowance``): a worker admits a key with large limits from a
share of them taken in one transaction. What must hold: the workers together still never pass
a limit (the shared state counts every allowance as used), they leave at most their
allowances unused near it, every request is accounted exactly once whether it settles before
or after its allowance is given back, and what is given back returns the tables to what is
really in flight."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ferrule import pricing
from ferrule.config import Config
from ferrule.keys.model import VirtualKey
from ferrule.ledger.record import RequestRecord
from ferrule.quota import AdmitRequest, Bucket, Quota, Settlement, SQLiteQuotaStore
from ferrule.quota.allowance import LIFE_S, MIN_REQUESTS, SHARE
from ferrule.quota.limiter import usage_cost_nano
from quota_helpers import admit_request

MODEL = "claude-fable-5-2"


def _req(key: str = "k", **kw: Any) -> AdmitRequest:
    return admit_request(key, **kw)


def _counted(store: SQLiteQuotaStore) -> list[int]:
    """Count the store's transactions (batches that ran)."""
    count = [0]
    original = store._batch

    def batch() -> None:
        count[0] += 1
        original()

    store._batch = batch  # type: ignore[method-assign]
    return count


async def _admit(store: SQLiteQuotaStore, req: AdmitRequest) -> Any:
    """What the engine does: the allowance first, a batch when it has no room."""
    return store.admit_local(req) or await store.admit(req)


def _state(path: Path, key: str = "k") -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT in_flight, reserved_nano FROM quota_state WHERE key = ?", (key,)
        ).fetchone()
        held = conn.execute(
            "SELECT coalesce(sum(in_flight), 0), coalesce(sum(reserved_nano), 0) "
            "FROM quota_holders WHERE key = ?",
            (key,),
        ).fetchone()
    assert tuple(row) == tuple(held)  # the key's aggregates are its holder rows' sums
    return int(row[0]), int(row[1])


def test_a_key_with_large_limits_is_admitted_without_a_transaction_per_request(
    tmp_path: Path,
) -> None:
    store = SQLiteQuotaStore(tmp_path / "ledger.sqlite3")
    batches = _counted(store)
    rpm = Bucket.per_minute(10_000_000, 0.01)
    req = _req(rpm=rpm, max_parallel=100_000, lease_id="watched")

    async def main() -> list[Any]:
        try:
            return [await _admit(store, req) for _ in range(250)]
        finally:
            await store.close()

    got = asyncio.run(main())
    assert all(r.allowed for r in got)
    # none settles: the allowance's 100 slots (0.1% of 100,000) run out, a batch takes another
    batched = [i for i, r in enumerate(got) if r.allowance is None]
    assert batched == [0, 101, 202]
    # three batches took allowances, the close gave the last back: none per request
    assert batches[0] <= 5
    # the headers' view: what would pass now, falling by one per request
    left = [r.rpm.remaining for r in got[1:4]]
    assert left[0] - 1 == left[1] and left[1] - 1 == left[2]


def test_small_limits_get_no_allowance(tmp_path: Path) -> None:
    """A limit whose share is under MIN_REQUESTS requests is checked request by request."""
    store = SQLiteQuotaStore(tmp_path / "ledger.sqlite3")
    small = int((MIN_REQUESTS - 1) / SHARE)
    req = _req(rpm=Bucket.per_minute(small, 0.5))

    async def main() -> list[Any]:
        try:
            return [await _admit(store, req) for _ in range(5)]
        finally:
            await store.close()

    assert all(r.allowed and r.allowance is None for r in asyncio.run(main()))


def test_two_workers_with_allowances_never_pass_the_rpm_burst(tmp_path: Path) -> None:
    """64,000 RPM, burst 640: at one instant two workers admit at most the burst together, and
    at least the burst minus what their allowances hold unused."""
    path = tmp_path / "ledger.sqlite3"
    a, b = SQLiteQuotaStore(path), SQLiteQuotaStore(path)
    rpm = Bucket.per_minute(64_000, 0.01)
    req = _req(rpm=rpm)
    share = int(64_000 * SHARE)

    async def main() -> tuple[int, float]:
        try:
            t0 = time.monotonic()
            allowed = 0
            for i in range(1_500):
                res = await _admit(a if i % 2 else b, req)
                allowed += res.allowed
            return allowed, time.monotonic() - t0
        finally:
            await a.close()
            await b.close()

    allowed, took = asyncio.run(main())
    refilled = int(took * 64_000 / 60) + 1  # what the bucket earned back meanwhile
    assert allowed <= rpm.burst + refilled
    assert allowed >= rpm.burst - 2 * share


def test_two_workers_with_allowances_never_pass_the_parallel_limit(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    a, b = SQLiteQuotaStore(path), SQLiteQuotaStore(path)
    limit = 32_000
    req = _req(max_parallel=limit, lease_id="watched")

    async def main() -> int:
        try:
            allowed = 0
            for i in range(limit + 2_000):
                allowed += (await _admit(a if i % 2 else b, req)).allowed
            await a.flush()
            await b.flush()
            return allowed
        finally:
            await a.close()
            await b.close()

    allowed = asyncio.run(main())
    share = int(limit * SHARE)
    assert limit - 2 * share <= allowed <= limit
    assert _state(path)[0] == allowed  # given back: only what is really in flight is held


def test_budget_settles_exactly_before_and_after_the_allowance_is_given_back(
    tmp_path: Path,
) -> None:
    """$1,000 budget, requests reserving $0.001 and costing $0.0004: some settle into the
    allowance, the rest after it was given back; in the end the spend is every cost exactly,
    nothing stays reserved or in flight."""
    path = tmp_path / "ledger.sqlite3"
    store = SQLiteQuotaStore(path)
    budget, reserve, cost = 10**12, 10**6, 400_000
    req = _req(
        max_parallel=100_000, budget_nano=budget, reserve_nano=reserve, period="total",
        lease_id="watched",
    )  # fmt: skip

    async def main() -> tuple[int, int, tuple[int, int], tuple[int, int]]:
        try:
            got = [await _admit(store, req) for _ in range(300)]
            assert sum(r.allowance is not None for r in got) >= 250
            for r in got[:150]:
                settle(r)
            await store.flush()  # the allowance goes back with 150 of its requests in flight
            in_flight = _state(path)
            for r in got[150:]:
                settle(r)
            await store.flush()
            return len(got), await store.spent("k", "total"), in_flight, _state(path)
        finally:
            await store.close()

    def settle(r: Any) -> None:
        s = Settlement("k", r.lease, None, 0, "total", cost, reserve)
        if r.allowance is None or not r.allowance.settle(reserve, 0, 0, cost):
            store.queue(s)

    n, spent, midway, end = asyncio.run(main())
    assert spent == n * cost
    assert midway == (150, 150 * reserve)
    assert end == (0, 0)


def test_an_unused_allowance_goes_back_by_itself(tmp_path: Path) -> None:
    """No request after the allowance was taken: its timer gives it back after LIFE_S, so its
    slots are not held for another worker."""
    path = tmp_path / "ledger.sqlite3"
    store = SQLiteQuotaStore(path)
    req = _req(max_parallel=100_000, lease_id="watched")

    async def main() -> tuple[tuple[int, int], tuple[int, int]]:
        try:
            first = await _admit(store, req)
            assert first.allowance is None
            taken = _state(path)
            await asyncio.sleep(LIFE_S + 0.3)
            return taken, _state(path)
        finally:
            await store.close()

    taken, later = asyncio.run(main())
    assert taken == (1 + int(100_000 * SHARE), 0)  # the request and the allowance's slots
    assert later == (1, 0)  # only the request


def test_a_busy_key_keeps_its_allowance_across_renewals(tmp_path: Path) -> None:
    """Requests for ~4 allowance lifetimes, settled as they go: after the first, none waits for
    a batch (each allowance is renewed before it ends, in the batch that gives it back), and
    at the end only what is really in flight is held."""
    path = tmp_path / "ledger.sqlite3"
    store = SQLiteQuotaStore(path)
    reserve = 1_000
    req = _req(
        rpm=Bucket.per_minute(10_000_000, 0.01), max_parallel=100_000, budget_nano=10**15,
        reserve_nano=reserve, period="total", lease_id="watched",
    )  # fmt: skip

    async def main() -> tuple[list[Any], int, tuple[int, int]]:
        try:
            got: list[Any] = []
            end = time.monotonic() + 4 * LIFE_S
            while time.monotonic() < end:
                r = await _admit(store, req)
                got.append(r)
                s = Settlement("k", r.lease, None, 0, "total", 7, reserve)
                if r.allowance is None or not r.allowance.settle(reserve, 0, 0, 7):
                    store.queue(s)
                await asyncio.sleep(0.002)
            await store.flush()
            return got, await store.spent("k", "total"), _state(path)
        finally:
            await store.close()

    got, spent, end = asyncio.run(main())
    assert [i for i, r in enumerate(got) if r.allowance is None] == [0]
    assert len({id(r.allowance) for r in got[1:]}) >= 3  # renewed, not one long allowance
    assert spent == 7 * len(got)
    assert end == (0, 0)


def test_an_allowance_taken_under_other_limits_is_not_renewed(tmp_path: Path) -> None:
    """The key's limits changed (a request asks with other ones): its allowance is given back
    at the next batch and not renewed with the old limits; the request that noticed is admitted
    under the new ones and takes the next allowance."""
    store = SQLiteQuotaStore(tmp_path / "ledger.sqlite3")
    old = _req(rpm=Bucket.per_minute(10_000_000, 0.01))
    new = _req(rpm=Bucket.per_minute(20_000_000, 0.01))

    async def main() -> list[Any]:
        try:
            got = [await _admit(store, old) for _ in range(3)]
            got += [await _admit(store, new) for _ in range(3)]
            return got
        finally:
            await store.close()

    got = asyncio.run(main())
    assert [r.allowance is None for r in got] == [True, False, False, True, False, False]
    first, second = got[1].allowance, got[4].allowance
    assert first.returned and first is not second
    assert second.rpm == Bucket.per_minute(20_000_000, 0.01)


def test_the_engine_settles_through_the_allowance(tmp_path: Path) -> None:
    """End to end in the engine: a key with every limit large; after the first request the
    rest are admitted from the allowance, carry the rate-limit headers, and their exact costs
    reach the budget's spend."""
    vkey = VirtualKey(
        name="agent-7", digest="0" * 64, budget_usd=1_000_000.0, budget_period="total",
        rpm=10_000_000, tpm=10_000_000_000, max_parallel=100_000, models=(), expires_at=None,
        created_at=0.0,
    )  # fmt: skip
    q = Quota(Config(), None, lambda: tmp_path)
    ctx = SimpleNamespace(vkey=vkey, route="openai", raw_body=b"x" * 2048)

    async def main() -> tuple[list[Any], int]:
        try:
            tickets = [await q.admit(ctx, model=MODEL, max_tokens=100) for _ in range(50)]
            for i, t in enumerate(tickets):
                rec = RequestRecord(request_id=str(i), route="/v1/chat/completions", model=MODEL)
                rec.input_tokens, rec.output_tokens = 500, 40
                assert t is not None
                q.settle(t, rec)
            await q.drain()
            return tickets, await q.store.spent("agent-7", "total")
        finally:
            await q.close()

    tickets, spent = asyncio.run(main())
    assert sum(t.allowance is not None for t in tickets) == 49
    assert all(dict(t.headers).get(b"x-ratelimit-limit-requests") == b"10000000" for t in tickets)
    rec = RequestRecord(request_id="x", route="/v1/chat/completions", model=MODEL)
    rec.input_tokens, rec.output_tokens = 500, 40
    assert spent == 50 * usage_cost_nano(pricing.price_for(MODEL, rec.ts), rec)
