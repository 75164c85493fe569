"""Issue 11, items 5-8, through real ``ferrule serve`` processes and the fault-injecting upstream:

- 5: a ``/v1/messages`` stream that ends without ``message_stop`` (or a close-delimited stream
  cut by a reset) ends with an Anthropic ``event: error``, never a silent finish, and the ledger
  says so;
- 8: one event is bounded on ``/v1/messages`` as on the OpenAI route (same limit, same error,
  bounded memory), and so is a non-streamed upstream answer (a clean 502);
- 6: operator mode (Ferrule holds the upstream key): browser-shaped requests (non-JSON content
  type, a foreign ``Origin``, a rebinding ``Host``) never reach the upstream;
- 7: an upstream error that echoes a key Ferrule holds is redacted on both routes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import anthropic
import httpx
import openai
import psutil
import pytest

from faults import (
    FaultUpstream,
    Scenario,
    fault_upstream,
    huge_event,
    ok,
    sse_error,
    status,
    truncated_eof,
    wire,
)
from faults.server import Exchange
from ferrule.config import Config
from ferrule.errors import ProxyError
from servers import TEST_KEY, Proxy, start_proxy
from sse_client import error_of

MODEL = "claude-sonnet-4-6"
AUTH = {"authorization": f"Bearer {TEST_KEY}"}
ANTH = {"x-api-key": TEST_KEY, "anthropic-version": "2023-06-01"}
OPERATOR_KEY = "sk-ant-operator-0123456789abcdefghij"
EVENT_LIMIT = 1024 * 1024
RESPONSE_LIMIT = 2 * 1024 * 1024
FAST = {
    "FERRULE_FIRST_BYTE_TIMEOUT": "2",
    "FERRULE_READ_TIMEOUT": "2",
    "FERRULE_STREAM_DEADLINE": "10",
    "FERRULE_RETRY_BASE": "0.01",
    "FERRULE_RETRY_CAP": "0.05",
    "FERRULE_MAX_EVENT_BYTES": str(EVENT_LIMIT),
    "FERRULE_MAX_RESPONSE_BYTES": str(RESPONSE_LIMIT),
    "FERRULE_BREAKER_THRESHOLD": "1000000",
    "FERRULE_RESPONSE_CACHE": "off",
}


# -- scenarios this module needs beyond tests/faults ------------------------------------------


@dataclass(frozen=True)
class CloseDelimitedReset(Scenario):
    """200 SSE with no length (the body ends when the connection does), ``k`` events, then RST."""

    kind: ClassVar[str] = "hardening_close_delimited_reset"
    k: int = 5

    async def run(self, ex: Exchange) -> None:
        await ex.head(200, [("content-type", wire.SSE_TYPE)], framing="close")
        await ex.events(wire.ok_events(ex.body_json, 5)[: self.k])
        await ex.sleep(0.05)
        ex.reset()


@dataclass(frozen=True)
class CutMidEvent(Scenario):
    """200 SSE, four whole events and half of the fifth, then a proper end of the HTTP body."""

    kind: ClassVar[str] = "hardening_cut_mid_event"

    async def run(self, ex: Exchange) -> None:
        events = wire.ok_events(ex.body_json, 5)
        await ex.sse_head(close=True)
        await ex.events(events[:4])
        await ex.body(events[4][: len(events[4]) // 2])
        await ex.end()
        ex.close()


@dataclass(frozen=True)
class JsonCut(Scenario):
    """A non-streamed 200 whose content-length promises more than arrives (FIN half-way)."""

    kind: ClassVar[str] = "hardening_json_cut"

    async def run(self, ex: Exchange) -> None:
        body = json.dumps(wire.message_json(ex.body_json, 50, None)).encode()
        await ex.head(200, [("content-type", wire.JSON_TYPE)], framing="length", length=len(body))
        await ex.write(body[: len(body) // 2])
        await ex.sleep(0.05)
        ex.close()


@dataclass(frozen=True)
class CrlfStream(Scenario):
    """A complete stream with CRLF line ends, written in pieces that split events and line ends,
    with a comment after ``message_stop``: what goes out must be these bytes, in this order."""

    kind: ClassVar[str] = "hardening_crlf_stream"

    async def run(self, ex: Exchange) -> None:
        await ex.sse_head()
        for piece in crlf_pieces(ex.body_json):
            await ex.body(piece)
            await ex.sleep(0.01)  # one network chunk per piece
        await ex.end()


def crlf_pieces(body: dict[str, Any]) -> list[bytes]:
    raw = b"".join(wire.ok_events(body, 3)).replace(b"\n", b"\r\n") + b": bye\r\n\r\n"
    raw = re.sub(rb'"msg_[A-Za-z0-9]+"', b'"msg_fixed"', raw)  # the same bytes every time
    stop = raw.index(b"event: message_stop")
    first_end = raw.index(b"\r\n\r\n") + 3  # a blank line split between its CR and LF
    # mid-event; mid-CRLF; mid-event; message_stop with the start of the comment (held back)
    cuts = [0, 40, first_end, stop + 5, raw.index(b": bye") + 3, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(cuts)]


# -- helpers ------------------------------------------------------------------------------------


@dataclass
class Rig:
    proxy: Proxy
    fu: FaultUpstream
    data: Path


def _rig(
    backend: str, tmp: Path, env: dict[str, str] | None = None, fu_default: Any = None
) -> Iterator[Rig]:
    with (
        fault_upstream(default=fu_default) as fu,
        start_proxy(
            backend,
            fu.url,
            str(tmp / "ferrule.log"),
            env={**FAST, "FERRULE_DATA_DIR": str(tmp / "data"), **(env or {})},
        ) as p,
    ):
        yield Rig(p, fu, tmp / "data")


@pytest.fixture(scope="module", params=["rust", "python"])
def rig(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """Pass-through mode (callers bring their key), one proxy per backend."""
    from conftest import kernel_module

    kernel_module(request.param)
    yield from _rig(request.param, tmp_path_factory.mktemp(f"hard-{request.param}"))


@pytest.fixture(scope="module")
def op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """Operator mode: Ferrule holds the upstream key and no access key is configured."""
    env = {"FERRULE_UPSTREAM_API_KEY": OPERATOR_KEY}
    yield from _rig("python", tmp_path_factory.mktemp("hard-op"), env)


@pytest.fixture
def fx(rig: Rig) -> Rig:
    rig.fu.reset()
    return rig


@pytest.fixture
def opx(op: Rig) -> Rig:
    op.fu.reset()
    return op


def rid() -> str:
    return "hard-" + uuid.uuid4().hex


def post_messages(
    p: Proxy,
    *,
    stream: bool,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 20,
) -> httpx.Response:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
    }
    if stream:
        body["stream"] = True
    h = {**ANTH, "x-request-id": request_id or rid(), **(headers or {})}
    return httpx.post(p.v1 + "/messages", json=body, headers=h, timeout=timeout)


def post_chat(
    p: Proxy,
    *,
    stream: bool,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 20,
) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    h = {**AUTH, "x-request-id": request_id or rid(), **(headers or {})}
    return httpx.post(p.v1 + "/chat/completions", json=body, headers=h, timeout=timeout)


def anthropic_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Every event of an Anthropic SSE body as (event, parsed data); a partial or unparsable
    event fails the test (a client would choke on it before seeing the error)."""
    assert raw.endswith(b"\n\n"), raw[-200:]
    out = []
    for block in raw.split(b"\n\n")[:-1]:
        name, data = "message", []
        for line in block.split(b"\n"):
            field, _, value = line.partition(b": ")
            if field == b"event":
                name = value.decode()
            elif field == b"data":
                data.append(value)
            else:
                raise AssertionError(f"unexpected line {line[:200]!r}")
        out.append((name, json.loads(b"\n".join(data))))
    return out


