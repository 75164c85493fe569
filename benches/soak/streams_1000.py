"""1,000 concurrent streams through one Ferrule worker (row C1 of reliability.md).

``.venv/bin/python benches/soak/streams_1000.py [--streams 1000] [--events 20] [--interval-ms 250]``

The fake upstream (``fake.py``, its own process) paces each stream: ``--events`` text deltas
``--interval-ms`` apart, each carrying the fake's monotonic clock when it was written. The client
(one asyncio process, aiohttp) opens the streams over ``--ramp-s`` seconds and, for every event,
takes its own clock minus the stamp: the latency added between the upstream's write and the
client's read (proxy, loopback, and the client's own scheduling: everything shares 2 cores).

Reported: completion (streams ending in ``[DONE]`` with every event), time to first byte, p50/p99/
max per-event latency, the proxy worker's peak RSS, RSS per open stream ((peak - idle) / peak open
streams), fds and threads at the peak, 2 s after and ``--settle-s`` (65) s after (the pool's idle
connections are closed 30-60 s after their last use), and its CPU time per event. ``--direct``
sends the same streams straight to the fake (no proxy): the harness's own latency on this
machine, to compare with. Everything is bounded (``--timeout-s``) and every process it starts is
stopped by PID. JSON in ``benches/soak/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    KEY,
    RESULTS,
    MiB,
    Probe,
    fake_upstream,
    machine,
    native_built,
    other_load,
    percentile,
    probe,
    proxy,
    read_stats,
    worker_of,
)

_STAMP = re.compile(rb"@(\d+\.\d+)@")


@dataclass
class StreamResult:
    ok: bool = False
    status: int = 0
    events: int = 0
    ttfb: float | None = None
    error: str | None = None
    latencies: list[float] = field(default_factory=list)


async def one_stream(
    session: aiohttp.ClientSession, url: str, i: int, delay: float, n: int, ms: int
) -> StreamResult:
    await asyncio.sleep(delay)
    res = StreamResult()
    body = {
        "model": "claude-sonnet-4-6",
        "messages": [{"role": "user", "content": f"stamped:{n}:{ms} stream {i}"}],
        "stream": True,
    }
    t0 = time.monotonic()
    try:
        async with session.post(url, json=body, headers={"authorization": f"Bearer {KEY}"}) as resp:
            res.status = resp.status
            done = False
            async for line in resp.content:
                now = time.monotonic()
                if res.ttfb is None:
                    res.ttfb = now - t0
                m = _STAMP.search(line)
                if m:
                    res.latencies.append(now - float(m.group(1)))
                    res.events += 1
                elif line.startswith((b"data: [DONE]", b"event: message_stop")):
                    done = True  # the OpenAI stream's end, or the Anthropic one (--direct)
            res.ok = resp.status == 200 and done and res.events == n
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"[:200]
    return res


class Sampler(threading.Thread):
    def __init__(self, proc: object, proxy_port: int, upstream_port: int, every: float) -> None:
        super().__init__(daemon=True)
        self.args = (proc, proxy_port, upstream_port)
        self.every = every
        self.samples: list[tuple[float, Probe]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.samples.append((time.monotonic(), probe(*self.args)))  # type: ignore[arg-type]
            except Exception:  # the worker may be gone at the very end
                return
            self.stop_event.wait(self.every)


async def drive(url: str, args: argparse.Namespace) -> list[StreamResult]:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=args.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [
            one_stream(
                session, url, i, args.ramp_s * i / args.streams, args.events, args.interval_ms
            )
            for i in range(args.streams)
        ]
        return await asyncio.gather(*tasks)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--events", type=int, default=20)
    ap.add_argument("--interval-ms", type=int, default=250)
    ap.add_argument("--ramp-s", type=float, default=2.0)
    ap.add_argument("--pool-size", type=int, default=1024, help="FERRULE_POOL_SIZE (default 256)")
    ap.add_argument("--backend", default="auto", choices=["auto", "rust", "python"])
    ap.add_argument("--timeout-s", type=float, default=120.0)
    ap.add_argument(
        "--settle-s",
        type=float,
        default=65.0,
        help="wait, then probe again (idle pooled connections are closed after 30-60 s)",
    )
    ap.add_argument("--label", default="")
    ap.add_argument(
        "--direct",
        action="store_true",
        help="control run: the same streams straight to the fake upstream, no proxy in between "
        "(the harness's own latency on this machine)",
    )
    args = ap.parse_args()
    backend = args.backend
    if backend == "auto":
        backend = "rust" if native_built() else "python"

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    mode = "direct" if args.direct else f"{backend}-pool{args.pool_size}"
    name = f"streams_{args.streams}-{mode}{args.label}-{stamp}"
    stats = RESULTS / f"{name}.fake.json"
    env = {
        "FERRULE_POOL_SIZE": str(args.pool_size),
        "FERRULE_RESPONSE_CACHE": "off",
        "FERRULE_LOG_LEVEL": "warning",
        "FERRULE_MAX_CONCURRENT": str(max(1024, args.streams + 100)),
    }
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_before = other_load()
    with (
        fake_upstream(stats, args.timeout_s + args.settle_s + 120) as (up_url, up_port, _),
        proxy(up_url, backend, env, RESULTS / f"{name}.proxy.log") as (px_url, px_port, server),
    ):
        worker = worker_of(server)
        # warm-up: a few streams, so the idle figures include imports and first allocations
        asyncio.run(
            drive(
                px_url + "/v1/chat/completions",
                argparse.Namespace(
                    **{**vars(args), "streams": 10, "events": 3, "interval_ms": 10, "ramp_s": 0.0}
                ),
            )
        )
        time.sleep(1.0)
        idle = probe(worker, px_port, up_port)
        sampler = Sampler(worker, px_port, up_port, every=0.5)
        sampler.start()
        t0 = time.monotonic()
        target = up_url + "/v1/messages" if args.direct else px_url + "/v1/chat/completions"
        results = asyncio.run(drive(target, args))
        wall = time.monotonic() - t0
        sampler.stop_event.set()
        sampler.join(5)
        time.sleep(2.0)
        after2 = probe(worker, px_port, up_port)
        time.sleep(max(0.0, args.settle_s - 2.0))
        after_settle = probe(worker, px_port, up_port)
        fake_stats = read_stats(stats)
    load_after = other_load()

    lat = [x for r in results for x in r.latencies]
    ttfb = [r.ttfb for r in results if r.ttfb is not None]
    samples = [p for _, p in sampler.samples]
    peak = max(samples, key=lambda p: p.rss)
    peak_open = max(p.client_conns for p in samples)
    run_cpu = (samples[-1].cpu_s - idle.cpu_s) if samples else float("nan")
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            key = r.error or f"status {r.status}, {r.events} events"
            errors[key] = errors.get(key, 0) + 1
    summary = {
        "started": started,
        "machine": machine(),
        "load": {"before": load_before, "after": load_after},
        "command": " ".join(sys.argv),
        "backend": "none (direct to the fake upstream)" if args.direct else backend,
        "pool_size": args.pool_size,
        "streams": args.streams,
        "events_per_stream": args.events,
        "interval_ms": args.interval_ms,
        "wall_s": round(wall, 2),
        "completed": sum(r.ok for r in results),
        "errors": errors,
        "events_received": len(lat),
        "latency_ms": {
            "p50": round(percentile(lat, 50) * 1000, 2),
            "p90": round(percentile(lat, 90) * 1000, 2),
            "p99": round(percentile(lat, 99) * 1000, 2),
            "max": round(max(lat) * 1000, 2) if lat else None,
        },
        "ttfb_ms": {
            "p50": round(percentile(ttfb, 50) * 1000, 1),
            "p99": round(percentile(ttfb, 99) * 1000, 1),
            "max": round(max(ttfb) * 1000, 1) if ttfb else None,
        },
        "proxy": {
            "idle": asdict(idle),
            "peak_rss_mib": round(peak.rss / MiB, 1),
            "peak_open_streams": peak_open,
            "peak_upstream_conns": max(p.upstream_conns for p in samples),
            "peak_fds": max(p.fds for p in samples),
            "peak_threads": max(p.threads for p in samples),
            "rss_per_open_stream_kib": round(
                max(0, peak.rss - min(idle.rss, *(p.rss for p in samples[:2])))
                / max(peak_open, 1)
                / 1024,
                1,
            ),
            "cpu_s": round(run_cpu, 2),
            "cpu_us_per_event": round(run_cpu / max(len(lat), 1) * 1e6, 1),
            "after_2s": asdict(after2),
            f"after_{args.settle_s:.0f}s": asdict(after_settle),
        },
        "fake": fake_stats,
        "timeline": [
            {"t": round(t - t0, 2), **{k: v for k, v in asdict(p).items() if k != "cpu_s"}}
            for t, p in sampler.samples
        ],
    }
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "timeline"}, indent=1))
    print(f"written {out}")
    return 0 if summary["completed"] == args.streams else 1


if __name__ == "__main__":
    sys.exit(main())
