"""The ledger in a real PostgreSQL (ferrule.ledger.postgres): migrations applied once however
many processes start together, rows that round-trip exactly (dollars too) and sum like the
SQLite ledger's, idempotent replays, the spool while the server is down, ``ferrule doctor``."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from ferrule import doctor, stats_cli
from ferrule.ledger import SCHEMA_VERSION, LedgerError, LedgerWriter, RequestRecord, ledger_path
from ferrule.ledger import postgres as pg
from ferrule.ledger.query import GROUPS, summarize_conn
from ferrule.ledger.schema import COLUMNS, open_readonly
from ferrule.ledger.spool import Spool
from ferrule.ledger.writer import row
from pg_server import PgServer, needs_postgres, pg_server_fixture

pytestmark = needs_postgres
pg_server = pg_server_fixture  # one server for the module (it is stopped by one test)

NAMES = [c for c, _ in COLUMNS]
MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1", "not-a-priced-model"]


@pytest.fixture
def db(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database on the module's server."""
    if pg_server.proc is None:
        pg_server.start()
    name = "t_" + uuid.uuid4().hex[:10]
    admin = pg_server.url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_server.url.rsplit("/", 1)[0] + "/" + name


def record(i: int, *, ts: float | None = None) -> RequestRecord:
    """Varied records: every token bucket, four models (one unpriced), response-cache hits,
    streams, retries, errors; start times spread over three days (day/hour groups)."""
    r = RequestRecord(
        request_id=f"req_{i:05d}",
        route=("/v1/chat/completions", "/v1/messages", "/v1/responses")[i % 3],
        model=MODELS[i % 4],
        ts=ts if ts is not None else 1_790_000_000.0 + i * 97.123456,
        tenant=f"t{i % 5}",
        stream=bool(i % 2),
        status=(200, 200, 200, 429, 500)[i % 5],
        input_tokens=1000 + i * 7,
        cache_write_5m_tokens=(i * 13) % 900,
        cache_write_1h_tokens=(i * 5) % 300 if i % 4 == 0 else 0,
        cache_read_tokens=(i * 31) % 5000,
        output_tokens=10 + i % 400,
        compression_removed_tokens=(i * 3) % 50,
        cache_status=("hit", "miss", "bypass", "")[i % 4],
        attempts=1 + i % 3,
        ttfb_ms=None if i % 7 == 0 else 12.5 + i,
        latency_ms=100.25 + i,
        backend=("rust", "python")[i % 2],
        outcome=("complete", "complete", "upstream_error", "client_cancelled", "error")[i % 5],
        usage_estimated=i % 6 == 0,
        error_type=None if i % 5 < 2 else "overloaded_error",
        key_name=f"key-{i % 3}" if i % 2 else None,
        upstream_key=f"org-{i % 2}",
    )
    return r


def pg_rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"SELECT {', '.join(NAMES)} FROM ferrule_requests ORDER BY id"
        ).fetchall()


def migrate_in_processes(url: str, n: int) -> list[subprocess.CompletedProcess[str]]:
    """``n`` processes, each connected, that all call migrate() at the same instant (when
    the parent writes a line to every one of them)."""
    code = (
        "import sys\n"
        "from ferrule.ledger import postgres as pg\n"
        "conn = pg.connect(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "print(pg.migrate(conn))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_concurrent_start_applies_each_migration_once(db: str) -> None:
    results = migrate_in_processes(db, 6)
    assert [r.returncode for r in results] == [0] * 6, [r.stderr[-500:] for r in results]
    assert {r.stdout.strip() for r in results} == {str(SCHEMA_VERSION)}
    with psycopg.connect(db) as conn:
        applied = conn.execute(
            "SELECT component, version FROM ferrule_schema ORDER BY version"
        ).fetchall()
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'ferrule_requests' ORDER BY ordinal_position"
            )
        ]
    assert applied == [("ledger", v) for v in range(1, SCHEMA_VERSION + 1)]
    assert columns == ["id", *NAMES]
    # a later start finds nothing to do; a newer database is refused, not downgraded
    with pg.connect(db) as conn:
        assert pg.migrate(conn) == SCHEMA_VERSION
        conn.execute("INSERT INTO ferrule_schema (component, version) VALUES ('ledger', 99)")
        with pytest.raises(LedgerError, match="version 99"):
            pg.migrate(conn)
    with pytest.raises(LedgerError):
        pg.open_readonly(db)


