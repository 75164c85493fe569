"""Virtual keys in PostgreSQL (ferrule.keys.store_pg): the same behaviour as the SQLite store,
step by step, and shared by replicas: a key revoked or rotated through one store is refused by
another at its next lookup, its change counter moved; the database down is a clear 503."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ferrule.cli import main
from ferrule.keys.model import VirtualKey
from ferrule.keys.store import KeyProblem, KeyStore, SQLiteKeyStore, new_key
from ferrule.keys.store_pg import PostgresKeyStore
from pg_server import PgServer, needs_postgres, pg_server_fixture
from servers import MockUpstream, Proxy, start_proxy
from test_e2e_cache import backend_for_custom_proxies

pytestmark = needs_postgres
pg_server = pg_server_fixture


@pytest.fixture
def db(pg_server: PgServer) -> Iterator[str]:
    if pg_server.proc is None:
        pg_server.start()
    name = "k_" + uuid.uuid4().hex[:10]
    admin = pg_server.url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_server.url.rsplit("/", 1)[0] + "/" + name


def vkey(name: str, digest: str, **kw: Any) -> VirtualKey:
    fields: dict[str, Any] = {
        "budget_usd": 1.5, "budget_period": "day", "rpm": 60, "tpm": None, "max_parallel": 2,
        "models": ("claude-haiku-*",), "expires_at": None, "created_at": 1_790_000_000.0,
    }  # fmt: skip
    fields.update(kw)
    return VirtualKey(name=name, digest=digest, **fields)


def scenario(store: KeyStore) -> list[Any]:
    """Every operation of the protocol; what each returned, without the clock's values."""
    out: list[Any] = []

    def info(name: str) -> Any:
        i = store.get(name)
        if i is None:
            return None
        j = i.as_json()
        j["previous_key_valid_until"] = j["previous_key_valid_until"] is not None
        j["revoked_at"] = j["revoked_at"] is not None
        return j

    def problem(call: Any) -> Any:
        try:
            call()
        except KeyProblem as exc:
            return ("problem", exc.status)
        return "ok"

    c0 = store.changes()
    store.create(vkey("alice", "a" * 64))
    store.create(vkey("bob", "b" * 64, models=(), rpm=None))
    out.append(problem(lambda: store.create(vkey("alice", "c" * 64))))  # names never reused
    out.append(problem(lambda: store.create(vkey("bad name!", "d" * 64))))
    out.append(problem(lambda: store.create(vkey("carol", "e" * 64, rpm=0))))
    out.append(info("alice"))
    out.append([i.key.name for i in store.list_keys()])
    found = store.lookup("a" * 64)
    out.append((found[0], found[1]) if found else None)
    out.append(store.update("alice", {"rpm": 120, "models": ("claude-*",)}).as_json()["rpm"])
    out.append(problem(lambda: store.update("alice", {"name": "x"})))
    out.append(problem(lambda: store.update("nobody", {"rpm": 1})))
    # rotation: the old digest keeps working through the grace, then a 0 s grace ends it
    store.rotate("alice", "f" * 64, 3600)
    old = store.lookup("a" * 64)
    out.append(old is not None and old[1] is not None)
    out.append(store.lookup("f" * 64) is not None)
    out.append(info("alice"))
    store.rotate("alice", "9" * 64, 0)
    out.append([store.lookup(d) is not None for d in ("a" * 64, "f" * 64, "9" * 64)])
    # revocation: every digest at once; the name stays
    out.append(info("bob"))
    store.revoke("bob")
    out.append(store.lookup("b" * 64))
    out.append(info("bob"))
    out.append(problem(lambda: store.rotate("bob", "8" * 64, 10)))
    out.append(problem(lambda: store.revoke("nobody")))
    out.append(store.changes() - c0)  # failed operations do not count
    return out


def test_same_behaviour_as_the_sqlite_store(db: str, tmp_path: Path) -> None:
    lite = SQLiteKeyStore(tmp_path / "keys.sqlite3")
    shared = PostgresKeyStore(db)
    try:
        expected = scenario(lite)
        got = scenario(shared)
    finally:
        lite.close()
        shared.close()
    for step, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a == b, f"step {step}: {a!r} != {b!r}"
    assert expected[-1] == 6  # two creates, an update, two rotations, a revocation


def test_replicas_share_keys_and_revocation(db: str) -> None:
    one, two = PostgresKeyStore(db), PostgresKeyStore(db)  # two replicas; migrated once
    try:
        key, digest = new_key()
        one.create(vkey("team", digest))
        assert two.lookup(digest) is not None
        before = two.changes()
        one.revoke("team")
        t = time.monotonic()
        assert two.changes() > before  # what a replica's cache watches
        assert two.lookup(digest) is None
        assert time.monotonic() - t < 1.0
        with psycopg.connect(db) as conn:
            applied = conn.execute(
                "SELECT version FROM ferrule_schema WHERE component = 'keys'"
            ).fetchall()
            stored = conn.execute("SELECT string_agg(digest, ',') FROM ferrule_virtual_keys")
            assert key not in str(stored.fetchone())  # digests only, never the key
        assert applied == [(1,)]
    finally:
        one.close()
        two.close()


