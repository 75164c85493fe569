"""Kernel micro-benchmarks: native and pure-Python side by side on the same corpus.

Run with ``make bench``. Each group holds the two backends for one corpus and chunking; the
extra info carries throughput (MB/s of upstream SSE and events/s) for benches/RESULTS.md.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from ferrule import _pure
from stream_corpus import CHUNKINGS, CORPORA, chunks, corpus, event_count

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
