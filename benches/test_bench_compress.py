"""Compression benchmarks: native and pure-Python side by side on the synthetic corpus.

Run with ``make bench`` (or ``pytest benches/test_bench_compress.py --benchmark-only``). Groups:

- ``compress corpus <mode>``: ``compress_request`` on the last request of each of the 12 sessions
  of ``ferrule.corpus.corpus()`` (2.0 MB of block text); ``MB/s`` is block text per second;
- ``compress 200KB <mode>``: ``compress_request`` on one 200 KB request, the latency it adds
  (``off`` walks the request without compressing: the policy layer's own cost);
- ``count tokens 200KB``: counting that request's tokens (cold: nothing memoized).

Every round gets a fresh copy of the request (``compress_request`` works in place, and fresh
strings carry no cached hash, as after ``orjson.loads``); the copy is not timed.
"""

from __future__ import annotations

import copy
from types import ModuleType
from typing import Any

import orjson
import pytest

from ferrule import _pure, backend, corpus, tokens
from ferrule.compression import compress_request

try:
    from ferrule import _native
except ImportError as exc:  # pragma: no cover - depends on the build
    _native = None
    NATIVE_MISSING = f"native extension not built: {exc}"

MODES = ("off", "lossless", "aggressive")


@pytest.fixture(params=["rust", "python"])
def kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Same ids as tests/conftest.py's fixture; compress_request uses this backend."""
    if request.param == "python":
        mod: ModuleType = _pure
    elif _native is None:
        pytest.skip(NATIVE_MISSING)
    else:
        mod = _native
    monkeypatch.setattr(backend, "Compressor", mod.Compressor)
    return mod


def fresh(body: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(body))  # type: ignore[no-any-return]


def block_bytes(body: dict[str, Any]) -> int:
    size = 0
    for message in body["messages"]:
        if message["role"] != "user":
            continue
        content = message["content"]
        if isinstance(content, str):
            size += len(content.encode())
            continue
        for block in content:
            text = block.get("content") if block["type"] == "tool_result" else block.get("text")
            if isinstance(text, str):
                size += len(text.encode())
    return size


CORPUS = [s.requests()[-1] for s in corpus.corpus()]
CORPUS_BYTES = sum(map(block_bytes, CORPUS))


def request_of_size(size: int) -> dict[str, Any]:
    """The first request of the synthetic sessions (30 turns each) at least ``size`` bytes long."""
    for seed in range(100):
        for body in corpus.session(seed, turns=30).requests():
            if len(orjson.dumps(body)) >= size:
                return body
    raise AssertionError("no request that large")


BIG = request_of_size(200_000)


def _throughput(benchmark: Any, size: int) -> None:
    if benchmark.stats is None:  # --benchmark-disable: the functions ran once, untimed
        return
    benchmark.extra_info["MB/s"] = round(size / benchmark.stats.stats.mean / 1e6, 1)


@pytest.mark.parametrize("mode", MODES)
def test_corpus(benchmark: Any, kernels: ModuleType, mode: str) -> None:
    def run(bodies: list[dict[str, Any]]) -> int:
        return sum(compress_request(body, mode).bytes_saved for body in bodies)

    benchmark.group = f"compress corpus {mode}"
    benchmark.pedantic(run, setup=lambda: (([fresh(b) for b in CORPUS],), {}), rounds=10)
    _throughput(benchmark, CORPUS_BYTES)


@pytest.mark.parametrize("mode", MODES)
def test_200kb(benchmark: Any, kernels: ModuleType, mode: str) -> None:
    benchmark.group = f"compress 200KB {mode}"
    benchmark.pedantic(
        lambda body: compress_request(body, mode), setup=lambda: ((fresh(BIG),), {}), rounds=200
    )
    benchmark.extra_info["request bytes"] = len(orjson.dumps(BIG))
    _throughput(benchmark, block_bytes(BIG))


def test_count_tokens_200kb(benchmark: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens.load()
    monkeypatch.setattr(tokens, "MEMO_CHARS", 0)  # cold: every text is tokenized

    def run(body: dict[str, Any]) -> int:
        return compress_request(body, "off").tokens_before

    benchmark.group = "count tokens 200KB"
    benchmark.pedantic(run, setup=lambda: ((copy.deepcopy(BIG),), {}), rounds=10)
    _throughput(benchmark, len(orjson.dumps(BIG)))
