"""Keys mode end to end (docs/keys.md): a real ``ferrule serve`` with two workers, virtual keys
from the admin API and the CLI, the simulated upstream behind it.

Every client route refuses a missing, unknown, revoked or expired key with a 401 in its own
error shape; the operator's key goes upstream; a model outside the key's globs is a 403; a
revocation reaches both workers within 1 s; a rotated key works for its grace period; the
ledger, /stats and /metrics name the key; no virtual or admin key appears in any sink."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from servers import MockUpstream, Proxy, start_proxy

OPERATOR_KEY = "sk-ant-operator-0000000000000000"
ADMIN_KEY = "ferrule-admin-SENTINEL-9c41b7e2d0"
MODEL = "claude-sonnet-4-6"
HAIKU = "claude-haiku-4-5"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
MSGS = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
ANTHROPIC = {"anthropic-version": "2023-06-01"}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class KeysServer:
    proxy: Proxy
    data_dir: Path
    log: Path
    shown: set[str]  # every key the admin API or the CLI printed (the only legitimate place)
    sent: list[httpx.Response]  # every other answer, searched for keys at the end

    def admin(self, method: str, path: str = "", **kw: Any) -> httpx.Response:
        headers = {**ADMIN, **kw.pop("headers", {})}
        resp = httpx.request(
            method, self.proxy.url + "/admin/keys" + path, headers=headers, timeout=10, **kw
        )
        if isinstance(body := _json(resp), dict) and "key" in body:
            self.shown.add(body["key"])
        else:
            self.sent.append(resp)
        return resp

    def new_key(self, name: str, **limits: Any) -> str:
        resp = self.admin("POST", json={"name": name, **limits})
        assert resp.status_code == 201, resp.text
        key: str = resp.json()["key"]
        return key

    def call(self, method: str, path: str, key: str | None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if key is not None:
            headers.setdefault("authorization", f"Bearer {key}")
        # a fresh connection each time, so that requests reach both workers
        resp = httpx.request(method, self.proxy.v1 + path, headers=headers, timeout=30, **kw)
        self.sent.append(resp)
        return resp


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


@pytest.fixture(scope="module")
def keys_server(
    mock_server: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KeysServer]:
    base = tmp_path_factory.mktemp("keys")
    data_dir, log = base / "data", base / "ferrule.log"
    env = {
        "FERRULE_DATA_DIR": str(data_dir),
        "FERRULE_AUTH": "keys",
        "FERRULE_UPSTREAM_API_KEY": OPERATOR_KEY,
        "FERRULE_ADMIN_KEY": ADMIN_KEY,
        "FERRULE_METRICS_KEY_LABEL": "true",
        "FERRULE_LOG_LEVEL": "debug",
        "FERRULE_BREAKER_THRESHOLD": "1000000",
    }
    with start_proxy("python", mock_server.url, str(log), "--workers", "2", env=env) as proxy:
        yield KeysServer(proxy, data_dir, log, set(), [])


def _is_openai_401(resp: httpx.Response) -> bool:
    err = resp.json()["error"]
    return resp.status_code == 401 and err["type"] == "authentication_error"


def _is_anthropic_401(resp: httpx.Response) -> bool:
    body = resp.json()
    return (
        resp.status_code == 401
        and body["type"] == "error"
        and body["error"]["type"] == "authentication_error"
        and resp.headers.get("request-id")
    )


ROUTES: list[tuple[str, str, dict[str, Any], dict[str, str], bool]] = [
    # (method, path, json, headers, anthropic shape)
    ("POST", "/chat/completions", CHAT, {}, False),
    ("POST", "/chat/completions", {**CHAT, "stream": True}, {}, False),
    ("POST", "/responses", {"model": MODEL, "input": "hi"}, {}, False),
    ("POST", "/responses/compact", {"model": MODEL, "input": "hi"}, {}, False),
    ("GET", "/responses/resp_0123456789abcdef", {}, {}, False),
    ("DELETE", "/responses/resp_0123456789abcdef", {}, {}, False),
    ("GET", "/models", {}, {}, False),
    ("POST", "/messages", MSGS, ANTHROPIC, True),
    ("POST", "/messages", {**MSGS, "stream": True}, ANTHROPIC, True),
    (
        "POST",
        "/messages/count_tokens",
        {"model": MODEL, "messages": MSGS["messages"]},
        ANTHROPIC,
        True,
    ),
    ("GET", "/models", {}, ANTHROPIC, True),
]


def _route_call(
    srv: KeysServer, route: tuple[str, str, dict[str, Any], dict[str, str], bool], **kw: Any
) -> httpx.Response:
    method, path, body, headers, _ = route
    extra = {"json": body} if method == "POST" else {}
    return srv.call(method, path, kw.pop("key", None), headers={**headers, **kw}, **extra)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r[0]} {r[1]} {'anthropic' * r[4]}")
def test_every_route_wants_a_virtual_key(keys_server: KeysServer, route: Any) -> None:
    shape = _is_anthropic_401 if route[4] else _is_openai_401
    no_key = _route_call(keys_server, route)
    assert shape(no_key), no_key.text
    unknown = _route_call(keys_server, route, key="fk-" + "x" * 43)
    assert shape(unknown), unknown.text
    # the operator's own key is not a virtual key, nor is the admin key
    assert shape(_route_call(keys_server, route, key=OPERATOR_KEY))
    assert shape(_route_call(keys_server, route, key=ADMIN_KEY))


def test_a_virtual_key_opens_every_route_and_the_operator_key_goes_up(
    keys_server: KeysServer, mock: MockUpstream
) -> None:
    key = keys_server.new_key("opens-all")
    answers = {
        (r[1], r[4], bool(r[2].get("stream"))): _route_call(keys_server, r, key=key) for r in ROUTES
    }
    for (path, _, _), resp in answers.items():
        if "resp_0123" in path:
            assert resp.status_code == 404, resp.text  # past the gate: no such response
        else:
            assert resp.status_code == 200, (path, resp.text)
    # as x-api-key too (the Anthropic SDK's header)
    resp = keys_server.call(
        "POST", "/messages", None, json=MSGS, headers={**ANTHROPIC, "x-api-key": key}
    )
    assert resp.status_code == 200, resp.text
    seen = mock.requests()
    assert seen and all(r["headers"].get("x-api-key") == OPERATOR_KEY for r in seen)


def test_model_globs(keys_server: KeysServer) -> None:
    key = keys_server.new_key("haiku-only", models=["claude-haiku-*"])
    resp = keys_server.call("POST", "/chat/completions", key, json=CHAT)
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"]["code"] == "model_not_allowed"
    resp = keys_server.call("POST", "/messages", key, json=MSGS, headers=ANTHROPIC)
    assert resp.status_code == 403
    assert resp.json()["error"]["type"] == "permission_error"
    ok = keys_server.call("POST", "/chat/completions", key, json={**CHAT, "model": HAIKU})
    assert ok.status_code == 200, ok.text
    # the model list shows what the key may use, in both shapes
    listed = keys_server.call("GET", "/models", key).json()["data"]
    assert listed and all(m["id"].startswith("claude-haiku-") for m in listed)
    listed = keys_server.call("GET", "/models", key, headers=ANTHROPIC).json()["data"]
    assert listed and all(m["id"].startswith("claude-haiku-") for m in listed)
    ok = keys_server.call(
        "POST", "/messages", key, json={**MSGS, "model": HAIKU}, headers=ANTHROPIC
    )
    assert ok.status_code == 200, ok.text


def test_expired_key_is_refused(keys_server: KeysServer) -> None:
    key = keys_server.new_key("short-lived", expires_in=1.5)
    assert keys_server.call("POST", "/chat/completions", key, json=CHAT).status_code == 200
    time.sleep(1.6)
    resp = keys_server.call("POST", "/chat/completions", key, json=CHAT)
    assert _is_openai_401(resp) and "expired" in resp.json()["error"]["message"]
    resp = keys_server.call("POST", "/messages", key, json=MSGS, headers=ANTHROPIC)
    assert _is_anthropic_401(resp)


def test_revocation_reaches_both_workers_within_one_second(keys_server: KeysServer) -> None:
    from ferrule.cli import main

    key = keys_server.new_key("to-revoke")
    # warm both workers' caches (fresh connections spread over the workers)
    for _ in range(12):
        assert keys_server.call("POST", "/chat/completions", key, json=CHAT).status_code == 200
    assert main(["keys", "revoke", "to-revoke", "--data-dir", str(keys_server.data_dir)]) == 0
    time.sleep(1.0)
    codes = [keys_server.call("GET", "/models", key).status_code for _ in range(16)]
    codes += [keys_server.call("POST", "/chat/completions", key, json=CHAT).status_code]
    assert set(codes) == {401}, codes


def test_rotation_grace(keys_server: KeysServer) -> None:
    old = keys_server.new_key("rotating")
    resp = keys_server.admin("POST", "/rotating/rotate", json={"grace": 2})
    assert resp.status_code == 200, resp.text
    new = resp.json()["key"]
    assert new != old and resp.json()["previous_key_valid_until"] is not None
    for key in (old, new):
        assert keys_server.call("GET", "/models", key).status_code == 200
    time.sleep(2.2)
    assert keys_server.call("GET", "/models", old).status_code == 401
    assert keys_server.call("GET", "/models", new).status_code == 200
    # grace 0: the old key stops at once (within the 1 s every worker takes to see a change)
    newer = keys_server.admin("POST", "/rotating/rotate", json={"grace": 0}).json()["key"]
    time.sleep(1.0)
    assert keys_server.call("GET", "/models", new).status_code == 401
    assert keys_server.call("GET", "/models", newer).status_code == 200


def test_admin_api(keys_server: KeysServer) -> None:
    srv = keys_server
    url = srv.proxy.url + "/admin/keys"
    # missing, wrong, or a client key: 401, and nothing listed
    for headers in (
        {},
        {"authorization": "Bearer wrong-admin-key-123456"},
        {"x-api-key": ADMIN_KEY},
    ):
        resp = httpx.get(url, headers=headers)
        srv.sent.append(resp)
        assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
    vkey = srv.new_key("admin-api", budget_usd=2.5, budget_period="day", rpm=30)
    resp = httpx.get(url, headers={"authorization": f"Bearer {vkey}"})
    srv.sent.append(resp)
    assert resp.status_code == 401  # a virtual key never opens the admin API
    listed = srv.admin("GET").json()
    names = [k["name"] for k in listed["data"]]
    assert "admin-api" in names and all("key" not in k for k in listed["data"])
    one = srv.admin("GET", "/admin-api").json()
    assert one["budget_usd"] == 2.5 and one["budget_period"] == "day" and one["rpm"] == 30
    assert one["status"] == "active" and len(one["digest_prefix"]) == 12
    changed = srv.admin(
        "PATCH", "/admin-api", json={"rpm": None, "tpm": 1000, "models": ["claude-*"]}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["rpm"] is None and changed.json()["tpm"] == 1000
    assert changed.json()["models"] == ["claude-*"]
    assert srv.admin("POST", json={"name": "admin-api"}).status_code == 409
    assert srv.admin("POST", json={"name": "bad name!"}).status_code == 400
    assert srv.admin("POST", json={"name": "x", "rpm": "many"}).status_code == 400
    assert (
        srv.admin(
            "POST", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    assert srv.admin("PATCH", "/admin-api", json={"budget_period": "year"}).status_code == 400
    assert srv.admin("GET", "/nobody").status_code == 404
    assert srv.admin("DELETE", "/nobody").status_code == 404
    assert srv.admin("PUT", "/admin-api").status_code == 405
    revoked = srv.admin("DELETE", "/admin-api")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert srv.admin("POST", "/admin-api/rotate").status_code == 409
    time.sleep(1.0)
    assert srv.call("GET", "/models", vkey).status_code == 401


def test_per_key_accounting_and_no_key_in_any_sink(
    keys_server: KeysServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from ferrule.ledger import ledger_path

    srv = keys_server
    key = srv.new_key("accounted")
    for stream in (False, True):
        resp = srv.call("POST", "/chat/completions", key, json={**CHAT, "stream": stream})
        assert resp.status_code == 200
    resp = srv.call("POST", "/messages", None, json=MSGS, headers={**ANTHROPIC, "x-api-key": key})
    assert resp.status_code == 200
    # errors of every kind, each of which could echo what it was given
    srv.call("POST", "/chat/completions", key, content=b"{bad " + key.encode(),
             headers={"content-type": "application/json"})  # fmt: skip
    srv.call("POST", "/chat/completions", key + "x", json=CHAT)
    srv.call("POST", "/messages", key, json={**MSGS, "model": "claude-nonesuch"}, headers=ANTHROPIC)
    time.sleep(2.0)  # the ledger writer's batch and the metrics snapshot
    stats = httpx.get(srv.proxy.url + "/stats", params={"by": "key"})
    srv.sent.append(stats)
    rows = {r["key"]: r for r in stats.json()["by_key"]}
    assert rows["accounted"]["requests"] >= 3, rows
    # ferrule stats --by key: the same rows, by name (text and JSON)
    from ferrule.cli import main

    assert main(["stats", "--by", "key", "--json", "--data-dir", str(srv.data_dir)]) == 0
    cli_rows = {r["key"]: r for r in orjson.loads(capsys.readouterr().out)["by_key"]}
    assert cli_rows["accounted"]["requests"] == rows["accounted"]["requests"]
    assert main(["stats", "--by", "key", "--data-dir", str(srv.data_dir)]) == 0
    assert "accounted" in capsys.readouterr().out
    import sqlite3

    with sqlite3.connect(ledger_path(srv.data_dir)) as db:
        names = {n for (n,) in db.execute("SELECT DISTINCT key_name FROM requests")}
    assert "accounted" in names and None not in names, names
    metrics = httpx.get(srv.proxy.url + "/metrics")
    srv.sent.append(metrics)
    assert 'key="accounted"' in metrics.text
    # the sinks: the server's log (DEBUG), every file in the data folder, every answer
    found = {"log": srv.log.read_bytes()}
    for path in srv.data_dir.rglob("*"):
        if path.is_file():
            found[str(path)] = path.read_bytes()
    for i, resp in enumerate(srv.sent):
        found[f"answer {i}"] = resp.content + orjson.dumps(dict(resp.headers))
    assert srv.shown, "no key was created"
    for secret in (*srv.shown, ADMIN_KEY):
        for name, content in found.items():
            assert secret.encode() not in content, f"a key found in {name}"
            assert secret[-16:].encode() not in content, f"part of a key found in {name}"


def test_every_key_is_its_own_tenant(keys_server: KeysServer) -> None:
    """The response cache (and kept thinking, stored state) is per virtual key, though every
    key's requests go upstream with the same operator key; a rotation keeps the tenant."""
    one, other = keys_server.new_key("tenant-one"), keys_server.new_key("tenant-two")
    same = {**CHAT, "temperature": 0, "messages": [{"role": "user", "content": "tenant test"}]}

    def cache(key: str) -> str:
        resp = keys_server.call("POST", "/chat/completions", key, json=same)
        assert resp.status_code == 200, resp.text
        return resp.headers["x-cache"]

    assert cache(one) == "MISS"
    assert cache(one) == "HIT"
    assert cache(other) == "MISS"
    rotated = keys_server.admin("POST", "/tenant-one/rotate").json()["key"]
    assert cache(rotated) == "HIT"


def test_stored_responses_belong_to_the_key_that_made_them(keys_server: KeysServer) -> None:
    """Every virtual key reaches Anthropic with the operator's key, so the Responses store must
    be keyed by the virtual key: another key gets a 404 for the id, and cannot chain from it."""
    owner, other = keys_server.new_key("responses-owner"), keys_server.new_key("responses-other")
    made = keys_server.call("POST", "/responses", owner, json={"model": MODEL, "input": "hi"})
    assert made.status_code == 200, made.text
    rid = made.json()["id"]
    assert keys_server.call("GET", f"/responses/{rid}", owner).status_code == 200
    assert keys_server.call("GET", f"/responses/{rid}", other).status_code == 404
    assert keys_server.call("GET", f"/responses/{rid}/input_items", other).status_code == 404
    chained = {"model": MODEL, "input": "more", "previous_response_id": rid}
    assert keys_server.call("POST", "/responses", other, json=chained).status_code == 404
    assert keys_server.call("DELETE", f"/responses/{rid}", other).status_code == 404
    assert keys_server.call("GET", f"/responses/{rid}", owner).status_code == 200