def test_rows_round_trip_exactly_and_sum_like_sqlite(db: str, tmp_path: Path) -> None:
    records = [record(i) for i in range(1234)]
    writer = pg.PostgresLedgerWriter(db, spool_root=tmp_path / "spool", batch_size=200)
    lite = LedgerWriter(ledger_path(tmp_path))
    for r in records:
        assert writer.submit(r)
        assert lite.submit(r)
    assert writer.drain(30)
    lite.close()
    writer.close()
    assert writer.stats.written == 1234 and writer.stats.dropped == 0

    got = pg_rows(db)
    expected = [row(r) for r in records]
    assert len(got) == len(expected)
    usd = {i for i, n in enumerate(NAMES) if n.endswith("_usd")}
    for g, e in zip(got, expected, strict=True):
        # dollars are NUMERIC: the float's shortest decimal, exactly; it reads back as the float
        for i, (a, b) in enumerate(zip(g, e, strict=True)):
            if i in usd and a is not None:
                assert isinstance(a, Decimal) and a == Decimal(repr(b)) and float(a) == b
            else:
                assert a == b, (NAMES[i], a, b)
    # the database's sum is the exact decimal sum of the rows' dollars
    with psycopg.connect(db) as conn:
        total = conn.execute("SELECT SUM(cost_usd) FROM ferrule_requests").fetchone()
    costs = [e[NAMES.index("cost_usd")] for e in expected if e[NAMES.index("cost_usd")] is not None]
    assert total is not None and total[0] == sum((Decimal(repr(c)) for c in costs), Decimal(0))
    assert math.isclose(float(total[0]), math.fsum(costs), rel_tol=1e-15)

    # ferrule stats' SQL gives the same answer on both databases, for every grouping
    pconn = pg.open_readonly(db)
    sconn = open_readonly(ledger_path(tmp_path))
    assert pconn is not None and sconn is not None
    try:
        for groups in [(), *[(g,) for g in GROUPS], ("day", "model")]:
            for since, until in [(None, None), (1_790_050_000.0, 1_790_090_000.0)]:
                a = summarize_conn(pconn, since, until, groups)
                b = summarize_conn(sconn, since, until, groups)
                assert len(a) == len(b), groups
                for x, y in zip(a, b, strict=True):
                    # SQLite sums float dollars, PostgreSQL exact decimals: the rounded
                    # micro-dollar may differ by one; every count is exact
                    diff = {
                        k: (x[k], y[k])
                        for k in x
                        if not (
                            x[k] == y[k] or (k.endswith("_usd") and abs(x[k] - y[k]) <= 1.000001e-6)
                        )
                    }
                    assert not diff, (groups, diff)
        assert summarize_conn(pconn, None, None, ())[0]["requests"] == 1234
    finally:
        pconn.close()
        sconn.close()


def test_replays_are_idempotent_and_reused_client_ids_are_not(db: str) -> None:
    with pg.connect(db) as conn:
        pg.migrate(conn)
        rows = [row(record(i)) for i in range(50)]
        assert pg.insert_rows(conn, rows) == (50, 0)
        assert pg.insert_rows(conn, rows[10:30]) == (0, 0)  # a replayed spool segment
        # a client that sends the same x-request-id twice made two requests: two rows
        again = record(3, ts=1_800_000_000.5)
        assert pg.insert_rows(conn, [row(again)]) == (1, 0)
        # a value the database refuses is dropped alone; NUL in text is made storable
        bad = list(row(record(1000)))
        bad[NAMES.index("input_tokens")] = 2**70
        odd = record(1001)
        odd.model = "claude\x00evil"
        assert pg.insert_rows(conn, [row(record(999)), tuple(bad), row(odd)]) == (2, 1)
    got = pg_rows(db)
    assert len(got) == 53
    assert [r[NAMES.index("request_id")] for r in got].count("req_00003") == 2
    assert got[-1][NAMES.index("model")] == "claude\ufffdevil"


