"""The fault-injecting fake upstream (``tests/faults``) as its own process, for the soak benches.

``python benches/soak/fake.py --port P --stats FILE``

One scenario answers every request, chosen by a tag in the prompt (the only thing the proxy
forwards unchanged), so concurrent clients each get their own fault whatever order their
requests arrive in:

* ``stamped:<n>:<ms>``: a valid stream of ``n`` text deltas ``<ms>`` apart whose text is the
  fake's ``time.monotonic()`` when it wrote the event (``@123.456789@``): the client subtracts it
  from its own clock on arrival (CLOCK_MONOTONIC is one clock for every process on Linux), which
  is the latency the proxy adds per event (plus loopback and the client's own reading);
* ``soak:<kind>:<id>``: the soak mix (same kinds as ``tests/test_soak.py``): ``stream``,
  ``json``, ``retry_429``/``retry_529``/``retry_reset`` (the fault on the first attempt, then a
  good answer), ``reset_mid``, ``truncated``, ``cancel`` (a long stream the client leaves).

Every 2 s finished records are dropped (their outcomes counted) so a 30-minute run keeps the
fake's memory flat, and ``FILE`` is rewritten with JSON: attempts, exchanges open now, outcomes.
SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from faults import (
    Exchange,
    Scenario,
    ok,
    rate_limited,
    reset_after,
    reset_before_headers,
    status,
    truncated_eof,
    wire,
)
from faults.server import FaultServer, FaultState

_TAG = re.compile(rb"(stamped|soak):([a-z_0-9]+):(\d+)")
_attempts: Counter[str] = Counter()  # soak request id -> attempts (only the loop touches it)


@dataclass(frozen=True)
class Stamped(Scenario):
    kind: ClassVar[str] = "stamped"
    n: int = 20
    interval: float = 0.25

    async def run(self, ex: Exchange) -> None:
        events = wire.ok_events(ex.body_json, 0)
        await ex.sse_head()
        for raw in events[:3]:  # message_start, content_block_start, ping
            await ex.body(raw)
        for _ in range(self.n):
            await ex.sleep(self.interval)
            await ex.body(wire.delta_event(0, f"@{time.monotonic():.6f}@"))
        for raw in events[3:]:
            await ex.body(raw)
        await ex.end()

    def budget_s(self) -> float:
        return self.n * self.interval + 60.0


def soak_scenario(kind: str, attempt: int) -> Scenario:
    if kind == "json":
        return ok(n=10, interval=0.005)
    if kind == "retry_429" and attempt == 1:
        return rate_limited(retry_after=0)
    if kind == "retry_529" and attempt == 1:
        return status(529)
    if kind == "retry_reset" and attempt == 1:
        return reset_before_headers()
    if kind == "reset_mid":
        return reset_after(6, interval=0.01)
    if kind == "truncated":
        return truncated_eof(6)
    if kind == "cancel":
        return ok(n=100, interval=0.02)
    return ok(n=20, interval=0.01)


@dataclass(frozen=True)
class Router(Scenario):
    kind: ClassVar[str] = "bench_router"

    async def run(self, ex: Exchange) -> None:
        match = _TAG.search(ex.request.body)
        if match is None:
            await ok(n=2).run(ex)
            return
        family, a, b = (g.decode() for g in match.groups())
        if family == "stamped":
            await Stamped(int(a), int(b) / 1000).run(ex)
            return
        _attempts[b] += 1
        scenario = soak_scenario(a, _attempts[b])
        if a not in ("retry_429", "retry_529", "retry_reset") or _attempts[b] > 1:
            _attempts.pop(b, None)  # its last attempt: forget it (memory stays flat)
        await scenario.run(ex)


async def _housekeeping(state: FaultState, stats: Path | None, every: float = 2.0) -> None:
    outcomes: Counter[str] = Counter()
    while True:
        await asyncio.sleep(every)
        with state.cond:
            records = state._records
            keep = [r for r in records if r.finished_at is None]
            outcomes.update(str(r.outcome) for r in records if r.finished_at is not None)
            records[:] = keep
            payload = {
                "t": time.monotonic(),
                "attempts": state.attempts,
                "open_exchanges": len(keep),
                "outcomes": dict(outcomes),
            }
        if stats is not None:
            tmp = stats.with_suffix(".tmp")
            tmp.write_text(json.dumps(payload))
            os.replace(tmp, stats)


async def _main(args: argparse.Namespace) -> int:
    state = FaultState(Router())
    server = FaultServer(
        state, host="127.0.0.1", port=args.port, hard_limit_s=300.0, idle_timeout_s=60.0
    )
    port = await server.start()
    print(f"fake: listening on http://127.0.0.1:{port}", flush=True)
    keeper = asyncio.get_running_loop().create_task(
        _housekeeping(state, Path(args.stats) if args.stats else None)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    except asyncio.TimeoutError:
        print("fake: --max-seconds reached, stopping", flush=True)
    keeper.cancel()
    await server.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stats", help="JSON stats file, rewritten every 2 s")
    parser.add_argument("--max-seconds", type=float, default=3 * 3600, help="stop by itself")
    return asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
