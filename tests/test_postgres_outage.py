"""PostgreSQL stopped for 20 s in the middle of steady load on a ``ferrule serve`` with two
workers (database_url set), then restarted: no client sees an error, and once the spools
drained the shared ledger holds exactly one row per request the clients saw (their request ids,
none missing, none twice), with the clients' token sums; ``/stats`` and ``ferrule stats`` read
the same totals from the database. Runs once (the rust backend when built), ~40 s."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from conftest import NATIVE
from pg_server import PgServer, needs_postgres, pg_server_fixture
from servers import TEST_KEY, MockUpstream, start_proxy

pytestmark = needs_postgres
pg_server = pg_server_fixture

OUTAGE_S = 20.0
BEFORE_S = 4.0
AFTER_S = 6.0
CLIENTS = 6
TOKEN_KEYS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
              "output_tokens")  # fmt: skip


class Load:
    """Closed-loop clients sending /v1/messages with their own request ids, recording what
    each answer said (status, usage)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.stop = threading.Event()
        self.seen: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(CLIENTS)]

    def _client(self, n: int) -> None:
        headers = {"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01"}
        with httpx.Client(base_url=self.base, timeout=30, headers=headers) as c:
            i = 0
            while not self.stop.is_set():
                rid = f"load-{n}-{i}"
                i += 1
                body = {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 16 + i % 7,
                    "messages": [{"role": "user", "content": f"client {n} says {i} " * (1 + i % 5)}],
                }  # fmt: skip
                try:
                    r = c.post("/v1/messages", json=body, headers={"x-request-id": rid})
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.errors.append(f"{rid}: {type(exc).__name__}")
                    continue
                with self.lock:
                    if r.status_code != 200:
                        self.errors.append(f"{rid}: HTTP {r.status_code} {r.text[:200]}")
                    else:
                        assert r.headers["x-request-id"] == rid
                        self.seen[rid] = r.json()["usage"]
                time.sleep(0.005)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


@pytest.fixture
def served(
    pg_server: PgServer, mock_server: MockUpstream, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    backend = "rust" if NATIVE is not None else "python"
    env = {"FERRULE_DATABASE_URL": pg_server.url, "FERRULE_RESPONSE_CACHE": "off"}
    log = str(tmp_path / "ferrule.log")
    with start_proxy(backend, mock_server.url, log, "--workers", "2", env=env) as proxy:
        yield proxy.url, log


def ledger(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT request_id, input_tokens, cache_write_5m_tokens + cache_write_1h_tokens, "
            "cache_read_tokens, output_tokens FROM ferrule_requests"
        ).fetchall()


def test_postgres_outage_loses_and_duplicates_nothing(
    pg_server: PgServer, served: tuple[str, str]
) -> None:
    base, log = served
    with Load(base) as load:
        time.sleep(BEFORE_S)
        stopped_at = len(load.seen)
        pg_server.stop()
        time.sleep(OUTAGE_S)
        during = len(load.seen) - stopped_at
        pg_server.start()
        time.sleep(AFTER_S)
    assert load.errors == []
    assert during > 50  # the proxy kept serving while the database was down
    expected = load.seen
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = ledger(pg_server.url)
        if len(rows) >= len(expected):
            break
        time.sleep(0.5)
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "duplicated rows"
    assert set(ids) == set(expected), (
        f"missing {len(set(expected) - set(ids))}, unexpected {len(set(ids) - set(expected))}"
    )
    # token sums: the ledger's equal what the clients were told
    for col, key in enumerate(TOKEN_KEYS, start=1):
        assert sum(r[col] for r in rows) == sum(u.get(key) or 0 for u in expected.values()), key
    print(f"\n{len(expected)} requests, {during} during the outage, {len(rows)} ledger rows")
    text = Path(log).read_text()
    assert "spooling rows" in text and "replayed" in text  # the spool really was used

    # /stats and `ferrule stats` read the shared database
    with httpx.Client(base_url=base, timeout=30) as c:
        stats = c.get("/stats", params={"since": "1h", "by": "model"}).json()
    totals = stats["totals"]
    assert totals["requests"] == len(expected)
    assert totals["output_tokens"] == sum(u["output_tokens"] for u in expected.values())
    assert "@" not in stats["ledger"] and stats["ledger"].startswith("postgresql://")
    cli = subprocess.run(
        [sys.executable, "-m", "ferrule.cli", "stats", "--json", "--since", "1h",
         "--database-url", pg_server.url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert orjson.loads(cli.stdout)["totals"] == totals
