"""Three ``ferrule serve`` replicas (two workers each) behind nginx share one PostgreSQL ledger
for 60 s of steady load, and PostgreSQL is stopped for 20 s in the middle, then restarted: no
client sees an error, and once the spools drained the shared ledger holds exactly one row per
request the clients saw (their request ids, none missing, none twice) with the clients' token
sums; ``/stats`` and ``ferrule stats`` read the same totals from the database. One run (the rust
backend when built), ~80 s: the issue's replicas test and its outage test in one load. Without
nginx the clients spread their requests over the replicas themselves.
"""

from __future__ import annotations

import shutil
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
from ferrule.procs import free_port
from pg_server import PgServer, needs_postgres, pg_server_fixture
from replicas import nginx_in_front, replicas
from servers import TEST_KEY, MockUpstream

pytestmark = needs_postgres
pg_server = pg_server_fixture

OUTAGE_S = 20.0
BEFORE_S = 20.0
AFTER_S = 20.0
CLIENTS = 6
REPLICAS = 3
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
TOKEN_KEYS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
              "output_tokens")  # fmt: skip


class Load:
    """Closed-loop clients sending /v1/messages with their own request ids, recording what
    each answer said (status, usage)."""

    def __init__(self, bases: list[str]) -> None:
        self.bases = bases
        self.stop = threading.Event()
        self.seen: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(CLIENTS)]

    def _client(self, n: int) -> None:
        headers = {"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01"}
        # one balancer, or the replicas in turn (a client each)
        base = self.bases[n % len(self.bases)]
        with httpx.Client(base_url=base, timeout=30, headers=headers) as c:
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


def nginx_conf(root: Path, port: int, replicas: list[str]) -> Path:
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    servers = "".join(f"server {u.removeprefix('http://')};\n" for u in replicas)
    conf = root / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  upstream ferrule {{ {servers} keepalive 32; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://ferrule;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_read_timeout 60s;
    }}
  }}
}}
"""
    )
    return conf


@pytest.fixture
def served(
    pg_server: PgServer, mock_server: MockUpstream, tmp_path: Path
) -> Iterator[tuple[list[str], list[str]]]:
    """(the URLs clients use, the replicas' logs)."""
    backend = "rust" if NATIVE is not None else "python"
    env = {"FERRULE_DATABASE_URL": pg_server.url, "FERRULE_RESPONSE_CACHE": "off"}
    logs = [str(tmp_path / f"ferrule-{i}.log") for i in range(REPLICAS)]
    with replicas(backend, mock_server.url, logs, [env] * REPLICAS, "--workers", "2") as urls:
        if NGINX is None:
            yield urls, logs
            return
        conf = nginx_conf(tmp_path / "nginx", free_port(), urls)
        with nginx_in_front(NGINX, conf, tmp_path / "nginx") as url:
            yield [url], logs


def ledger(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT request_id, input_tokens, cache_write_5m_tokens + cache_write_1h_tokens, "
            "cache_read_tokens, output_tokens FROM ferrule_requests"
        ).fetchall()


@pytest.mark.timeout(360)  # 60 s of load, three replicas to start on a shared 2-core machine
def test_postgres_outage_loses_and_duplicates_nothing(
    pg_server: PgServer, served: tuple[list[str], list[str]]
) -> None:
    bases, logs = served
    with Load(bases) as load:
        time.sleep(BEFORE_S)
        stopped_at = len(load.seen)
        pg_server.stop()
        time.sleep(1.0)
        with httpx.Client(base_url=bases[0], timeout=30) as c:
            down = c.get("/stats")  # a clear 503 while the database is away, not a 500
        time.sleep(OUTAGE_S - 1.0)
        during = len(load.seen) - stopped_at
        pg_server.start()
        time.sleep(AFTER_S)
    assert load.errors == []
    assert down.status_code == 503 and "unreachable" in down.json()["error"]["message"]
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
    print(
        f"\n{len(expected)} requests, {during} during the outage, {len(rows)} ledger rows, "
        f"{'nginx' if NGINX else 'client-side balancing'}"
    )
    for log in logs:  # every replica served, spooled and replayed into the one database
        text = Path(log).read_text()
        assert "spooling rows" in text and "replayed" in text, log

    # /stats and `ferrule stats` read the shared database
    with httpx.Client(base_url=bases[0], timeout=30) as c:
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
