"""The access log as a person meets it: ``ferrule serve`` prints its own banner, then one short
line per request (the default ``compact``), or JSON lines to a file (``access_log = <path>``), or
nothing (``off``); ``json`` keeps the full JSON line. Never a key in any of them."""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ferrule import accesslog
from ferrule.ledger import RequestRecord
from servers import TEST_KEY, MockUpstream, start_proxy

CHAT = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}
COMPACT = re.compile(
    r"^(\d\d:\d\d:\d\dZ) (\d{3}) (/v1/chat/completions) (claude-sonnet-4-6) in=(\d+) out=(\d+) "
    r"\$(\d+\.\d{4}) (\d+)ms (\S+)$"
)


def _chat(base: str) -> httpx.Response:
    r = httpx.post(
        base + "/v1/chat/completions",
        json=CHAT,
        headers={"authorization": f"Bearer {TEST_KEY}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r


def _wait_for(path: Path, needle: str, timeout: float = 10.0) -> str:
    """The file's text once it contains ``needle`` (the ledger writer logs in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        # a whole line: the handler may be half way through writing it
        if (needle in text and text.endswith("\n")) or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_serve_banner_then_one_compact_line_per_request(mock: MockUpstream, tmp_path: Path) -> None:
    log = tmp_path / "ferrule.log"
    data = tmp_path / "data"
    with start_proxy("python", mock.url, str(log), env={"FERRULE_DATA_DIR": str(data)}) as p:
        rid = _chat(p.url).headers["x-request-id"]
        text = _wait_for(log, rid)
    banner = text.split("\n\n")[0] if "\n\n" in text else text
    for row in (
        f"listening  {p.url}  (OpenAI SDKs: {p.url}/v1)",
        f"upstream   {mock.url}  (aiohttp engine)",
        "backend    python, 1 worker",
        f"data       {data}",
        "auth       no access key (loopback); callers send their own Anthropic key",
        f"ui         {p.url}/ui",
        "access log compact, on stderr",
    ):
        assert row in banner, text
    assert "Starting granian" not in text  # Granian's own start-up lines are not repeated
    access = [line for line in text.splitlines() if line.endswith(rid)]
    assert len(access) == 1, text
    m = COMPACT.match(access[0])
    assert m, access[0]
    assert int(m.group(5)) > 0 and int(m.group(6)) > 0 and float(m.group(7)) > 0
    assert len(access[0]) < 160  # one short line, not a ~900-character JSON object
    assert "{" not in text and TEST_KEY not in text


def test_access_log_to_a_file_is_json_lines(mock: MockUpstream, tmp_path: Path) -> None:
    log, target = tmp_path / "ferrule.log", tmp_path / "access.log"
    env = {"FERRULE_ACCESS_LOG": str(target)}
    with start_proxy("python", mock.url, str(log), env=env) as p:
        rid = _chat(p.url).headers["x-request-id"]
        rid2 = _chat(p.url).headers["x-request-id"]
        # the second line's id: the writer may write the two lines in two batches
        written = _wait_for(target, rid2)
    lines = [orjson.loads(line) for line in written.splitlines()]
    assert len(lines) == 2 and lines[0]["request_id"] == rid and lines[1]["request_id"] == rid2
    assert lines[0]["route"] == "/v1/chat/completions" and lines[0]["status"] == 200
    out = log.read_text(errors="replace")
    assert f"JSON lines appended to {target}" in out
    assert rid not in out  # the requests went to the file only
    assert TEST_KEY not in written + out


# -- in-process ---------------------------------------------------------------------------------


def rec(**kw: Any) -> RequestRecord:
    base: dict[str, Any] = {
        "request_id": "req_abc",
        "route": "/v1/chat/completions",
        "model": "claude-sonnet-4-6",
        "ts": 1764237600.25,  # 2025-11-27T10:00:00.250Z
        "tenant": "9f" * 32,
        "input_tokens": 1000,
        "output_tokens": 500,
        "cache_read_tokens": 12000,
        "latency_ms": 812.5,
    }
    base.update(kw)
    return RequestRecord(**base)


@pytest.fixture
def reset_access() -> Iterator[None]:
    yield
    logger = logging.getLogger(accesslog.LOGGER)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.setLevel(logging.NOTSET)


def test_compact_line_fields(reset_access: None) -> None:
    buf = io.StringIO()
    accesslog.configure("info", buf, mode="compact")
    accesslog.log_batch([(rec(), None)])  # the server's path: one write per batch
    accesslog.log_request(
        rec(request_id="req_def", status=503, outcome="upstream_error", error_type="overloaded")
    )  # the logging path
    first, second = buf.getvalue().splitlines()
    assert first == (
        "10:00:00Z 200 /v1/chat/completions claude-sonnet-4-6 in=1.0k cached=12k out=500 $? "
        "812ms req_abc"
    )
    assert second.startswith("10:00:00Z 503 /v1/chat/completions claude-sonnet-4-6 ")
    assert second.endswith(" upstream_error:overloaded req_def")
    assert "9f9f" not in buf.getvalue()  # not even the key's hash


def test_off_writes_nothing_and_json_keeps_every_field(reset_access: None) -> None:
    buf = io.StringIO()
    accesslog.configure("info", buf, mode="off")
    accesslog.log_batch([(rec(), None)])
    accesslog.log_request(rec(status=502, outcome="upstream_error"))
    assert buf.getvalue() == ""
    accesslog.configure("info", buf, mode="json")
    accesslog.log_batch([(rec(), None)])
    (line,) = [orjson.loads(x) for x in buf.getvalue().splitlines()]
    assert {"ts", "request_id", "tenant", *accesslog.FIELDS} <= set(line)


def test_compact_record_is_the_compact_line_of_the_record() -> None:
    """The writer thread's direct formatting equals ``compact_line(line(...))`` for records of
    every shape: cache reads and writes, hits, failures, retries, unpriced and priced."""
    import itertools

    from ferrule.ledger.recorder import account

    shapes = itertools.product(
        ({}, {"cache_read_tokens": 0}, {"cache_write_5m_tokens": 9, "cache_write_1h_tokens": 2_000_000}),
        ({}, {"cache_status": "hit"}, {"status": 502, "outcome": "upstream_error", "error_type": "overloaded_error"},
         {"status": 499, "outcome": "client_cancelled"}, {"outcome": "truncated", "attempts": 3}),
        ({}, {"model": ""}, {"model": "claude-opus-4-1", "latency_ms": 0.4, "ts": 1764237600.9996}),
    )  # fmt: skip
    seen = 0
    for a, b, c in shapes:
        record = rec(**a, **b, **c)
        for acct in (None, account(record)):
            assert accesslog.compact_record(record, acct) == accesslog.compact_line(
                accesslog.line(record, acct)
            ), (a, b, c, acct)
            seen += 1
    assert seen == 90