def last_error(raw: bytes) -> dict[str, Any]:
    events = anthropic_events(raw)
    name, data = events[-1]
    assert name == "error" and data["type"] == "error", events[-3:]
    assert [n for n, _ in events].count("error") == 1, "exactly one error event"
    err: dict[str, Any] = data["error"]
    return err


def ledger_row(data: Path, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    path = data / "ledger.sqlite3"
    deadline = time.monotonic() + timeout
    while True:
        if path.exists():
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            conn.row_factory = sqlite3.Row
            try:
                row = conn.execute(
                    "SELECT * FROM requests WHERE request_id = ?", (request_id,)
                ).fetchone()
            except sqlite3.OperationalError:
                row = None
            finally:
                conn.close()
            if row is not None:
                return dict(row)
        if time.monotonic() > deadline:
            raise AssertionError(f"no ledger row for {request_id}")
        time.sleep(0.1)


def _worker_pid(proxy: Proxy) -> int:
    port = int(proxy.url.rsplit(":", 1)[1])
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            assert conn.pid
            proc = psutil.Process(conn.pid)
            children = proc.children()
            return int(children[0].pid if children else proc.pid)
    raise AssertionError("proxy process not found")


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


# -- item 5: truncation is never a clean finish on /v1/messages ---------------------------------


@pytest.mark.parametrize("framing", ["chunked", "eof"])
def test_truncated_messages_stream_ends_with_an_error_event(fx: Rig, framing: str) -> None:
    fx.fu.push(truncated_eof(5, framing=framing))  # type: ignore[arg-type]
    request_id = rid()
    r = post_messages(fx.proxy, stream=True, request_id=request_id)
    assert r.status_code == 200
    err = last_error(r.content)
    assert err["type"] == "api_error" and "truncated" in err["message"]
    assert b"message_stop" not in r.content
    row = ledger_row(fx.data, request_id)
    assert (row["status"], row["outcome"], row["usage_estimated"]) == (200, "truncated", 1)


def test_close_delimited_stream_cut_by_a_reset_ends_with_an_error_event(fx: Rig) -> None:
    fx.fu.push(CloseDelimitedReset(5))
    request_id = rid()
    r = post_messages(fx.proxy, stream=True, request_id=request_id)
    assert r.status_code == 200
    assert last_error(r.content)["type"] == "api_error"
    assert ledger_row(fx.data, request_id)["outcome"] in ("truncated", "upstream_error")


def test_a_stream_cut_mid_event_never_hands_the_client_half_an_event(fx: Rig) -> None:
    """The half event is held back, so the error event that follows parses as one."""
    fx.fu.push(CutMidEvent())
    r = post_messages(fx.proxy, stream=True)
    events = anthropic_events(r.content)  # every event parses: no half event glued to the error
    assert [n for n, _ in events][:4] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
    ]
    assert last_error(r.content)["message"]