def test_database_down_is_a_clear_503(pg_server: PgServer, db: str) -> None:
    store = PostgresKeyStore(db, timeout=1.0)
    try:
        pg_server.stop()
        with pytest.raises(KeyProblem) as err:
            store.lookup("a" * 64)
        assert err.value.status == 503 and "postgresql" not in str(err.value)
    finally:
        pg_server.start()
    try:
        deadline = time.monotonic() + 10
        while True:  # the pool reconnects by itself
            try:
                assert store.lookup("a" * 64) is None
                break
            except KeyProblem:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        store.close()


def test_replicas_on_one_database_share_the_cli_made_keys(
    db: str, mock: MockUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """`ferrule keys` and `ferrule serve` both use the database when FERRULE_DATABASE_URL is
    set: a key made by the CLI on one host opens both replicas (each with its own data folder),
    and revoking it through the CLI shuts it out of both within a second."""
    monkeypatch.setenv("FERRULE_DATABASE_URL", db)
    monkeypatch.delenv("FERRULE_CONFIG", raising=False)

    def cli(*args: str) -> str:
        assert main(["keys", *args, "--data-dir", str(tmp_path / "cli")]) == 0
        return capsys.readouterr().out

    key = json.loads(cli("create", "--name", "fleet-7", "--json"))["key"]
    env = {
        "FERRULE_DATABASE_URL": db,
        "FERRULE_AUTH": "keys",
        "FERRULE_UPSTREAM_API_KEY": "sk-ant-operator-pg-keys-0001",
    }
    body = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    with contextlib.ExitStack() as stack:
        replicas = [
            stack.enter_context(
                start_proxy(
                    backend_for_custom_proxies(), mock.url, str(tmp_path / f"r{i}.log"),
                    env={**env, "FERRULE_DATA_DIR": str(tmp_path / f"replica-{i}")},
                )
            )
            for i in range(2)
        ]  # fmt: skip

        def status(p: Proxy) -> int:
            r = httpx.post(p.v1 + "/chat/completions", json=body, timeout=30,
                           headers={"authorization": f"Bearer {key}"})  # fmt: skip
            return r.status_code

        assert [status(p) for p in replicas] == [200, 200]
        assert not (tmp_path / "cli" / "ledger.sqlite3").exists()  # the CLI used the database
        cli("revoke", "fleet-7")
        time.sleep(1.0)
        assert [status(p) for p in replicas] == [401, 401]


def test_known_keys_keep_working_while_the_database_restarts(
    pg_server: PgServer, db: str, mock: MockUpstream, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """PostgreSQL down for a few seconds: a key this replica already checked keeps working (its
    agents see no error); a key it has not seen yet is a 503, never let in unchecked; once the
    database is back, that key works too."""
    monkeypatch.setenv("FERRULE_DATABASE_URL", db)
    monkeypatch.delenv("FERRULE_CONFIG", raising=False)

    def create(name: str) -> str:
        assert main(["keys", "create", "--name", name, "--json", "--data-dir", str(tmp_path)]) == 0
        return str(json.loads(capsys.readouterr().out)["key"])

    known, unseen = create("seen-before"), create("not-seen-yet")
    env = {
        "FERRULE_DATABASE_URL": db,
        "FERRULE_AUTH": "keys",
        "FERRULE_UPSTREAM_API_KEY": "sk-ant-operator-pg-keys-0002",
        "FERRULE_DATA_DIR": str(tmp_path / "replica"),
    }
    body = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    with start_proxy(backend_for_custom_proxies(), mock.url, str(tmp_path / "r.log"), env=env) as p:

        def status(key: str) -> int:
            r = httpx.post(p.v1 + "/chat/completions", json=body, timeout=30,
                           headers={"authorization": f"Bearer {key}"})  # fmt: skip
            return r.status_code

        assert status(known) == 200
        pg_server.stop()
        try:
            during, took = [], []
            for _ in range(6):
                t0 = time.monotonic()
                during.append(status(known))
                took.append(time.monotonic() - t0)
                time.sleep(0.5)  # past the 0.5 s refresh: every request would ask the store
            assert during == [200] * 6, during
            # only the first waits for the store to time out; then the check runs aside
            assert max(took[1:]) < 2.0, took
            assert (code := status(unseen)) == 503, code
        finally:
            pg_server.start()
        deadline = time.monotonic() + 40  # the pool reconnects by itself (generous: CI load)
        while (code := status(unseen)) != 200 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert code == 200, "the new key still fails after the database came back"
