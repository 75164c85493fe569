"""Binding, access key, SSRF and HTTP-level hostile input (reliability.md sections B and D)."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import pytest

from servers import TEST_KEY, MockUpstream, Proxy, start_proxy

ACCESS_KEY = "a-long-enough-access-key-0123456789"


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "ferrule.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_public_bind_without_access_key_is_refused_before_binding() -> None:
    proc = run_serve("--host", "0.0.0.0", "--port", "18766")
    assert proc.returncode == 2
    assert "refusing to bind 0.0.0.0" in proc.stderr and "access key" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_metadata_upstream_is_refused() -> None:
    proc = run_serve("--upstream-url", "http://169.254.169.254/latest")
    assert proc.returncode == 2 and "link-local" in proc.stderr


def test_access_key_required_compared_and_never_forwarded(
    mock: MockUpstream, tmp_path: object
) -> None:
    env = {"FERRULE_ACCESS_KEY": ACCESS_KEY}
    with start_proxy("python", mock.url, "/dev/null", env=env) as p:
        body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}
        url = p.v1 + "/chat/completions"
        bearer = {"authorization": f"Bearer {TEST_KEY}"}
        r = httpx.post(url, json=body, headers=bearer)
        assert r.status_code == 401 and r.json()["error"]["code"] == "ferrule_access_key"
        r = httpx.post(url, json=body, headers={**bearer, "x-ferrule-access-key": ACCESS_KEY[:-1]})
        assert r.status_code == 401
        r = httpx.post(url, json=body, headers={**bearer, "x-ferrule-access-key": ACCESS_KEY})
        assert r.status_code == 200
        # the Anthropic route answers in its own envelope
        r = httpx.post(
            p.v1 + "/messages", json={**body, "max_tokens": 5}, headers={"x-api-key": TEST_KEY}
        )
        assert r.status_code == 401 and r.json()["type"] == "error"
        assert len(mock.requests()) == 1
        [seen] = mock.requests()
        assert ACCESS_KEY not in str(seen["headers"]) and seen["headers"]["x-api-key"] == TEST_KEY


def test_operator_key_mode(mock: MockUpstream) -> None:
    """With an operator key configured, clients authenticate with the access key as Bearer and
    the operator's Anthropic key goes upstream."""
    env = {"FERRULE_ACCESS_KEY": ACCESS_KEY, "FERRULE_UPSTREAM_API_KEY": "sk-ant-operator-key"}
    with start_proxy("python", mock.url, "/dev/null", env=env) as p:
        body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(
            p.v1 + "/chat/completions", json=body, headers={"authorization": f"Bearer {ACCESS_KEY}"}
        )
        assert r.status_code == 200
        [seen] = mock.requests()
        assert seen["headers"]["x-api-key"] == "sk-ant-operator-key"


def test_upstream_url_never_comes_from_the_request(proxy: Proxy, mock: MockUpstream) -> None:
    body = {
        "model": "claude-sonnet-4-6",
        "messages": [{"role": "user", "content": "hi"}],
        "api_base": "http://169.254.169.254",
        "base_url": "http://169.254.169.254",
    }
    headers = {"authorization": f"Bearer {TEST_KEY}", "x-upstream-url": "http://169.254.169.254"}
    r = httpx.post(proxy.v1 + "/chat/completions", json=body, headers=headers)
    assert r.status_code == 200
    [seen] = mock.requests()
    assert "api_base" not in seen["body"] and "base_url" not in seen["body"]


def _raw(port: int, data: bytes, read: int = 65536) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                part = s.recv(read)
                if not part:
                    break
                chunks.append(part)
                if b"\r\n\r\n" in b"".join(chunks) and len(b"".join(chunks)) > 20:
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def test_body_over_limit_is_413_before_the_body_is_read(proxy: Proxy, mock: MockUpstream) -> None:
    port = int(proxy.url.rsplit(":", 1)[1])
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer k\r\nContent-Length: 33554433\r\n\r\n"
    )
    answer = _raw(port, head)  # not one byte of the 32 MB body is sent
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert mock.requests() == []


@pytest.mark.parametrize(
    "request_bytes",
    [
        # both Content-Length and Transfer-Encoding: a smuggling attempt
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        # a header value with a bare LF inside
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\nb: c\r\n\r\n",
    ],
)
def test_malformed_framing_never_reaches_the_app(
    proxy: Proxy, mock: MockUpstream, request_bytes: bytes
) -> None:
    port = int(proxy.url.rsplit(":", 1)[1])
    answer = _raw(port, request_bytes)
    assert answer == b"" or answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 4")), answer[:100]
    assert mock.requests() == []


def test_request_id_header_is_sanitized(proxy: Proxy) -> None:
    body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(
        proxy.v1 + "/chat/completions",
        json=body,
        headers={
            "authorization": f"Bearer {TEST_KEY}",
            "x-request-id": "evil id with spaces <script>",
        },
    )
    assert r.headers["x-request-id"].startswith("req_")
    r = httpx.post(
        proxy.v1 + "/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {TEST_KEY}", "x-request-id": "trace-42.a:b"},
    )
    assert r.headers["x-request-id"] == "trace-42.a:b"


def test_slow_body_upload_gets_a_408(mock: MockUpstream) -> None:
    """A client that announces a body and trickles it is cut off at the body deadline."""
    with start_proxy("python", mock.url, "/dev/null", env={"FERRULE_BODY_TIMEOUT": "1"}) as p:
        port = int(p.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Authorization: Bearer k\r\nContent-Length: 100\r\n\r\n{"model"'
            )
            answer = s.recv(4096)  # nothing more is sent: the deadline must answer
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert b"did not arrive" in answer
    assert mock.requests() == []
