"""Long soak (row C7 of reliability.md): mixed traffic with injected faults for ``--minutes``.

``.venv/bin/python benches/soak/soak.py [--minutes 30] [--clients 50] [--backend auto]``

The same mix as ``tests/test_soak.py`` (good streams and JSON answers, 429/529/reset then success,
resets mid-stream, truncated streams, clients hanging up mid-stream) from ``--clients``
concurrent clients against the fake upstream (``fake.py``, its own process) through one Ferrule
worker. Every 10 s it records the worker's RSS, open fds, threads and CPU, its TCP connections to
the upstream (the pool: in use plus idle keep-alive) and from clients (requests in flight), the
``ferrule_open_streams`` and ``ferrule_upstream_pool_in_use`` gauges of ``/metrics``, the fake's
open exchanges, and the requests answered and unexpected answers so far.

Writes ``results/soak-<backend>-<minutes>min-<stamp>.csv``, a ``.png`` plot and a ``.json``
summary (RSS slope after the warm-up in MiB per 10 minutes, fds/threads/connections at the start
and the end). Bounded: it stops after ``--minutes`` plus at most 3 minutes of shutdown, and stops
the processes it started by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import random
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    KEY,
    RESULTS,
    MiB,
    fake_upstream,
    gauges,
    machine,
    native_built,
    other_load,
    probe,
    proxy,
    read_stats,
    worker_of,
)

MIX = {
    "stream": 40,
    "json": 15,
    "retry_429": 8,
    "retry_529": 8,
    "retry_reset": 4,
    "reset_mid": 8,
    "truncated": 7,
    "cancel": 10,
}
FIELDS = [
    "t_s",
    "rss_mib",
    "fds",
    "threads",
    "cpu_s",
    "upstream_conns",
    "client_conns",
    "open_streams_gauge",
    "pool_in_use_gauge",
    "fake_open_exchanges",
    "requests",
    "unexpected",
]


class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.outcomes: Counter[str] = Counter()
        self.unexpected: Counter[str] = Counter()


def classify(kind: str, status: int, headers: object, body: bytes) -> str | None:
    """The outcome name, or None when the answer is not one the injected fault allows."""
    try:
        if kind in ("stream", "retry_429", "retry_529", "retry_reset"):
            if kind != "stream" and status in (429, 502, 503):
                return "passed_back"  # the retry budget was spent
            if status != 200 or not body.endswith(b"data: [DONE]\n\n"):
                return None
            return "ok" if kind == "stream" else "retried"
        if kind == "json":
            if status == 200 and orjson.loads(body)["choices"][0]["message"]["content"]:
                return "ok"
            return None
        if kind == "reset_mid" and status == 502:
            return "reset_before_bytes"
        if kind in ("reset_mid", "truncated"):
            last = body.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
            if status == 200 and last.startswith(b'data: {"error"'):
                return "error_event"
            return None
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return None


async def client(
    session: aiohttp.ClientSession,
    url: str,
    seed: int,
    ids: object,
    tally: Tally,
    deadline: float,
) -> None:
    rng = random.Random(seed)
    kinds, weights = list(MIX), list(MIX.values())
    while time.monotonic() < deadline:
        kind = rng.choices(kinds, weights)[0]
        rid = next(ids)  # type: ignore[call-overload]
        body = {
            "model": "claude-sonnet-4-6",
            "messages": [{"role": "user", "content": f"soak:{kind}:{rid} please answer"}],
            "stream": kind != "json",
        }
        tally.sent += 1
        try:
            async with session.post(
                url, json=body, headers={"authorization": f"Bearer {KEY}"}
            ) as r:
                if kind == "cancel":
                    await r.content.readany()
                    r.close()
                    tally.outcomes[f"{kind}:{'cancelled' if r.status == 200 else r.status}"] += 1
                    continue
                data = await r.read()
                outcome = classify(kind, r.status, r.headers, data)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            tally.unexpected[f"{kind}: {type(exc).__name__}"] += 1
            outcome = "UNEXPECTED"
        if outcome is None:
            tally.unexpected[f"{kind}: status {r.status}"] += 1
            outcome = "UNEXPECTED"
        tally.outcomes[f"{kind}:{outcome}"] += 1


async def drive(url: str, clients: int, seconds: float, tally: Tally) -> None:
    ids = iter(range(10**12))
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(
            *[client(session, url, 7000 + i, ids, tally, deadline) for i in range(clients)]
        )


def slope(points: list[tuple[float, float]]) -> float:
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in points) / var


def plot(rows: list[dict[str, float]], png: Path, title: str) -> None:
    try:
        import matplotlib
    except ImportError:  # the figures are in the CSV and JSON; the picture is optional
        print("matplotlib is not installed: no plot")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t_s"] / 60 for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    axes[0].plot(t, [r["rss_mib"] for r in rows], color="tab:red")
    axes[0].set_ylabel("RSS (MiB)")
    axes[1].plot(t, [r["fds"] for r in rows], label="open fds")
    axes[1].plot(t, [r["threads"] for r in rows], label="threads")
    axes[1].legend(loc="upper left")
    axes[1].set_ylabel("count")
    axes[2].plot(t, [r["upstream_conns"] for r in rows], label="upstream conns (pool)")
    axes[2].plot(t, [r["client_conns"] for r in rows], label="client conns (in flight)")
    axes[2].plot(t, [r["open_streams_gauge"] for r in rows], label="open streams gauge", ls="--")
    axes[2].plot(
        t, [r["fake_open_exchanges"] for r in rows], label="upstream exchanges open", ls=":"
    )
    axes[2].legend(loc="upper left", fontsize=8)
    axes[2].set_ylabel("count")
    rate = [0.0] + [
        (b["requests"] - a["requests"]) / max(b["t_s"] - a["t_s"], 1e-9)
        for a, b in itertools.pairwise(rows)
    ]
    axes[3].plot(t, rate, color="tab:green")
    axes[3].set_ylabel("requests/s")
    axes[3].set_xlabel("minutes")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=90)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--every-s", type=float, default=10.0)
    ap.add_argument("--warmup-min", type=float, default=3.0)
    ap.add_argument("--backend", default="auto", choices=["auto", "rust", "python"])
    args = ap.parse_args()
    backend = args.backend
    if backend == "auto":
        backend = "rust" if native_built() else "python"
    seconds = args.minutes * 60

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"soak-{backend}-{args.minutes:g}min-{stamp}"
    csv_path, png, js = (RESULTS / f"{name}.{ext}" for ext in ("csv", "png", "json"))
    stats = RESULTS / f"{name}.fake.json"
    env = {
        "FERRULE_RESPONSE_CACHE": "off",  # a filling cache would read as a leak
        "FERRULE_BREAKER_THRESHOLD": "1000000",
        "FERRULE_RETRY_BASE": "0.01",
        "FERRULE_RETRY_CAP": "0.05",
        "FERRULE_FIRST_BYTE_TIMEOUT": "10",
        "FERRULE_READ_TIMEOUT": "10",
        "FERRULE_LOG_LEVEL": "warning",
    }
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_before = other_load()
    rows: list[dict[str, float]] = []
    tally = Tally()
    with (
        fake_upstream(stats, seconds + 300) as (up_url, up_port, _),
        proxy(up_url, backend, env, RESULTS / f"{name}.proxy.log") as (px_url, px_port, server),
        csv_path.open("w", newline="") as fh,
    ):
        worker = worker_of(server)
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        t0 = time.monotonic()
        stop = threading.Event()

        def sample() -> None:
            p = probe(worker, px_port, up_port)
            g = gauges(px_url)
            fake = read_stats(stats)
            row = {
                "t_s": round(time.monotonic() - t0, 1),
                "rss_mib": round(p.rss / MiB, 2),
                "fds": p.fds,
                "threads": p.threads,
                "cpu_s": round(p.cpu_s, 2),
                "upstream_conns": p.upstream_conns,
                "client_conns": p.client_conns,
                "open_streams_gauge": g.get("ferrule_open_streams", -1),
                "pool_in_use_gauge": g.get("ferrule_upstream_pool_in_use", -1),
                "fake_open_exchanges": fake.get("open_exchanges", -1),
                "requests": sum(tally.outcomes.values()),
                "unexpected": sum(tally.unexpected.values()),
            }
            rows.append(row)
            writer.writerow(row)
            fh.flush()

        def sampler() -> None:
            while not stop.is_set():
                try:
                    sample()
                except Exception as exc:  # keep sampling; say why a sample is missing
                    print(f"sample failed: {exc!r}", flush=True)
                if rows and int(rows[-1]["t_s"]) % 60 < args.every_s:
                    r = rows[-1]
                    print(
                        f"t={r['t_s']:7.1f}s rss {r['rss_mib']:7.2f} MiB fds {r['fds']} "
                        f"threads {r['threads']} upstream {r['upstream_conns']} "
                        f"requests {r['requests']} unexpected {r['unexpected']}",
                        flush=True,
                    )
                stop.wait(args.every_s)

        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        asyncio.run(drive(px_url + "/v1/chat/completions", args.clients, seconds, tally))
        time.sleep(2.0)  # let the last hang-ups reach the upstream
        stop.set()
        thread.join(30)
        sample()  # the end, traffic stopped
        fake_final = read_stats(stats)
    load_after = other_load()

    warm = [(r["t_s"], r["rss_mib"]) for r in rows if r["t_s"] >= args.warmup_min * 60]
    per_s = slope(warm)
    summary = {
        "started": started,
        "machine": machine(),
        "load": {"before": load_before, "after": load_after},
        "command": " ".join(sys.argv),
        "backend": backend,
        "minutes": args.minutes,
        "clients": args.clients,
        "requests": sum(tally.outcomes.values()),
        "requests_per_s": round(sum(tally.outcomes.values()) / seconds, 1),
        "outcomes": dict(sorted(tally.outcomes.items())),
        "unexpected": dict(tally.unexpected),
        "rss_mib": {
            "first": rows[0]["rss_mib"],
            "after_warmup": warm[0][1] if warm else None,
            "end": rows[-1]["rss_mib"],
            "max": max(r["rss_mib"] for r in rows),
            "slope_after_warmup_mib_per_10min": round(per_s * 600, 3),
            "growth_after_warmup_mib": round(per_s * (warm[-1][0] - warm[0][0]), 2)
            if warm
            else None,
        },
        "fds": {
            "first": rows[0]["fds"],
            "max": max(r["fds"] for r in rows),
            "end": rows[-1]["fds"],
        },
        "threads": {
            "first": rows[0]["threads"],
            "max": max(r["threads"] for r in rows),
            "end": rows[-1]["threads"],
        },
        "upstream_conns": {
            "max": max(r["upstream_conns"] for r in rows),
            "end": rows[-1]["upstream_conns"],
        },
        "pool_in_use_gauge_max": max(r["pool_in_use_gauge"] for r in rows),
        "open_streams_gauge_end": rows[-1]["open_streams_gauge"],
        "fake": fake_final,
        "cpu_s": rows[-1]["cpu_s"] - rows[0]["cpu_s"],
        "csv": csv_path.name,
        "png": png.name,
    }
    js.write_text(json.dumps(summary, indent=1))
    plot(
        rows,
        png,
        f"Ferrule soak, {backend} backend, {args.clients} clients, {args.minutes:g} min "
        f"({started}); RSS slope {summary['rss_mib']['slope_after_warmup_mib_per_10min']:+.2f} "
        "MiB/10 min after warm-up",
    )
    print(json.dumps(summary, indent=1))
    return 0 if not tally.unexpected else 1


if __name__ == "__main__":
    sys.exit(main())
