"""The fault-injecting fake upstream does what each scenario promises, seen from the client side.

The reliability tests trust the fake to misbehave exactly as described (a reset is an RST, a
truncated stream has no ``message_stop``, a client close is recorded with its time), so the fake is
tested first with raw sockets, httpx and the official ``anthropic`` SDK — never through the proxy.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from faults import (
    FaultUpstream,
    drip,
    echo,
    fault_upstream,
    fault_upstream_process,
    garbage,
    huge_event,
    infinite,
    ok,
    ping_only,
    rate_limited,
    reset_after,
    reset_before_headers,
    scenario_from_json,
    sse_error,
    stall_after,
    stall_before_headers,
    status,
    truncated_eof,
    unknown_event,
)

pytestmark = pytest.mark.timeout(30)

STREAM_BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 64,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}
PLAIN_BODY = {k: v for k, v in STREAM_BODY.items() if k != "stream"}


@pytest.fixture
def fu() -> Iterator[FaultUpstream]:
    with fault_upstream() as upstream:
        yield upstream
    assert upstream.leftover_tasks == 0


def event_names(raw: bytes) -> list[str]:
    """Event names of an SSE body in order (only the well-formed ``event:`` lines)."""
    return [
        line[len(b"event: ") :].decode() for line in raw.split(b"\n") if line.startswith(b"event: ")
    ]


def data_payloads(raw: bytes) -> list[dict[str, object]]:
    return [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]


def raw_request(url: str, body: dict[str, object] | None = None, extra: str = "") -> bytes:
    payload = json.dumps(body if body is not None else STREAM_BODY).encode()
    host = url.removeprefix("http://")
    return (
        f"POST /v1/messages HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n{extra}\r\n"
    ).encode() + payload


def connect(url: str, timeout: float = 5.0) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_until_closed(sock: socket.socket) -> tuple[bytes, str]:
    """Everything the server sends, and how the connection ended: ``fin`` or ``rst``."""
    out = bytearray()
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return bytes(out), "rst"
        if not data:
            return bytes(out), "fin"
        out += data


def stream(url: str, body: dict[str, object] = STREAM_BODY, **kw: object) -> bytes:
    with httpx.stream("POST", url + "/v1/messages", json=body, **kw) as resp:  # type: ignore[arg-type]
        assert resp.status_code == 200
        return resp.read()


# -- success ------------------------------------------------------------------------------------


def test_ok_streams_anthropic_events_or_answers_json(fu: FaultUpstream) -> None:
    fu.push(ok(n=4, usage={"input_tokens": 42, "cache_read_input_tokens": 7}))
    raw = stream(fu.url)
    assert event_names(raw) == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    payloads = data_payloads(raw)
    assert [p["type"] for p in payloads] == event_names(raw)  # the name repeats as "type"
    assert raw.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    final = payloads[-2]
    assert final["usage"] == {
        "input_tokens": 42,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 7,
        "output_tokens": 4,
    }
    resp = httpx.post(fu.url + "/v1/messages", json=PLAIN_BODY)
    message = resp.json()
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["request-id"].startswith("req_")
    assert message["type"] == "message" and message["stop_reason"] == "end_turn"
    assert len(message["content"][0]["text"].split()) == 5
    assert [r.scenario for r in fu.records] == ["ok", "ok"]  # the second from the default


def test_anthropic_sdk_parses_ok_and_tolerates_the_stream_faults(fu: FaultUpstream) -> None:
    fu.push(ok(n=6), ok(n=3), unknown_event(n=2), sse_error("overloaded_error", after=4))
    model, question = "claude-sonnet-4-6", [{"role": "user", "content": "hi"}]
    with anthropic.Anthropic(base_url=fu.url, api_key="sk-ant-test", max_retries=0) as sdk:
        with sdk.messages.stream(model=model, max_tokens=64, messages=question) as s:  # type: ignore[arg-type]
            final = s.get_final_message()
        block = final.content[0]
        assert block.type == "text" and block.text == "Ferrules hold brushes together while the"
        assert final.stop_reason == "end_turn" and final.usage.output_tokens == 6
        message = sdk.messages.create(model=model, max_tokens=64, messages=question)  # type: ignore[arg-type]
        first = message.content[0]
        assert first.type == "text" and first.text == "Ferrules hold brushes"
        with sdk.messages.stream(model=model, max_tokens=64, messages=question) as s:  # type: ignore[arg-type]
            assert s.get_final_message().usage.output_tokens == 2
        with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
            events = sdk.messages.create(model=model, max_tokens=64, messages=question, stream=True)  # type: ignore[arg-type]
            for _ in events:
                pass
    assert fu.attempts == 4
    assert "sk-ant-test" in fu.records[0].headers["authorization"]  # SDK 2.x: Bearer


def test_echo_returns_the_request_as_received(fu: FaultUpstream) -> None:
    fu.push(echo())
    body = b'{"n": 123456789012345678901234567890}'
    resp = httpx.post(
        fu.url + "/v1/messages?beta=true",
        content=body,
        headers={"X-Custom": "A", "anthropic-beta": "b1,b2"},
    )
    seen = resp.json()
    assert seen["method"] == "POST" and seen["path"] == "/v1/messages?beta=true"
    assert seen["headers"]["x-custom"] == "A" and seen["headers"]["anthropic-beta"] == "b1,b2"
    assert seen["body"].encode() == body
    assert fu.records[0].body == body


# -- statuses, ordering, connections ------------------------------------------------------------


def test_status_bodies_are_anthropic_envelopes_or_intermediary_html(fu: FaultUpstream) -> None:
    fu.push(
        rate_limited(2),
        529,
        status(500, {"x-should-retry": "false"}),
        status(502),
        status(413, body=b"too big", content_type="text/plain"),
    )
    with httpx.Client(base_url=fu.url) as client:
        r429, r529, r500, r502, r413 = (client.post("/v1/messages", json={}) for _ in range(5))
    assert r429.status_code == 429 and r429.headers["retry-after"] == "2"
    error = r429.json()
    assert error["type"] == "error" and error["error"]["type"] == "rate_limit_error"
    assert error["request_id"] == r429.headers["request-id"]
    assert r529.status_code == 529 and r529.json()["error"]["type"] == "overloaded_error"
    assert r500.json()["error"]["type"] == "api_error"
    assert r500.headers["x-should-retry"] == "false"
    assert r502.headers["content-type"] == "text/html" and r502.text.startswith("<html>")
    assert (r413.status_code, r413.text, r413.headers["content-type"]) == (
        413,
        "too big",
        "text/plain",
    )


def test_push_order_then_default_and_reset(fu: FaultUpstream) -> None:
    fu.set_default(status(418))
    fu.push(529, status(500), ok(n=1))
    codes = [httpx.post(fu.url + "/v1/messages", json={}).status_code for _ in range(5)]
    assert codes == [529, 500, 200, 418, 418]
    assert fu.attempts == 5
    assert [r.attempt for r in fu.records] == [1, 2, 3, 4, 5]
    assert [r.spec.get("code") for r in fu.records] == [529, 500, None, 418, 418]
    # control requests neither consume scenarios nor count as attempts
    assert httpx.get(fu.url + "/_faults/health").json()["ok"] is True
    fu.reset()
    assert (fu.attempts, fu.records, fu.queued) == (0, [], 0)


def test_keep_alive_and_connection_close(fu: FaultUpstream) -> None:
    with httpx.Client(base_url=fu.url) as client:
        for _ in range(3):
            assert client.post("/v1/messages", json=STREAM_BODY).status_code == 200
        closing = client.post("/v1/messages", json={}, headers={"connection": "close"})
        assert closing.headers["connection"] == "close"
        client.post("/v1/messages", json={})
    conns = [(r.conn_id, r.request_on_conn) for r in fu.records]
    assert conns == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1)]
    with connect(fu.url) as sock:  # the server, not the client, closes after the answer
        sock.sendall(raw_request(fu.url, PLAIN_BODY, "connection: close\r\n"))
        data, how = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 OK") and how == "fin"


def test_chunked_request_bodies_and_bad_requests_are_handled(fu: FaultUpstream) -> None:
    fu.push(echo())
    resp = httpx.post(fu.url + "/v1/x", content=iter([b'{"a":', b" 1}"]))
    assert resp.json()["json"] == {"a": 1}
    with connect(fu.url) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        data, how = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 400") and how == "fin"
    assert fu.attempts == 1  # a malformed request never reaches a scenario


# -- connection faults --------------------------------------------------------------------------


def test_reset_before_headers_is_an_rst_after_the_request(fu: FaultUpstream) -> None:
    fu.push(reset_before_headers(), reset_before_headers())
    with connect(fu.url) as sock:
        sock.sendall(raw_request(fu.url))
        assert read_until_closed(sock) == (b"", "rst")
    with pytest.raises(httpx.TransportError):
        httpx.post(fu.url + "/v1/messages", json=STREAM_BODY)
    fu.wait_record(1)
    first = fu.wait_record(0)
    assert first.outcome == "reset" and first.bytes_sent == 0 and first.body  # request was read


def test_reset_after_k_events(fu: FaultUpstream) -> None:
    fu.push(reset_after(4))
    with connect(fu.url) as sock:
        sock.sendall(raw_request(fu.url))
        data, how = read_until_closed(sock)
    assert how == "rst"
    assert event_names(data) == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
    ]
    assert fu.wait_record(0).outcome == "reset"


def test_stall_before_headers_times_out_and_records_the_client_leaving(fu: FaultUpstream) -> None:
    fu.push(stall_before_headers(10))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(fu.url + "/v1/messages", json=STREAM_BODY, timeout=httpx.Timeout(5, read=0.3))
    closed = time.monotonic()
    record = fu.wait_record(0, timeout=2)
    assert record.outcome == "client_gone" and record.first_byte_at is None
    assert record.client_closed_at is not None and record.client_closed_at - closed < 0.2


def test_stall_before_headers_then_ok_and_stall_after(fu: FaultUpstream) -> None:
    fu.push(stall_before_headers(0.2, then_ok=True), stall_after(4, 10))
    start = time.monotonic()
    assert event_names(stream(fu.url))[-1] == "message_stop"
    assert time.monotonic() - start >= 0.2
    got = bytearray()
    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.stream(
            "POST", fu.url + "/v1/messages", json=STREAM_BODY, timeout=httpx.Timeout(5, read=0.3)
        ) as resp,
    ):
        for chunk in resp.iter_bytes():
            got += chunk
    assert len(event_names(bytes(got))) == 4
    assert fu.wait_record(1).outcome == "client_gone"


def test_records_the_client_closing_mid_stream(fu: FaultUpstream) -> None:
    fu.push(ok(n=200, interval=0.01))
    with httpx.stream("POST", fu.url + "/v1/messages", json=STREAM_BODY) as resp:
        seen = 0
        for line in resp.iter_lines():
            seen += line.startswith("event: content_block_delta")
            if seen == 5:
                closed = time.monotonic()  # leaving the block closes the socket
                break
    record = fu.wait_record(0, lambda r: r.client_closed_at is not None, timeout=2)
    assert record.client_close in ("eof", "reset") and record.client_closed_at is not None
    assert 0 <= record.client_closed_at - closed < 0.1
    record = fu.wait_record(0)
    assert record.outcome == "client_gone" and record.finished_at is not None
    assert record.finished_at - closed < 0.2


@pytest.mark.parametrize("framing", ["chunked", "eof"])
def test_truncated_eof_is_a_clean_end_without_message_stop(fu: FaultUpstream, framing: str) -> None:
    fu.push(truncated_eof(5, framing=framing))  # type: ignore[arg-type]
    raw = stream(fu.url)  # httpx sees a complete body: only the SSE is cut
    assert len(event_names(raw)) == 5 and b"message_stop" not in raw
    assert fu.wait_record(0).outcome == ("complete" if framing == "chunked" else "closed")


def test_truncated_eof_cut_mid_chunk_is_an_http_error(fu: FaultUpstream) -> None:
    fu.push(truncated_eof(3, framing="cut"))
    with pytest.raises(httpx.RemoteProtocolError):
        stream(fu.url)


# -- stream content faults ----------------------------------------------------------------------


def test_sse_error_after_events(fu: FaultUpstream) -> None:
    fu.push(sse_error("api_error", after=2, message="boom"))
    raw = stream(fu.url)
    assert event_names(raw) == ["message_start", "content_block_start", "error"]
    assert data_payloads(raw)[-1] == {
        "type": "error",
        "error": {"type": "api_error", "message": "boom"},
    }


def test_garbage_is_not_utf8_nor_json(fu: FaultUpstream) -> None:
    fu.push(garbage())
    raw = stream(fu.url)
    assert event_names(raw[: raw.index(b"\n\n")]) == ["message_start"]
    with pytest.raises(UnicodeDecodeError):
        raw.decode()
    with pytest.raises(ValueError):
        data_payloads(raw)
    assert b"message_stop" not in raw
    assert b'"text":"glued"}}\nevent: content_block_delta' in raw  # no blank line between


def test_huge_event_is_one_line_without_newline(fu: FaultUpstream) -> None:
    fu.push(huge_event(mb=3, chunk_kib=256))
    raw = stream(fu.url)
    last = raw[raw.rindex(b"\n") + 1 :]
    assert last.startswith(b'data: {"type":"content_block_delta"') and len(last) > 3 * 1024 * 1024


def test_huge_event_to_a_client_that_does_not_read_is_bounded_by_time(fu: FaultUpstream) -> None:
    fu.push(huge_event(mb=512, max_s=0.5))
    with connect(fu.url) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(raw_request(fu.url))
        record = fu.wait_record(0)
    assert record.outcome == "closed" and record.finished_at is not None
    assert record.finished_at - record.request_at < 1.0
    assert record.bytes_sent < 512 * 1024 * 1024


def test_infinite_streams_valid_deltas_until_max_s(fu: FaultUpstream) -> None:
    fu.push(infinite(interval=0.002, max_s=0.4))
    start = time.monotonic()
    got = bytearray()
    with (
        pytest.raises(httpx.RemoteProtocolError),  # closed mid chunked body: never "done"
        httpx.stream("POST", fu.url + "/v1/messages", json=STREAM_BODY) as resp,
    ):
        for chunk in resp.iter_bytes():
            got += chunk
    assert 0.35 < time.monotonic() - start < 1.5
    names = event_names(bytes(got))
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert set(names[3:]) == {"content_block_delta"} and len(names) > 20


def test_drip_sends_one_byte_at_a_time(fu: FaultUpstream) -> None:
    fu.push(drip(bytes_per_s=200, total_s=0.5), drip(bytes_per_s=20000, total_s=5, n=2))
    sizes: list[int] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", fu.url + "/v1/messages", json=STREAM_BODY) as resp,
    ):
        for chunk in resp.iter_raw():
            sizes.append(len(chunk))
    assert 60 <= sum(sizes) <= 110 and max(sizes) <= 8  # ~100 bytes dribbled in tiny reads
    raw = stream(fu.url)  # fast enough to finish: a complete, valid stream
    assert event_names(raw)[-1] == "message_stop"


def test_ping_only_then_finish_or_close(fu: FaultUpstream) -> None:
    fu.push(
        ping_only(seconds=0.5, interval=0.1), ping_only(seconds=0.2, interval=0.1, finish=False)
    )
    names = event_names(stream(fu.url))
    assert names[0] == "message_start" and names[1:5] == ["ping"] * 4
    assert names[-1] == "message_stop"
    with pytest.raises(httpx.RemoteProtocolError):
        stream(fu.url)


def test_unknown_event_sits_among_valid_events(fu: FaultUpstream) -> None:
    fu.push(unknown_event())
    names = event_names(stream(fu.url))
    assert names[:3] == ["message_start", "content_block_start", "future_thing"]
    assert names[-1] == "message_stop"


# -- bounds, shutdown, control ------------------------------------------------------------------


def test_hard_limit_ends_an_endless_stall() -> None:
    with fault_upstream(hard_limit_s=0.3) as fu, connect(fu.url) as sock:
        fu.push(stall_before_headers(math.inf))
        sock.sendall(raw_request(fu.url))
        assert read_until_closed(sock) == (b"", "fin")
        record = fu.wait_record(0)
    assert record.outcome == "timeout" and record.finished_at is not None
    assert record.finished_at - record.request_at < 1.0


def test_stop_closes_open_connections_and_joins_the_thread() -> None:
    start = time.monotonic()
    with fault_upstream() as fu:
        fu.push(stall_before_headers(30), infinite(interval=0.01, max_s=30))
        socks = [connect(fu.url), connect(fu.url)]
        for s in socks:
            s.sendall(raw_request(fu.url))
        fu.wait_for(lambda: fu.attempts == 2)
        idle = connect(fu.url)  # a keep-alive connection with no request
    assert time.monotonic() - start < 3
    assert fu.leftover_tasks == 0
    assert not any(t.name == "fault-upstream" for t in threading.enumerate())
    for s in [*socks, idle]:
        with s:
            assert read_until_closed(s)[1] in ("fin", "rst")  # the server closed it
    with pytest.raises(OSError):
        connect(fu.url, timeout=1).close()


def test_wait_for_times_out(fu: FaultUpstream) -> None:
    with pytest.raises(TimeoutError):
        fu.wait_for(lambda: fu.attempts > 0, timeout=0.1)


def test_every_scenario_survives_json() -> None:
    scenarios = [
        ok(n=2, interval=0.1, usage={"output_tokens": 9}, json=True),
        status(429, {"retry-after": "2"}, body=b"\xff raw"),
        reset_before_headers(),
        reset_after(3),
        stall_before_headers(1, then_ok=True),
        stall_after(2, 1, resume=True),
        drip(2, 3, n=1),
        garbage(),
        huge_event(8),
        infinite(0.1, 2),
        truncated_eof(4, framing="cut"),
        sse_error("api_error", after=1),
        ping_only(1, 0.2, finish=False),
        unknown_event(2, "x"),
        echo(),
    ]
    for s in scenarios:
        assert scenario_from_json(json.loads(json.dumps(s.to_json()))) == s
    assert scenario_from_json(529) == status(529)
    assert scenario_from_json("garbage") == garbage()


def test_process_mode_with_control_endpoint() -> None:
    with fault_upstream_process() as remote:
        remote.push(529, ok(n=2))
        raw = httpx.post(
            remote.url + "/_faults/push", json=[{"kind": "status", "code": 418}, "echo"]
        )
        assert raw.json() == {"queued": 4}
        with httpx.Client(base_url=remote.url) as client:
            codes = [client.post("/v1/messages", json=PLAIN_BODY).status_code for _ in range(5)]
        assert codes == [529, 200, 418, 200, 200]
        records = remote.records
        assert remote.attempts == 5
        assert [r.scenario for r in records] == ["status", "ok", "status", "echo", "ok"]
        assert json.loads(records[0].body) == PLAIN_BODY
        assert records[0].accepted_at <= time.monotonic()  # one clock across processes
        remote.set_default(status(503))
        assert httpx.post(remote.url + "/v1/messages").status_code == 503
        remote.reset()
        assert remote.attempts == 0 and remote.records == []
        assert httpx.post(remote.url + "/_faults/push", json=[{"kind": "nope"}]).status_code == 400
