"""Kernel micro-benchmarks: native and pure-Python side by side on the same corpus.

Run with ``make bench``. Each group holds the two backends for one corpus and chunking; the
extra info carries throughput (MB/s of upstream SSE and events/s) for benches/RESULTS.md.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from ferrule import _pure
from ferrule.seal import Sealer
from ferrule.translate.responses_request import to_anthropic
from stream_corpus import CHUNKINGS, CORPORA, agent_turn, chunks, corpus, event_count

try:
    from ferrule import _native
except ImportError as exc:  # pragma: no cover - depends on the build
    _native = None
    NATIVE_MISSING = f"native extension not built: {exc}"


@pytest.fixture(params=["rust", "python"])
def kernels(request: pytest.FixtureRequest) -> ModuleType:
    """Same ids as tests/conftest.py's fixture; the native run is skipped when not built."""
    if request.param == "python":
        return _pure
    if _native is None:
        pytest.skip(NATIVE_MISSING)
    return _native


def _throughput(benchmark: Any, name: str) -> None:
    if benchmark.stats is None:  # --benchmark-disable: the functions ran once, untimed
        return
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["MB/s"] = round(len(corpus(name)) / mean / 1e6, 1)
    benchmark.extra_info["events/s"] = round(event_count(name) / mean)


@pytest.mark.parametrize("chunking", CHUNKINGS)
@pytest.mark.parametrize("name", CORPORA)
def test_translate(benchmark: Any, kernels: ModuleType, name: str, chunking: str) -> None:
    pieces = chunks(name, chunking)

    def run() -> int:
        t = kernels.StreamTranslator("claude-sonnet-4-5", 1_700_000_000, include_usage=True)
        size = sum(len(t.feed(piece)) for piece in pieces)
        t.finish()
        assert t.outcome == "complete"
        return size

    benchmark.group = f"translate {name} {chunking}"
    benchmark(run)
    _throughput(benchmark, name)


@pytest.mark.parametrize("name", CORPORA)
def test_decode(benchmark: Any, kernels: ModuleType, name: str) -> None:
    pieces = chunks(name, "4k")

    def run() -> int:
        decoder = kernels.SseDecoder()
        return sum(len(decoder.feed(piece)) for piece in pieces)

    benchmark.group = f"decode {name} 4k"
    assert benchmark(run) == event_count(name)
    _throughput(benchmark, name)


# A Responses request as Codex sends it: a function tool, a custom tool, summaries asked.
RESPONSES_TR = to_anthropic(
    {
        "model": "claude-sonnet-4-6",
        "input": "fix the bug",
        "instructions": "You are a coding agent.",
        "reasoning": {"effort": "medium", "summary": "auto"},
        "tools": [
            {
                "type": "function",
                "name": "edit_file",
                "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
            },
            {"type": "custom", "name": "apply_patch", "description": "Apply a patch."},
        ],
        "stream": True,
    },
    aliases={},
    version="2023-06-01",
    sealer=Sealer(["bench"]),
    tenant="bench",
)
RESPONSES_INPUTS = {
    "agent56 per-event": agent_turn(),
    "tools 4k": chunks("tools", "4k"),
    "text 4k": chunks("text", "4k"),
}


@pytest.mark.parametrize("name", RESPONSES_INPUTS)
def test_responses_encode(benchmark: Any, kernels: ModuleType, name: str) -> None:
    """The Responses stream re-encoder, with the real (AES-GCM) sealer the route uses."""
    pieces = RESPONSES_INPUTS[name]
    sealer = Sealer(["bench"])

    def run() -> int:
        enc = kernels.ResponsesStreamEncoder(
            RESPONSES_TR, response_id="resp_bench", created_at=1, sealer=sealer, tenant="t"
        )
        size = sum(len(enc.feed(piece)) for piece in pieces)
        enc.finish()
        assert enc.outcome == "complete"
        return size

    benchmark.group = f"responses {name}"
    benchmark(run)
    if benchmark.stats is not None:
        mean = benchmark.stats.stats.mean
        benchmark.extra_info["MB/s"] = round(sum(map(len, pieces)) / mean / 1e6, 1)
        benchmark.extra_info["streams/s"] = round(1 / mean)


def _chat_bodies() -> dict[str, bytes]:
    """The load benchmark's 2 KB request and its ~100 KB coding-agent turn (tools, tool calls,
    file views, shell output with ANSI colours)."""
    from load import bodies  # benches/load: on the path as the other corpora are

    return {"2k": bodies.small(False), "100k": bodies.large(False)}


@pytest.mark.parametrize("size", ["2k", "100k"])
def test_chat_request(benchmark: Any, kernels: ModuleType, size: str) -> None:
    """The chat route's request path in one call: body bytes to upstream bytes (translated,
    compressed losslessly, with breakpoints). The Python twin is the stages one by one."""
    from ferrule.compress_walk import FILE_TOOLS
    from ferrule.translate.request import model_facts

    raw = _chat_bodies()[size]
    requests = kernels.ChatRequests(
        model_facts({}),
        aliases={},
        version="2023-06-01",
        strict=False,
        ttl="5m",
        file_tools=FILE_TOOLS,
    )
    assert requests.prepare(raw, "lossless") is not None
    benchmark.group = f"chat request {size}"
    benchmark(requests.prepare, raw, "lossless")
    benchmark.extra_info["bytes"] = len(raw)


@pytest.mark.parametrize("size", ["2k", "100k"])
def test_chat_request_stages(benchmark: Any, size: str) -> None:
    """What the request path costs without it: the Python stages one by one with the backend's
    compression kernel (native when built), as the server ran them before."""
    import orjson

    from ferrule.breakpoints import place_breakpoints_json
    from ferrule.compression import compress_request
    from ferrule.translate.request import to_anthropic as chat_to_anthropic

    raw = _chat_bodies()[size]

    def run() -> bytes:
        body = chat_to_anthropic(orjson.loads(raw), aliases={}, version="2023-06-01").body
        compress_request(body, "lossless")
        return place_breakpoints_json(body, ttl="5m") or orjson.dumps(body)

    benchmark.group = f"chat request {size}"
    benchmark(run)