def test_the_anthropic_sdk_raises_on_a_truncated_stream(fx: Rig) -> None:
    fx.fu.push(truncated_eof(5))
    client = anthropic.Anthropic(base_url=fx.proxy.url, api_key=TEST_KEY, max_retries=0)
    stream = client.messages.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(anthropic.APIStatusError, match="truncated"):
        for _ in stream:
            pass


def test_complete_and_upstream_error_streams_are_unchanged(fx: Rig) -> None:
    """A complete stream gets no extra event; Anthropic's own error event is the only one."""
    fx.fu.push(ok(n=4))
    request_id = rid()
    r = post_messages(fx.proxy, stream=True, request_id=request_id)
    events = anthropic_events(r.content)
    assert events[-1][0] == "message_stop" and all(n != "error" for n, _ in events)
    assert ledger_row(fx.data, request_id)["outcome"] == "complete"
    fx.fu.push(sse_error("overloaded_error", after=4))
    request_id = rid()
    r = post_messages(fx.proxy, stream=True, request_id=request_id)
    assert last_error(r.content)["type"] == "overloaded_error"
    assert ledger_row(fx.data, request_id)["outcome"] == "upstream_error"


def test_a_crlf_stream_split_anywhere_is_relayed_byte_for_byte(fx: Rig) -> None:
    fx.fu.push(CrlfStream())
    r = post_messages(fx.proxy, stream=True)
    assert r.content == b"".join(crlf_pieces(json.loads(fx.fu.records[-1].body)))