def test_server_down_rows_spool_and_replay_in_order(
    pg_server: PgServer, db: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    # no time budget and small segments: the backlog is replayed one segment per turn, while
    # newer rows keep arriving behind it
    writer = pg.PostgresLedgerWriter(db, spool_root=spool, retry_interval=0.3, drain_budget=0.0)
    assert writer._spool is not None
    writer._spool.segment_bytes = 40_000
    for i in range(300):
        writer.submit(record(i))
    assert writer.drain(20)
    pg_server.stop()
    try:
        worst = 0.0
        for i in range(300, 1500):
            t = time.perf_counter()
            assert writer.submit(record(i))
            worst = max(worst, time.perf_counter() - t)
            if i % 100 == 0:
                time.sleep(0.1)  # several batches, several spool appends
        assert worst < 0.05  # serving is never blocked by the database
        assert writer.flush(10)
        assert writer.spooled == 1200
        assert writer.healthy and not writer.database_healthy
        assert writer.stats.dropped == 0
        # a second writer that dies while the server is down leaves its spool behind
        other = pg.PostgresLedgerWriter(db, spool_root=spool, retry_interval=0.3)
        for i in range(1500, 1600):
            other.submit(record(i))
        other.close()
        assert other.spooled == 100
    finally:
        pg_server.start()
    for i in range(1601, 1801):  # while the backlog drains
        writer.submit(record(i))
        if i % 50 == 0:
            time.sleep(0.2)
    assert writer.drain(30)
    assert writer.spooled == 0 and writer.database_healthy
    # a new writer (a restarted worker) adopts the dead one's spool
    third = pg.PostgresLedgerWriter(db, spool_root=spool)
    third.submit(record(1600))
    assert third.drain(20)
    third.close()
    writer.close()
    ids = [r[NAMES.index("request_id")] for r in pg_rows(db)]
    assert len(ids) == len(set(ids)) == 1801
    # this writer's rows in the order they were submitted (the spool replays in order)
    mine = [i for i in ids if not 1500 <= int(i[4:]) <= 1600]
    assert mine == [f"req_{i:05d}" for i in [*range(1500), *range(1601, 1801)]]
    assert sorted(ids) == [f"req_{i:05d}" for i in range(1801)]
    assert [p.name for p in spool.iterdir()] == []  # every spool folder replayed and removed


def test_doctor_checks_the_database(
    db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fresh = doctor.check_database(db, 3)
    assert fresh.status == "warn" and "not created yet" in fresh.detail
    with pg.connect(db) as conn:
        pg.migrate(conn)
    ok = doctor.check_database(db, 3)
    assert ok.status == "ok" and f"schema v{SCHEMA_VERSION}" in ok.detail
    secret = db.replace("postgresql://ferrule@", "postgresql://ferrule:hunter2-secret@")
    closed = secret.replace(f":{db.split(':')[2].split('/')[0]}/", ":1/")
    down = doctor.check_database(closed, 2)
    assert down.status == "fail" and "cannot connect" in down.detail
    assert "hunter2" not in down.detail + down.fix
    with pg.connect(db) as conn:
        conn.execute("INSERT INTO ferrule_schema (component, version) VALUES ('ledger', 7)")
    newer = doctor.check_database(db, 3)
    assert newer.status == "fail" and "newer" in newer.detail
    # through run_checks: the database check replaces the SQLite ledger's
    monkeypatch.setenv("FERRULE_DATABASE_URL", db)
    args = argparse.Namespace(
        config=None, host=None, port=None, upstream_url=None, data_dir=None, timeout=2.0,
        offline=True, json=True,
    )  # fmt: skip
    names = {c.name: c.status for c in doctor.run_checks(args)}
    assert names["database"] == "fail" and names["ledger"] == "skip"
    # rows waiting in the data folder's spool are reported
    data = tmp_path / "data"
    assert doctor.check_spool(data).status == "ok"
    Spool(pg.spool_root(data), NAMES).append([row(record(i)) for i in range(3)])
    waiting = doctor.check_spool(data)
    assert waiting.status == "warn" and waiting.detail.startswith("3 ledger rows wait")


def test_stats_cli_reads_the_database(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = pg.PostgresLedgerWriter(db)
    now = time.time()
    for i in range(30):
        writer.submit(record(i, ts=now - i))
    assert writer.drain(20)
    writer.close()
    monkeypatch.setenv("FERRULE_DATABASE_URL", db)
    parser = argparse.ArgumentParser()
    stats_cli.add_arguments(parser)
    args = parser.parse_args(["--json", "--since", "1h", "--by", "model"])
    assert stats_cli.run(args) == 0
    data = orjson.loads(capsys.readouterr().out)
    assert data["totals"]["requests"] == 30
    assert sum(r["requests"] for r in data["by_model"]) == 30
    assert data["ledger"] == pg.redact(db)
    # the database down: one line naming it (never its password), exit code 1
    closed = "postgresql://ferrule:hunter2-secret@127.0.0.1:1/ferrule"
    args.database_url = closed
    assert stats_cli.run(args) == 1
    err = capsys.readouterr().err
    assert "cannot read the ledger postgresql://127.0.0.1:1/ferrule" in err
    assert "hunter2" not in err


def test_a_writer_closed_at_once_writes_to_the_database(db: str, tmp_path: Path) -> None:
    # close() right after submit (a short-lived process): the rows go to the database, not to
    # a spool left for a later process (the spool is for a database that failed)
    writer = pg.PostgresLedgerWriter(db, spool_root=tmp_path)
    writer.submit(record(1))
    writer.close()
    assert writer.spooled == 0
    assert [r[NAMES.index("request_id")] for r in pg_rows(db)] == ["req_00001"]
