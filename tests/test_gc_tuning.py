"""A worker collects its youngest generation less often than Python's default (``ferrule.app``):
set at lifespan startup, never lowered, left off when something turned collection off."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferrule.app import GC_YOUNG_THRESHOLD, App
from ferrule.config import Config


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def _start(app: App) -> None:
    async def main() -> None:
        sent: list[dict[str, Any]] = []
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def receive() -> dict[str, Any]:
            return next(messages)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app({"type": "lifespan"}, receive, send)
        assert [m["type"] for m in sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]

    asyncio.run(main())


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ((700, 10, 10), (GC_YOUNG_THRESHOLD, 10, 10)),
        ((50_000, 5, 7), (50_000, 5, 7)),
        ((0, 10, 10), (0, 10, 10)),
    ],
)
def test_worker_startup_raises_the_young_threshold(
    tmp_path: Path, thresholds: None, before: tuple[int, int, int], after: tuple[int, int, int]
) -> None:
    gc.set_threshold(*before)
    _start(App(Config(data_dir=str(tmp_path))))
    assert gc.get_threshold() == after
