"""Keys never leak: with sentinel keys, every sink Ferrule writes to is searched for them.

Sinks: the server's log (DEBUG level, access log included), the ledger and response-cache SQLite
files (with their WAL), /metrics, /stats, every response body and header Ferrule sent back. The
upstream (the simulated Anthropic) must see the caller's key, and never the proxy access key."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest

from servers import MockUpstream, start_proxy

CALLER_KEY = "sk-ant-SENTINEL-caller-7f3a9c"
ACCESS_KEY = "ferrule-SENTINEL-access-51d2e8"
MODEL = "claude-sonnet-4-6"


def sinks(data_dir: Path, log: Path, responses: list[httpx.Response]) -> dict[str, bytes]:
    found = {"log": log.read_bytes()}
    for path in data_dir.rglob("*"):
        if path.is_file():
            found[str(path)] = path.read_bytes()
    for i, resp in enumerate(responses):
        found[f"response {i} body"] = resp.content
        found[f"response {i} headers"] = orjson.dumps(dict(resp.headers))
    return found


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_sentinel_keys_appear_in_no_sink(backend: str, mock: MockUpstream, tmp_path: Path) -> None:
    from conftest import kernel_module

    kernel_module(backend)
    data_dir = tmp_path / "data"
    log = tmp_path / "ferrule.log"
    env = {
        "FERRULE_DATA_DIR": str(data_dir),
        "FERRULE_LOG_LEVEL": "debug",
        "FERRULE_ACCESS_KEY": ACCESS_KEY,
        "FERRULE_RESPONSE_CACHE": "sqlite",
        "FERRULE_BREAKER_THRESHOLD": "1000",
    }
    auth = {"authorization": f"Bearer {CALLER_KEY}", "x-ferrule-access-key": ACCESS_KEY}
    responses: list[httpx.Response] = []
    with start_proxy(backend, mock.url, str(log), env=env) as proxy, httpx.Client(timeout=30) as c:
        chat = proxy.v1 + "/chat/completions"
        hi = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 0}

        def go(method: str, url: str, **kw: object) -> httpx.Response:
            resp = c.request(method, url, **kw)  # type: ignore[arg-type]
            responses.append(resp)
            return resp

        assert go("POST", chat, json=hi, headers=auth).status_code == 200
        assert go("POST", chat, json=hi, headers=auth).headers["x-cache"] == "HIT"
        assert go("POST", chat, json={**hi, "stream": True}, headers=auth).status_code == 200
        # errors of every kind, each of which could echo what it was given
        assert go("POST", chat, json=hi).status_code == 401  # no access key
        assert (
            go(
                "POST", chat, json=hi, headers={**auth, "x-ferrule-access-key": CALLER_KEY}
            ).status_code
            == 401
        )
        assert (
            go("POST", chat, content=b"{bad json " + CALLER_KEY.encode(), headers=auth).status_code
            == 400
        )
        mock.script(["error=401"])  # never retried
        assert go("POST", chat, json={**hi, "temperature": 0.5}, headers=auth).status_code == 401
        mock.script(["error=529"] * 3)
        assert (
            go(
                "POST", chat, json={**hi, "temperature": 0.5, "stream": True}, headers=auth
            ).status_code
            == 503
        )
        bad = {
            **hi,
            "messages": [{"role": "user", "content": "x [mock:midstream_error]"}],
            "stream": True,
        }
        assert go("POST", chat, json=bad, headers=auth).status_code == 200
        msgs = {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
        anth = {
            "x-api-key": CALLER_KEY,
            "x-ferrule-access-key": ACCESS_KEY,
            "anthropic-version": "2023-06-01",
        }
        assert go("POST", proxy.v1 + "/messages", json=msgs, headers=anth).status_code == 200
        assert (
            go(
                "POST", proxy.v1 + "/messages", json={**msgs, "stream": True}, headers=anth
            ).status_code
            == 200
        )
        assert go("POST", proxy.v1 + "/messages", content=b"[", headers=anth).status_code == 400
        assert go("GET", proxy.url + "/metrics", headers=auth).status_code == 200
        assert go("GET", proxy.url + "/stats", headers=auth).status_code == 200
        time.sleep(1.5)  # the ledger writer's batch interval
        # the upstream saw the caller's key, never the access key
        seen = mock.requests()
        assert seen and all(r["headers"].get("x-api-key") == CALLER_KEY for r in seen)
        assert all(ACCESS_KEY not in orjson.dumps(r["headers"]).decode() for r in seen)
    found = sinks(data_dir, log, responses)
    assert any("ledger" in name for name in found), sorted(found)
    assert any("response-cache" in name for name in found), sorted(found)
    assert b"chat/completions" in found["log"]  # the access log did record the requests
    for name, content in found.items():
        for key in (CALLER_KEY, ACCESS_KEY):
            assert key.encode() not in content, f"{key} found in {name}"
            # nor a recognisable part of it
            assert key.split("-")[-1].encode() not in content, f"part of {key} found in {name}"
