"""The virtual key store (ferrule.keys.store) and a worker's view of it (ferrule.keys.gate):
digests only, names never reused, rotation grace, revocation, expiry, model globs, the
change counter that bounds how long a worker trusts its cache, and coexistence with the
ledger in one SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from ferrule.config import load
from ferrule.errors import ProxyError
from ferrule.keys import VirtualKey
from ferrule.keys import gate as gate_mod
from ferrule.keys.gate import KeyGate, model_allowed
from ferrule.keys.ops import (
    announce,
    create_key,
    limits_from_json,
    open_key_store,
    parse_duration,
    parse_models,
    rotate_key,
)
from ferrule.keys.store import (
    KEY_PREFIX,
    KeyProblem,
    SQLiteKeyStore,
    digest_of,
)
from ferrule.ledger import SCHEMA_VERSION, ledger_path, open_db
from ferrule.routes.common import RequestContext
from redis_server import RedisServer, needs_redis, redis_server_fixture  # noqa: F401

OPERATOR = "sk-ant-operator-000000000000"


def _store(tmp_path: Path) -> SQLiteKeyStore:
    store = open_key_store(tmp_path)
    assert isinstance(store, SQLiteKeyStore)
    return store


def test_only_the_digest_is_stored(tmp_path: Path) -> None:
    store = _store(tmp_path)
    info, key = create_key(store, "agent-7", budget_usd=5.0, rpm=60, models=("claude-haiku-*",))
    store.close()
    assert key.startswith(KEY_PREFIX) and len(key) >= len(KEY_PREFIX) + 43  # 32 random bytes
    assert info.key.digest == digest_of(key)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert key.encode() not in raw and key[-20:].encode() not in raw
    assert digest_of(key).encode() in raw


def test_lookup_rotation_revocation_and_the_counter(tmp_path: Path) -> None:
    store = _store(tmp_path)
    before = store.changes()
    info, old = create_key(store, "bot")
    assert store.changes() > before
    found = store.lookup(digest_of(old))
    assert found is not None and found[0].name == "bot" and found[1] is None
    assert store.lookup(digest_of(old + "x")) is None
    # rotation: the old key carries the end of its grace period, the new one none
    t0 = time.time()
    info, new = rotate_key(store, "bot", grace=3600)
    assert new != old and info.key.digest == digest_of(new)
    old_entry, new_entry = store.lookup(digest_of(old)), store.lookup(digest_of(new))
    assert old_entry is not None and old_entry[1] is not None
    assert t0 + 3599 <= old_entry[1] <= time.time() + 3600
    assert new_entry is not None and new_entry[1] is None
    assert old_entry[0].digest == new_entry[0].digest == digest_of(new)  # one identity
    assert info.previous_valid_until == old_entry[1]
    # grace 0: every older key is gone at once
    _, newest = rotate_key(store, "bot", grace=0)
    assert store.lookup(digest_of(old)) is None and store.lookup(digest_of(new)) is None
    # revocation: nothing opens the name; the name is never reused
    counter = store.changes()
    revoked = store.revoke("bot")
    assert revoked.status() == "revoked" and store.changes() > counter
    assert store.lookup(digest_of(newest)) is None
    with pytest.raises(KeyProblem) as exc:
        create_key(store, "bot")
    assert exc.value.status == 409
    with pytest.raises(KeyProblem):
        rotate_key(store, "bot")
    with pytest.raises(KeyProblem) as exc:
        store.revoke("nobody")
    assert exc.value.status == 404


def test_limits_are_checked(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for bad in ("", "has space", "-dash-first", "x" * 65, "a/b"):
        with pytest.raises(KeyProblem):
            create_key(store, bad)
    with pytest.raises(KeyProblem, match="budget_period"):
        create_key(store, "p", budget_period="year")
    with pytest.raises(KeyProblem, match="rpm"):
        create_key(store, "r", rpm=0)
    with pytest.raises(KeyProblem, match="budget_usd"):
        create_key(store, "b", budget_usd=-1.0)
    create_key(store, "ok", rpm=10)
    updated = store.update("ok", {"rpm": None, "tpm": 500, "models": ("claude-*",)})
    assert updated.key.rpm is None and updated.key.tpm == 500
    assert updated.key.models == ("claude-*",)
    with pytest.raises(KeyProblem):
        store.update("ok", {"name": "other"})
    assert [i.key.name for i in store.list_keys()] == ["ok"]


def test_parsing() -> None:
    assert parse_duration("90s") == 90 and parse_duration("12h") == 43200
    assert parse_duration("30d") == 30 * 86400 and parse_duration("2w") == 14 * 86400
    assert parse_duration("45") == 45
    for bad in ("soon", "-1h", "1y", ""):
        with pytest.raises(KeyProblem):
            parse_duration(bad)
    assert parse_models(" claude-haiku-*, claude-sonnet-4-6 ,") == (
        "claude-haiku-*",
        "claude-sonnet-4-6",
    )
    assert limits_from_json({"rpm": None, "expires_in": "1h"}, creating=True)["expires_in"] == 3600
    with pytest.raises(KeyProblem):
        limits_from_json({"rpm": True}, creating=False)
    with pytest.raises(KeyProblem):
        limits_from_json({"nme": "typo"}, creating=True)


def test_model_globs() -> None:
    key = VirtualKey("k", "0" * 64, None, "total", None, None, None, ("claude-haiku-*",), None, 0)
    assert model_allowed(key, "claude-haiku-4-5")
    assert not model_allowed(key, "claude-sonnet-4-6")
    assert not model_allowed(key, "CLAUDE-HAIKU-4-5")  # case-sensitive, like model ids
    anything = VirtualKey("k", "0" * 64, None, "total", None, None, None, (), None, 0)
    assert model_allowed(anything, "claude-opus-4-5")


def test_the_key_tables_live_beside_the_ledger(tmp_path: Path) -> None:
    # the key store first, then the ledger: both schemas in one file, neither version moved
    store = _store(tmp_path)
    create_key(store, "first")
    conn = open_db(ledger_path(tmp_path))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    store.close()
    store = _store(tmp_path)  # reopening migrates nothing and keeps the keys
    assert store.get("first") is not None
    with sqlite3.connect(ledger_path(tmp_path)) as db:
        assert db.execute("SELECT version FROM keys_schema").fetchall() == [(1,)]
    store.close()


def _ctx(key: str | None) -> RequestContext:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}
    return RequestContext(scope, "openai", 1 << 20, 5.0)


async def _refused(gate: KeyGate, key: str) -> None:
    """``key`` (revoked) gets a 401 from ``gate``, which is then closed."""
    with pytest.raises(ProxyError) as exc:
        await gate.admit(_ctx(key))
    assert exc.value.status == 401
    await gate.close()


def test_gate_admits_and_sees_a_revocation_within_its_refresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load(env={"FERRULE_AUTH": "keys", "FERRULE_UPSTREAM_API_KEY": OPERATOR})
    admin = _store(tmp_path)
    _, key = create_key(admin, "gated")
    _, soon = create_key(admin, "expiring", expires_in=0.3)

    async def run() -> None:
        gate = KeyGate(cfg, tmp_path)
        ctx = _ctx(key)
        await gate.admit(ctx)
        assert ctx.vkey is not None and ctx.vkey.name == "gated"
        assert ctx.api_key == OPERATOR  # the operator's key goes up, never the virtual one
        for missing in (None, key + "x", OPERATOR):
            with pytest.raises(ProxyError) as exc:
                await gate.admit(_ctx(missing))
            assert exc.value.status == 401 and exc.value.type == "authentication_error"
        await gate.admit(_ctx(soon))
        await asyncio.sleep(0.35)
        with pytest.raises(ProxyError, match="expired"):
            await gate.admit(_ctx(soon))
        # another process revokes; this worker's cache holds at most REFRESH seconds
        admin.revoke("gated")
        await asyncio.sleep(gate_mod.REFRESH + 0.05)
        await _refused(gate, key)

    asyncio.run(run())
    admin.close()


def test_gate_cache_spares_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Within REFRESH a known key costs no store query (the hot path stays in memory)."""
    cfg = load(env={"FERRULE_AUTH": "keys", "FERRULE_UPSTREAM_API_KEY": OPERATOR})
    _, key = create_key(_store(tmp_path), "hot")
    monkeypatch.setattr(gate_mod, "REFRESH", 60.0)
    calls = {"lookup": 0, "changes": 0}

    async def run() -> None:
        gate = KeyGate(cfg, tmp_path)
        store = await gate.store()
        for name in calls:
            real = getattr(store, name)

            def counted(*a: object, _real: object = real, _name: str = name) -> object:
                calls[_name] += 1
                return _real(*a)  # type: ignore[operator]

            monkeypatch.setattr(store, name, counted)
        for _ in range(50):
            await gate.admit(_ctx(key))
        await gate.close()

    asyncio.run(run())
    assert calls == {"lookup": 1, "changes": 1}


