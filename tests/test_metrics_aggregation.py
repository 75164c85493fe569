"""Accounting off the request path (issue 12): per-worker counts in plain Python objects,
snapshot files merged at scrape time, and pricing, metrics and the access log done by the
ledger writer's thread in batches. The figures themselves must be exactly what they were."""

from __future__ import annotations

import io
import logging
import os
import random
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import mmap_dict

from ferrule import accesslog, metrics
from ferrule.ledger import LedgerWriter, Recorder, RequestRecord, ledger_path
from ferrule.ledger import writer as writer_mod
from ferrule.metrics import Metrics

CHAT = "/v1/chat/completions"


def rec(i: int = 0, **kw: Any) -> RequestRecord:
    base: dict[str, Any] = {
        "request_id": f"req_{i}",
        "route": CHAT,
        "model": "claude-sonnet-4-6-20260101",
        "ts": 1764237600.25 + i,
        "tenant": "9f" * 32,
        "input_tokens": 1000 + i,
        "cache_write_5m_tokens": 200,
        "cache_read_tokens": 10000,
        "output_tokens": 500,
        "compression_removed_tokens": 40,
        "latency_ms": 812.5 + i,
        "ttfb_ms": 120.0,
        "backend": "rust",
        "cache_status": "miss",
    }
    base.update(kw)
    return RequestRecord(**base)


# A mix: plain, streamed, a response-cache hit, an upstream failure with retries, an unpriced
# model, a cancelled stream, a 4xx.
def mixed(n: int) -> list[RequestRecord]:
    out = []
    for i in range(n):
        kind = i % 7
        if kind == 1:
            out.append(rec(i, stream=True, ttfb_ms=30.0 + i))
        elif kind == 2:
            out.append(rec(i, cache_status="hit", attempts=0))
        elif kind == 3:
            out.append(
                rec(i, status=529, outcome="upstream_error", error_type="overloaded_error",
                    attempts=3, route="/v1/messages", ttfb_ms=None)
            )  # fmt: skip
        elif kind == 4:
            out.append(rec(i, model="mystery-model", cache_status="bypass"))
        elif kind == 5:
            out.append(rec(i, stream=True, outcome="client_cancelled", status=499))
        elif kind == 6:
            out.append(rec(i, status=404, outcome="error", error_type="not_found_error"))
        else:
            out.append(rec(i))
    return out


@pytest.fixture
def access() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    accesslog.configure("info", buf)
    yield buf
    logger = logging.getLogger(accesslog.LOGGER)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.filters.clear()


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in buf.getvalue().splitlines()]


