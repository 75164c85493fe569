"""Compression benchmarks: native and pure-Python side by side on the synthetic corpus.

Run with ``make bench`` (or ``pytest benches/test_bench_compress.py --benchmark-only``). Groups:

- ``kernel corpus <mode>``: ``Compressor.compress`` on every user block of the last request of
  each of the 12 sessions of ``ferrule.corpus.corpus()`` (266 blocks, 1.3 MB of text), in request
  order, with the kinds the policy layer gives them; ``MB/s`` is block text per second;
- ``request corpus <mode>``: ``compress_request`` on those 12 requests (the policy layer too);
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
from ferrule.compression import compress_request, tool_kind

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


def corpus_blocks() -> list[tuple[str, str]]:
    """(text, kind) of every user block of CORPUS, as compress_request hands them over."""
    out = []
    for body in CORPUS:
        kinds = {}
        for message in body["messages"]:
            content = message["content"]
            if message["role"] == "assistant":
                for b in content:
                    if b["type"] == "tool_use":
                        kinds[b["id"]] = tool_kind(b["name"], b["input"])
            elif isinstance(content, str):
                out.append((content, "text"))
            else:
                for b in content:
                    if b["type"] == "tool_result":
                        out.append((b["content"], kinds[b["tool_use_id"]]))
                    elif b["type"] == "text":
                        out.append((b["text"], "text"))
    return out


BLOCKS = corpus_blocks()


@pytest.mark.parametrize("mode", MODES)
def test_kernel_corpus(benchmark: Any, kernels: ModuleType, mode: str) -> None:
    def run(blocks: list[tuple[str, str]]) -> int:
        c = kernels.Compressor(mode)
        return sum(
            len(c.compress(text, kind, f"message {i}")) for i, (text, kind) in enumerate(blocks)
        )

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return ([((text + ".")[:-1], kind) for text, kind in BLOCKS],), {}  # fresh strings

    benchmark.group = f"kernel corpus {mode}"
    benchmark.pedantic(run, setup=setup, rounds=30)
    _throughput(benchmark, CORPUS_BYTES)


@pytest.mark.parametrize("mode", MODES)
def test_request_corpus(benchmark: Any, kernels: ModuleType, mode: str) -> None:
    def run(bodies: list[dict[str, Any]]) -> int:
        return sum(compress_request(body, mode).changed for body in bodies)

    benchmark.group = f"request corpus {mode}"
    benchmark.pedantic(run, setup=lambda: (([fresh(b) for b in CORPUS],), {}), rounds=30)
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
