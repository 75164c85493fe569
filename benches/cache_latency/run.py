"""Latency of a response-cache hit against a miss, through a real ``ferrule serve`` in front of
the simulated upstream (answering at once, so a miss here is Ferrule's own overhead plus a
loopback round trip to the upstream; against Anthropic a miss costs seconds).

    .venv/bin/python benches/cache_latency/run.py [--n 300] [--store memory|sqlite]"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import httpx

from ferrule.procs import free_port, running_server


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--store", default="memory")
    ap.add_argument("--backend", default="rust")
    args = ap.parse_args()
    mock_port, port = free_port(), free_port()
    env = {
        "FERRULE_DATA_DIR": tempfile.mkdtemp(prefix="ferrule-bench-"),
        "FERRULE_RESPONSE_CACHE": args.store,
        "FERRULE_BACKEND": args.backend,
        "FERRULE_LOG_LEVEL": "warning",
    }
    with (
        running_server(
            ["mock-upstream", "--port", str(mock_port)], mock_port, ready_path="/v1/models"
        ),
        running_server(
            ["serve", "--port", str(port), "--upstream-url", f"http://127.0.0.1:{mock_port}"],
            port,
            env=env,
        ),
        httpx.Client(timeout=30) as c,
    ):
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        headers = {"authorization": "Bearer sk-ant-bench"}

        def timed(i: int, stream: bool) -> tuple[float, str]:
            body = {
                "model": "claude-sonnet-4-6",
                "temperature": 0,
                "stream": stream,
                "messages": [{"role": "user", "content": f"question {i} " + "context " * 200}],
            }
            t0 = time.perf_counter()
            r = c.post(url, json=body, headers=headers)
            r.read()
            return (time.perf_counter() - t0) * 1000, r.headers.get("x-cache", "")

        for stream in (False, True):
            # new questions are misses, the same again hits (a stored answer serves both
            # stream and JSON requests, so each pass asks its own questions)
            first = args.n if stream else 0
            misses = [timed(i, stream) for i in range(first, first + args.n)]
            hits = [timed(i, stream) for i in range(first, first + args.n)]
            assert all(x == "MISS" for _, x in misses) and all(x == "HIT" for _, x in hits)
            m = statistics.median(t for t, _ in misses)
            h = statistics.median(t for t, _ in hits)
            p99m = sorted(t for t, _ in misses)[int(args.n * 0.99) - 1]
            p99h = sorted(t for t, _ in hits)[int(args.n * 0.99) - 1]
            kind = "stream" if stream else "json"
            print(
                f"{kind:6} store={args.store:6} miss p50 {m:.2f} ms p99 {p99m:.2f} ms | hit p50 {h:.2f} ms p99 {p99h:.2f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