# -- item 8: one event, and one non-streamed answer, are bounded --------------------------------


def test_huge_event_is_cut_at_the_event_limit_on_messages(fx: Rig) -> None:
    pid = _worker_pid(fx.proxy)
    before = _rss(pid)
    fx.fu.push(huge_event(mb=64))
    request_id = rid()
    t0 = time.monotonic()
    r = post_messages(fx.proxy, stream=True, request_id=request_id, timeout=30)
    assert r.status_code == 200 and time.monotonic() - t0 < 10
    assert len(r.content) < 64 * 1024  # the partial event was never relayed
    err = last_error(r.content)
    assert str(EVENT_LIMIT) in err["message"], err
    assert _rss(pid) - before < 48 * 1024 * 1024  # bounded by the 1 MiB cap, not 64 MiB
    assert ledger_row(fx.data, request_id)["outcome"] == "upstream_error"
    # the OpenAI route cuts the same event at the same limit with the same message
    fx.fu.push(huge_event(mb=8))
    assert error_of(post_chat(fx.proxy, stream=True).content)["message"] == err["message"]


@pytest.mark.parametrize("route", ["messages", "chat"])
def test_oversized_non_streamed_answer_is_a_clean_502(fx: Rig, route: str) -> None:
    text = "a" * (RESPONSE_LIMIT + 1024)
    message = {**wire.message_json({}, 1, None), "content": [{"type": "text", "text": text}]}
    fx.fu.push(status(200, body=json.dumps(message).encode(), content_type=wire.JSON_TYPE))
    post = post_messages if route == "messages" else post_chat
    r = post(fx.proxy, stream=False)
    assert r.status_code == 502 and len(r.content) < 4096
    body = r.json()
    err = body["error"]
    assert (body.get("type") == "error") == (route == "messages")
    assert str(RESPONSE_LIMIT) in err["message"]


def test_non_streamed_answer_cut_half_way_is_a_502_not_a_truncated_200(fx: Rig) -> None:
    fx.fu.push(JsonCut())
    request_id = rid()
    r = post_messages(fx.proxy, stream=False, request_id=request_id)
    assert r.status_code == 502 and r.json()["type"] == "error", r.content[:200]
    assert ledger_row(fx.data, request_id)["outcome"] == "upstream_error"


# -- item 7: a key Ferrule holds is never relayed -----------------------------------------------


def _assert_no_key(r: httpx.Response, *keys: str) -> None:
    seen = r.content.decode("utf-8", "replace") + json.dumps(dict(r.headers))
    for key in keys:
        assert key not in seen, seen[:500]


@pytest.mark.parametrize("route", ["messages", "chat"])
def test_upstream_errors_echoing_the_operator_key_are_redacted(opx: Rig, route: str) -> None:
    post = post_messages if route == "messages" else post_chat
    no_key = {"authorization": "", "x-api-key": ""}  # the operator's key goes upstream
    opx.fu.push(status(401, message=f"invalid x-api-key: {OPERATOR_KEY}", headers={"x-leak": "1"}))
    r = post(opx.proxy, stream=False, headers=no_key)
    assert r.status_code == 401 and "[redacted]" in r.json()["error"]["message"]
    _assert_no_key(r, OPERATOR_KEY)
    assert opx.fu.records[-1].headers["x-api-key"] == OPERATOR_KEY
    # in a stream, after the first byte
    opx.fu.push(sse_error("permission_error", after=4, message=f"key {OPERATOR_KEY} revoked"))
    r = post(opx.proxy, stream=True, headers=no_key)
    assert r.status_code == 200 and "[redacted]" in r.text
    _assert_no_key(r, OPERATOR_KEY)
    # and a rate-limit header that quotes it is dropped
    opx.fu.push(status(429, {"retry-after": "100", "anthropic-ratelimit-note": OPERATOR_KEY}))
    r = post(opx.proxy, stream=False, headers=no_key)
    assert r.status_code == 429 and r.headers["retry-after"] == "100"
    _assert_no_key(r, OPERATOR_KEY)