def without_time(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def wait_for(probe: Any, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- metrics: no file write per request -----------------------------------------------------------


def test_no_file_write_per_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes = [0]
    real = mmap_dict.MmapedDict.write_value

    def counting(self: Any, *a: Any) -> None:
        writes[0] += 1
        real(self, *a)

    monkeypatch.setattr(mmap_dict.MmapedDict, "write_value", counting)
    m = Metrics(multiprocess_dir=str(tmp_path), flush_interval=3600)
    try:
        before = writes[0]
        for r in mixed(140):
            m.observe_request(r)
        assert writes[0] == before  # counting touched no file
        m.flush()
        first = writes[0] - before
        assert 0 < first < 140 * 10
        # the same mix again: a snapshot writes each changed value once, whatever the traffic
        for r in mixed(700):
            m.observe_request(r)
        before = writes[0]
        m.flush()
        assert 0 < writes[0] - before <= first
        m.flush()  # nothing changed: nothing written
        assert writes[0] - before <= first
    finally:
        m.close()


def test_snapshot_thread_and_scrape_make_values_visible(tmp_path: Path) -> None:
    d = str(tmp_path)
    m = Metrics(multiprocess_dir=d, flush_interval=0.05)
    try:
        m.observe_request(rec())
        # another worker sees it once the snapshot thread wrote it
        wait_for(
            lambda: b'ferrule_requests_total{model="claude-sonnet-4-6"' in metrics.render_dir(d),
            "the snapshot thread",
        )
    finally:
        m.close()
    slow = Metrics(multiprocess_dir=str(tmp_path / "slow"), flush_interval=3600)
    try:
        slow.observe_request(rec())
        assert b"ferrule_requests_total{" not in metrics.render_dir(str(tmp_path / "slow"))
        # the scraping worker's own values are current: render() writes them first
        assert b"ferrule_requests_total{" in slow.render()[0]
    finally:
        slow.close()


def test_a_failed_snapshot_write_still_renders_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    earlier = Metrics(multiprocess_dir=str(tmp_path), flush_interval=3600)
    earlier.observe_request(rec())
    earlier.close()  # its snapshot is in the folder
    m = Metrics(multiprocess_dir=str(tmp_path), flush_interval=3600)
    try:
        m.observe_request(rec())

        def full(self: Any, *a: Any) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(mmap_dict.MmapedDict, "write_value", full)
        with caplog.at_level(logging.ERROR, logger="ferrule.metrics"):
            body = m.render()[0]  # no exception: the scrape still answers
        assert b'status_class="2xx"} 1.0' in body  # what the folder holds
        assert any("No space left" in r.getMessage() or r.exc_info for r in caplog.records)
    finally:
        monkeypatch.undo()
        m.close()


def test_file_and_in_process_expositions_agree(tmp_path: Path) -> None:
    records = mixed(77)
    local = Metrics(tenant_label=True)
    shared = Metrics(tenant_label=True, multiprocess_dir=str(tmp_path), flush_interval=3600)
    try:
        for m in (local, shared):
            m.observe_batch([(r, None) for r in records])
            m.stream_opened()
            m.set_upstream_pool(4, 64)
            m.ledger_dropped("queue_full", 2)
        a, b = parse(local.render()[0]), parse(shared.render()[0])
        assert a.keys() == b.keys()
        for key, v in a.items():
            assert b[key] == pytest.approx(v, rel=1e-12), key
    finally:
        shared.close()


_REFERENCE = textwrap.dedent(
    """
    # prometheus_client's own multiprocess mode, as Ferrule used it before: the reference
    import json, sys
    from prometheus_client import Counter, Gauge, Histogram
    spec = json.loads(sys.argv[1])
    made = {}
    for name, kind, help, labels, bounds in spec["families"]:
        if kind == "counter":
            made[name] = Counter(name, help, labels)
        elif kind == "histogram":
            made[name] = Histogram(name, help, labels, buckets=bounds)
        else:
            made[name] = Gauge(name, help, multiprocess_mode="livesum")
    for name, labels, op, value in spec["ops"]:
        metric = made[name].labels(*labels) if labels else made[name]
        getattr(metric, op)(value)
    print("done", flush=True)
    sys.stdin.readline()
    """
)


def test_files_merge_exactly_like_prometheus_client_multiprocess(tmp_path: Path) -> None:
    """The snapshot files are prometheus_client's format: the merged exposition is byte for
    byte what its own multiprocess mode gives for the same increments (names, help, types,
    label and bucket spellings)."""
    mine, ref = tmp_path / "mine", tmp_path / "ref"
    mine.mkdir()
    ref.mkdir()
    m = Metrics(multiprocess_dir=str(mine), flush_interval=3600)
    try:
        records = [rec(0), rec(1, latency_ms=0.0), rec(2, latency_ms=25.0), rec(3, stream=True)]
        records.append(rec(4, latency_ms=10_000_000))  # beyond the last finite bucket
        for r in records:
            r.cache_write_5m_tokens = 0  # no write premium: that counter stays at 0
        ops: list[tuple[str, list[str], str, float]] = []
        for r in records:
            m.observe_request(r)
            stream = "true" if r.stream else "false"
            ops.append(("ferrule_requests", [CHAT, "claude-sonnet-4-6", "2xx"], "inc", 1))
            ops.append(("ferrule_request_duration_seconds", [CHAT, stream], "observe",
                        r.latency_ms / 1000))  # fmt: skip
        m.stream_opened()
        m.stream_opened()
        ops += [("ferrule_open_streams", [], "inc", 1)] * 2
        fams = [m.requests, m.latency.family, m._open_streams_family, m.write_premium]
        spec = {
            "families": [
                [f.name, f.kind, f.help, list(f.labelnames), [repr(b) for b in f.bounds]]
                for f in fams
            ],
            "ops": ops,
        }
        env = {**os.environ, metrics.ENV: str(ref)}
        proc = subprocess.Popen(
            [sys.executable, "-c", _REFERENCE, orjson.dumps(spec).decode()],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "done"
            expected = metrics.render_dir(str(ref))
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)
        m.flush()
        got = metrics.render_dir(str(mine))
        names = {f.name for f in fams}
        keep = [
            block for block in _blocks(got) if block[0].split()[2].removesuffix("_total") in names
        ]
        assert keep == _blocks(expected)
    finally:
        m.close()


def _blocks(text: bytes) -> list[list[str]]:
    """The exposition's metric families, each as its lines (HELP, TYPE, sorted samples)."""
    out: list[list[str]] = []
    for ln in text.decode().splitlines():
        if ln.startswith("# HELP"):
            out.append([ln])
        else:
            out[-1].append(ln)
    return sorted([b[:2] + sorted(b[2:]) for b in out])


def parse(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(text.decode())
        for s in f.samples
    }


# -- the ledger writer: batches, an observer, sync -----------------------------------------------


def test_writer_hands_batches_to_the_observer_before_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[list[Any]] = []
    real_open = writer_mod.open_db

    def slow_open(path: Any, **kw: Any) -> sqlite3.Connection:
        time.sleep(1.5)  # a slow disk: the counts and the log must not wait for it
        return real_open(path, **kw)

    monkeypatch.setattr(writer_mod, "open_db", slow_open)
    w = LedgerWriter(ledger_path(tmp_path), batch_size=500, flush_interval=60)
    w.observe(batches.append)
    try:
        for i in range(150):
            assert w.submit(rec(i))
        time.sleep(0.2)
        assert batches == []  # no wake-up per record: they wait for the clock or a full batch
        started = time.monotonic()
        assert w.sync(timeout=10)
        assert time.monotonic() - started < 1.2  # did not wait for the disk
        assert [len(b) for b in batches] == [150]  # one batch
        record, acct = batches[0][0]
        assert record.request_id == "req_0" and acct is not None and acct.cost is not None
        assert w.flush(timeout=10) and w.stats.written == 150
    finally:
        w.close()


def _switches(tid: int) -> int:
    status = Path(f"/proc/self/task/{tid}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_submit_does_not_wake_the_writer_per_record(tmp_path: Path) -> None:
    """A queue.Queue woke the writer thread on every put: a thread switch per request."""
    w = LedgerWriter(ledger_path(tmp_path), batch_size=50, flush_interval=60)
    try:
        assert w.flush()  # the thread is up and waiting
        tid = w._thread.native_id
        assert tid is not None
        before = _switches(tid)
        for i in range(40):  # requests arriving one by one, fewer than a batch
            w.submit(rec(i))
            time.sleep(0.002)
        assert _switches(tid) - before <= 3  # (the old writer: about 40)
        for i in range(40, 120):
            w.submit(rec(i))
        # a full batch does wake it: two full batches go at once, the other 20 wait for the
        # clock (or a flush)
        wait_for(lambda: w.stats.written == 100, "two full batches", timeout=10)
        time.sleep(0.2)
        assert w.stats.written == 100 and w.stats.queued == 20
    finally:
        w.close()
    assert w.stats.written == 120


# -- the recorder: deferred equals inline ---------------------------------------------------------


def test_deferred_recording_gives_the_same_metrics_log_and_rows(
    tmp_path: Path, access: io.StringIO
) -> None:
    records = mixed(63)
    inline_m, inline_w = Metrics(), LedgerWriter(ledger_path(tmp_path / "a"), flush_interval=60)
    inline = Recorder(inline_w, inline_m)
    for r in records:
        assert inline.record(r) is not None  # inline: priced here
    inline_w.close()
    inline_lines = lines(access)
    access.truncate(0)
    access.seek(0)

    deferred_m = Metrics()
    deferred_w = LedgerWriter(ledger_path(tmp_path / "b"), flush_interval=60)
    deferred = Recorder(deferred_w, deferred_m, defer=True)
    for r in records:
        assert deferred.record(r) is None  # only queued
    assert lines(access) == [] and b"ferrule_requests_total{" not in deferred_m.render()[0]
    assert deferred.sync(timeout=10)
    deferred_w.close()

    assert without_time(lines(access)) == without_time(inline_lines)
    assert len(inline_lines) == len(records)
    assert parse(deferred_m.render()[0]) == parse(inline_m.render()[0])

    def rows(path: Path) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(path)
        try:
            return conn.execute("SELECT * FROM requests ORDER BY request_id").fetchall()
        finally:
            conn.close()

    a, b = rows(ledger_path(tmp_path / "a")), rows(ledger_path(tmp_path / "b"))
    assert len(a) == len(records) and a == b


def test_a_record_the_writer_cannot_take_is_still_counted_and_logged(
    tmp_path: Path, access: io.StringIO
) -> None:
    m = Metrics()
    w = LedgerWriter(ledger_path(tmp_path), max_queue=0, on_drop=m.ledger_dropped)
    recorder = Recorder(w, m, defer=True)
    try:
        assert recorder.record(rec()) is not None  # priced inline: the queue had no room
        body = m.render()[0]
        assert b'ferrule_ledger_dropped_total{reason="queue_full"} 1.0' in body
        assert b'ferrule_requests_total{model="claude-sonnet-4-6"' in body
        assert [x["request_id"] for x in lines(access)] == ["req_0"]
    finally:
        w.close()
    recorder.record(rec(1))  # closed: the same
    assert b'ferrule_ledger_dropped_total{reason="closed"} 1.0' in m.render()[0]
    assert len(lines(access)) == 2


# -- the access log in batches ---------------------------------------------------------------------


def test_batch_lines_equal_logging_lines(access: io.StringIO) -> None:
    items = [(r, None) for r in mixed(21)]
    accesslog.log_batch(items)  # the direct path: one write
    direct = lines(access)
    access.truncate(0)
    access.seek(0)
    logger = logging.getLogger(accesslog.LOGGER)
    logger.addFilter(lambda record: True)  # anything in the way: each line through logging
    accesslog.log_batch(items)
    through_logging = lines(access)
    assert len(direct) == 21 and without_time(direct) == without_time(through_logging)
    assert {x["level"] for x in direct} == {"info", "warning"}
    assert set(direct[0]) == {"time", "level", "logger", "ts", *accesslog.FIELDS}


def test_batch_honours_the_level() -> None:
    buf = io.StringIO()
    accesslog.configure("warning", buf)
    try:
        accesslog.log_batch([(rec(1), None), (rec(2, status=502, outcome="upstream_error"), None)])
        assert [x["request_id"] for x in lines(buf)] == ["req_2"]
        accesslog.configure("error", buf)
        accesslog.log_batch([(rec(3, status=502, outcome="upstream_error"), None)])
        assert len(lines(buf)) == 1
    finally:
        logger = logging.getLogger(accesslog.LOGGER)
        for h in list(logger.handlers):
            logger.removeHandler(h)


def test_fast_timestamp_equals_datetime() -> None:
    rng = random.Random(12)
    stamps = [0.0, 0.0005, 0.9995, 0.9999994, 0.9999995, 0.9999996, 1764237599.9999996]
    stamps += [1764237600.25, 1764237600.0004999, 1764237600.0005, 4102444799.9995]
    stamps += [rng.uniform(0, 4_102_444_800) for _ in range(20_000)]
    stamps += [1764237600 + rng.random() for _ in range(20_000)]
    stamps += [1764237600 + k / 1000 + 0.0000005 for k in range(2000)]
    for ts in stamps:
        assert accesslog._iso(ts) == accesslog._iso_datetime(ts), repr(ts)
