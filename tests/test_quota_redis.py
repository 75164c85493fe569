"""Limits and budgets shared through Redis by two ``ferrule serve`` processes (2 workers each,
one data folder for the keys, one real redis-server): a per-process limit would admit twice
as much. Then Redis dies: limits fail open, budgets fail closed (docs/limits.md)."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from ferrule.quota.limiter import period_bounds
from redis_server import RedisServer, needs_redis, redis_server_fixture  # noqa: F401
from servers import MockUpstream, Proxy, start_proxy

pytestmark = [pytest.mark.e2e, needs_redis]

OPERATOR_KEY = "sk-ant-operator-0000000000000000"
ADMIN_KEY = "ferrule-admin-quota-redis-7d3a9e"
MODEL = "claude-sonnet-4-6"


@pytest.fixture
def pair(
    mock_server: MockUpstream, redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[Proxy, Proxy, Path]]:
    data_dir = tmp_path / "data"
    env = {
        "FERRULE_DATA_DIR": str(data_dir),  # the keys; the quota state is in Redis
        "FERRULE_AUTH": "keys",
        "FERRULE_UPSTREAM_API_KEY": OPERATOR_KEY,
        "FERRULE_ADMIN_KEY": ADMIN_KEY,
        "FERRULE_REDIS_URL": redis_server.url,
        "FERRULE_RESPONSE_CACHE": "off",
        "FERRULE_LIMITS_BURST": "0.25",
        "FERRULE_BREAKER_THRESHOLD": "1000000",
    }
    w = ("--workers", "2")
    with (
        start_proxy("python", mock_server.url, str(tmp_path / "a.log"), *w, env=env) as a,
        start_proxy("python", mock_server.url, str(tmp_path / "b.log"), *w, env=env) as b,
    ):
        yield a, b, data_dir


def _key(proxy: Proxy, name: str, **limits: Any) -> str:
    resp = httpx.post(proxy.url + "/admin/keys", json={"name": name, **limits},
                      headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)  # fmt: skip
    assert resp.status_code == 201, resp.text
    key: str = resp.json()["key"]
    return key


def _chat(words: int = 2) -> dict[str, Any]:
    content = f"hi [mock:words={words}]"
    return {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": content}]}


async def _both(a: Proxy, b: Proxy, key: str, n: int, body: dict[str, Any]) -> list[int]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(proxy: Proxy) -> int:
            r = await client.post(proxy.v1 + "/chat/completions", json=body,
                                  headers={"authorization": f"Bearer {key}"})  # fmt: skip
            return r.status_code

        servers = itertools.islice(itertools.cycle((a, b)), n)
        return list(await asyncio.gather(*(one(p) for p in servers)))


def test_limits_and_budget_shared_across_processes(
    pair: tuple[Proxy, Proxy, Path], redis_server: RedisServer, mock: MockUpstream
) -> None:
    a, b, data_dir = pair
    key = _key(a, "shared-rpm", rpm=120)  # burst 30, then one per 0.5 s
    t0 = time.monotonic()
    codes = asyncio.run(_both(a, b, key, 80, _chat()))
    took = time.monotonic() - t0
    ok = codes.count(200)
    assert codes.count(429) == 80 - ok
    # one bucket for both processes: each with its own would admit 60 at once
    assert 30 <= ok <= 30 + int(2 * took) + 1 and ok < 60, (ok, took)

    budget = _key(b, "shared-budget", budget_usd=0.03, budget_period="month")
    codes = asyncio.run(_both(a, b, budget, 60, _chat(50)))
    assert 200 in codes and 429 in codes
    r = redis.Redis.from_url(redis_server.url)
    counter_key = "ferrule:q:{shared-budget}:s:" + period_bounds("month", time.time())[0]
    deadline = time.monotonic() + 20
    while True:
        spent = int(r.get(counter_key) or 0)
        with sqlite3.connect(data_dir / "ledger.sqlite3", timeout=10) as conn:
            try:
                rows, usd = conn.execute(
                    "SELECT count(*), coalesce(sum(cost_usd), 0) FROM requests "
                    "WHERE key_name = 'shared-budget'"
                ).fetchone()
            except sqlite3.OperationalError as exc:
                # the ledger writer makes its table with its first batch (every 0.5 s): a run
                # that ends sooner looks before it exists
                assert "no such table" in str(exc), exc
                rows, usd = 0, 0.0
        if rows == 60 and abs(spent / 1e9 - usd) < 1e-6:
            break
        assert time.monotonic() < deadline, (rows, spent, usd)
        time.sleep(0.5)
    assert 0 < spent <= 30_000_000  # $0.03 in nano-dollars, across both processes

    # Redis dies: the rpm key is served unlimited, the budget key refused (503)
    redis_server.kill()
    limited = httpx.post(a.v1 + "/chat/completions", json=_chat(), timeout=30,
                         headers={"authorization": f"Bearer {key}"})  # fmt: skip
    assert limited.status_code == 200
    budgeted = httpx.post(b.v1 + "/chat/completions", json=_chat(), timeout=30,
                          headers={"authorization": f"Bearer {budget}"})  # fmt: skip
    assert budgeted.status_code == 503
    assert budgeted.json()["error"]["code"] == "quota_unavailable"
    assert budgeted.headers["retry-after"] == "1"
    # the worker that served it writes its metrics snapshot every second
    deadline = time.monotonic() + 10
    while True:
        metrics = httpx.get(a.url + "/metrics", timeout=10).text
        if 'ferrule_quota_store_errors_total{policy="open"}' in metrics:
            break
        assert time.monotonic() < deadline, metrics[-2000:]
        time.sleep(0.5)