def test_upstream_errors_echoing_the_callers_key_are_redacted(fx: Rig) -> None:
    for route in ("messages", "chat"):
        post = post_messages if route == "messages" else post_chat
        fx.fu.push(status(403, message=f"the key {TEST_KEY} is revoked"))
        r = post(fx.proxy, stream=False)
        assert r.status_code == 403 and "revoked" in r.text
        _assert_no_key(r, TEST_KEY)
        fx.fu.push(sse_error("api_error", after=0, message=f"bad key {TEST_KEY}"))
        r = post(fx.proxy, stream=True)  # the first event: an HTTP error on the OpenAI route
        assert "bad key" in r.text
        _assert_no_key(r, TEST_KEY)


# -- item 6: browser-shaped requests never spend the operator's key -----------------------------

HI = b'{"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}'


def _raw_post(p: Proxy, path: str, headers: dict[str, str], body: bytes = HI) -> httpx.Response:
    return httpx.post(p.url + path, content=body, headers=headers, timeout=20)


def test_the_reported_attack_is_refused(opx: Rig) -> None:
    port = opx.proxy.url.rsplit(":", 1)[1]
    attack = {
        "content-type": "text/plain",
        "origin": "https://evil.example",
        "host": f"rebind.example:{port}",
    }
    for path in ("/v1/messages", "/v1/chat/completions", "/v1/messages/count_tokens"):
        r = _raw_post(opx.proxy, path, attack)
        assert r.status_code in (403, 415, 421), (path, r.status_code, r.text)
    assert opx.fu.attempts == 0


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"content-type": "text/plain"}, 415),
        ({"content-type": "application/x-www-form-urlencoded"}, 415),
        ({"content-type": "multipart/form-data; boundary=x"}, 415),
        ({}, 415),  # no content type: Ferrule holds a key, so JSON must be declared
        ({"content-type": "application/json", "origin": "https://evil.example"}, 403),
        ({"content-type": "application/json", "origin": "null"}, 403),
        ({"content-type": "application/json", "sec-fetch-site": "cross-site"}, 403),
        ({"content-type": "application/json", "host": "rebind.example"}, 421),
        ({"content-type": "application/json", "host": "127.0.0.1.nip.io"}, 421),
    ],
)
def test_operator_mode_refusals(opx: Rig, headers: dict[str, str], code: int) -> None:
    for path, envelope in (("/v1/messages", "anthropic"), ("/v1/chat/completions", "openai")):
        r = _raw_post(opx.proxy, path, headers)
        assert r.status_code == code, (path, r.text)
        body = r.json()
        if envelope == "anthropic":
            assert body["type"] == "error" and body["error"]["message"]
        else:
            assert set(body) == {"error"} and body["error"]["message"]
    assert opx.fu.attempts == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "application/json"},
        {"content-type": "application/json; charset=utf-8"},
        {"content-type": "Application/JSON;charset=UTF-8"},
        {"content-type": "application/json", "host": "localhost"},
        {"content-type": "application/json", "host": "LOCALHOST:{port}"},
        {"content-type": "application/json", "host": "127.0.0.2:{port}"},
        {"content-type": "application/json", "host": "[::1]:{port}"},
        {"content-type": "application/json", "host": "app.localhost:{port}"},
        {"content-type": "application/json", "sec-fetch-site": "none"},
    ],
)
def test_operator_mode_accepts_local_json_clients(opx: Rig, headers: dict[str, str]) -> None:
    port = opx.proxy.url.rsplit(":", 1)[1]
    given = {k: v.format(port=port) for k, v in headers.items()}
    r = _raw_post(opx.proxy, "/v1/messages", {"anthropic-version": "2023-06-01", **given})
    assert r.status_code == 200, r.text
    assert opx.fu.records[-1].headers["x-api-key"] == OPERATOR_KEY