def test_gate_checks_ahead_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past REFRESH_AHEAD of REFRESH a request is answered from the cache at once (no await)
    and starts the change check, so a revocation is seen before REFRESH is over; past REFRESH
    a request waits for the check."""
    cfg = load(env={"FERRULE_AUTH": "keys", "FERRULE_UPSTREAM_API_KEY": OPERATOR})
    admin = _store(tmp_path)
    _, key = create_key(admin, "busy")
    monkeypatch.setattr(gate_mod, "REFRESH", 1.0)

    async def run() -> None:
        gate = KeyGate(cfg, tmp_path)
        assert not gate.admit_now(_ctx(key))  # nothing checked yet: the store is asked
        await gate.admit(_ctx(key))
        ctx = _ctx(key)
        assert gate.admit_now(ctx) and ctx.vkey is not None and ctx.api_key == OPERATOR
        assert gate._check is None  # fresh: no check started
        admin.revoke("busy")
        await asyncio.sleep(gate_mod.REFRESH * gate_mod.REFRESH_AHEAD + 0.05)
        assert gate.admit_now(_ctx(key))  # answered from the cache...
        assert gate._check is not None  # ... and the check runs meanwhile
        await asyncio.shield(gate._check)
        assert not gate.admit_now(_ctx(key))  # the revocation dropped the cache
        await _refused(gate, key)

    asyncio.run(run())
    admin.close()


def test_keys_mode_needs_the_operator_key() -> None:
    from ferrule.config import ConfigError

    with pytest.raises(ConfigError, match="FERRULE_UPSTREAM_API_KEY"):
        load(env={"FERRULE_AUTH": "keys"})
    with pytest.raises(ConfigError, match="passthrough or keys"):
        load(env={"FERRULE_AUTH": "virtual"})
    assert load(env={}).auth == "passthrough"


@needs_redis
def test_redis_announcement_drops_every_cache_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer
) -> None:
    """With FERRULE_REDIS_URL, a change is announced and a worker drops its cache on the
    message, long before its counter check would (REFRESH made 60 s here to show it)."""
    env = {
        "FERRULE_AUTH": "keys",
        "FERRULE_UPSTREAM_API_KEY": OPERATOR,
        "FERRULE_REDIS_URL": redis_server.url,
    }
    cfg = load(env=env)
    admin = _store(tmp_path)
    _, key = create_key(admin, "announced")
    monkeypatch.setattr(gate_mod, "REFRESH", 60.0)

    async def run() -> None:
        gate = KeyGate(cfg, tmp_path)
        await gate.admit(_ctx(key))
        admin.revoke("announced")
        await gate.admit(_ctx(key))  # still cached: no announcement yet
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            # again until it lands: the listener may still be subscribing on a busy machine
            await asyncio.to_thread(announce, redis_server.url)
            await asyncio.sleep(0.05)
            try:
                await gate.admit(_ctx(key))
            except ProxyError as exc:
                assert exc.status == 401
                break
        else:
            raise AssertionError("the announcement did not reach the worker")
        await gate.close()

    asyncio.run(run())
    admin.close()


def test_the_admin_key_is_not_the_access_key() -> None:
    from ferrule.config import ConfigError

    same = "shared-secret-0123456789"
    with pytest.raises(ConfigError, match="admin key"):
        load(env={"FERRULE_ADMIN_KEY": same, "FERRULE_ACCESS_KEY": same})


def test_admin_api_is_off_without_an_admin_key(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from ferrule.keys import admin

    async def run(cfg: object) -> int:
        app = SimpleNamespace(cfg=cfg)
        ctx = _ctx(None)
        ctx.scope["headers"] = [(b"authorization", b"Bearer whatever-key-0123456789")]
        ctx.scope["path"], ctx.scope["method"] = "/admin/keys", "GET"
        try:
            await admin.handle(app, ctx, None, None)  # type: ignore[arg-type]
        except ProxyError as exc:
            return exc.status
        raise AssertionError("answered")

    assert asyncio.run(run(load(env={}))) == 404
    with_admin = load(env={"FERRULE_ADMIN_KEY": "the-admin-key-0123456789"})
    assert asyncio.run(run(with_admin)) == 401  # on, and the key is wrong


def test_passthrough_keeps_ferrule_keys_from_upstream(tmp_path: Path) -> None:
    """Passthrough mode sends the caller's key upstream: a virtual key or the admin key sent by
    mistake is refused (401) before any upstream call; an Anthropic key goes through."""
    from ferrule.app import App

    admin_key = "the-admin-key-0123456789"
    cfg = load(env={"FERRULE_ADMIN_KEY": admin_key, "FERRULE_DATA_DIR": str(tmp_path)})
    app = App(cfg)
    _, virtual = create_key(_store(tmp_path), "early")

    async def run() -> None:
        for key in (virtual, admin_key):
            for ctx in (_ctx(key), _ctx_x_api_key(key)):
                with pytest.raises(ProxyError) as exc:
                    await app._authorize(ctx)
                assert exc.value.status == 401 and exc.value.type == "authentication_error"
        ctx = _ctx("sk-ant-caller-0000000000")
        await app._authorize(ctx)
        assert ctx.api_key == "sk-ant-caller-0000000000" and ctx.vkey is None

    asyncio.run(run())


def _ctx_x_api_key(key: str) -> RequestContext:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/messages",
        "headers": [(b"x-api-key", key.encode())],
    }
    return RequestContext(scope, "anthropic", 1 << 20, 5.0)