def test_real_sdks_pass_the_checks_in_operator_mode(opx: Rig) -> None:
    oa = openai.OpenAI(base_url=opx.proxy.v1, api_key="unused", max_retries=0)
    answer = oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content
    an = anthropic.Anthropic(base_url=opx.proxy.url, api_key="unused", max_retries=0)
    with an.messages.stream(
        model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        assert s.get_final_message().content
    assert opx.fu.attempts == 2


def test_browser_origins_are_refused_in_pass_through_mode_too(fx: Rig) -> None:
    r = post_messages(fx.proxy, stream=False, headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["type"] == "error"
    r = post_chat(fx.proxy, stream=False, headers={"sec-fetch-site": "same-site"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
    r = _raw_post(fx.proxy, "/v1/messages", {**ANTH, "content-type": "text/plain"})
    assert r.status_code == 415
    assert fx.fu.attempts == 0
    # a body without a content type (no browser can send one without an Origin) still passes
    r = _raw_post(fx.proxy, "/v1/messages", ANTH)
    assert r.status_code == 200


def test_allow_lists_are_configurable(tmp_path: Path) -> None:
    env = {
        "FERRULE_UPSTREAM_API_KEY": OPERATOR_KEY,
        "FERRULE_ALLOWED_ORIGINS": "chrome-extension://abcdef, https://app.example/",
        "FERRULE_ALLOWED_HOSTS": "proxy.internal,.corp.example",
    }
    json_ct = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    with next_rig("python", tmp_path, env) as rg:
        for extra, code in [
            ({"origin": "chrome-extension://abcdef"}, 200),
            ({"origin": "https://APP.example"}, 200),
            ({"origin": "https://app.example:444"}, 403),
            ({"origin": "chrome-extension://other"}, 403),
            ({"host": "proxy.internal:8080"}, 200),
            ({"host": "a.corp.example"}, 200),
            ({"host": "corp.example"}, 200),
            ({"host": "evilcorp.example"}, 421),
            ({"host": "localhost"}, 200),
        ]:
            r = _raw_post(rg.proxy, "/v1/messages", {**json_ct, **extra})
            assert r.status_code == code, (extra, r.text)
    with next_rig("python", tmp_path, {**env, "FERRULE_ALLOWED_HOSTS": "*"}) as rg:
        r = _raw_post(rg.proxy, "/v1/messages", {**json_ct, "host": "rebind.example"})
        assert r.status_code == 200


def next_rig(
    backend: str, tmp: Path, env: dict[str, str]
) -> contextlib.AbstractContextManager[Rig]:
    own = tmp / uuid.uuid4().hex[:8]
    own.mkdir()
    return contextlib.contextmanager(_rig)(backend, own, env)


# -- the admission rules as a unit ---------------------------------------------------------------


def _scope(**headers: str) -> dict[str, Any]:
    return {"headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]}


def test_admission_unit_rules() -> None:
    from ferrule.routes.common import Admission

    op = Admission(Config(upstream_api_key=OPERATOR_KEY))
    plain = Admission(Config())
    public = Admission(Config(host="0.0.0.0", access_key_sha256="x" * 64))
    ok_json = {"content_type": "application/json"}
    for host in ("localhost", "127.0.0.1:1", "[::1]:2", "[::ffff:127.0.0.1]", "localhost."):
        op.check(_scope(host=host, **ok_json))
    for host in ("rebind.example", "[::2]", "10.0.0.1", "localhost.evil", "127.0.0.1:x", "[::1"):
        with pytest.raises(ProxyError) as exc:
            op.check(_scope(host=host, **ok_json))
        assert exc.value.status == 421
        plain.check(_scope(host=host, **ok_json))  # no key held: Host is not checked
        public.check(_scope(host=host, **ok_json))  # public bind: the access key guards it
    for ctype in (
        "application/json",
        " application/json ; charset=utf-8",
        "application/vnd.x+json",
    ):
        op.check(_scope(content_type=ctype))
    for ctype in ("text/plain", "application/jsonx", "text/json", ""):
        for adm in (op, plain):
            with pytest.raises(ProxyError) as exc:
                adm.check(_scope(content_type=ctype))
            assert exc.value.status == 415
    plain.check(_scope())
    with pytest.raises(ProxyError):
        op.check(_scope())
