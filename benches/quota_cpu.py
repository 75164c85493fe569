"""CPU per request of ``ferrule serve`` in keys mode with every limit on (RPM, TPM, parallel
and a budget, all far above the load so nothing is refused: each request is admitted and
settled in the SQLite quota store) against passthrough mode, on the simulated upstream.

    .venv/bin/python -m benches.quota_cpu [--requests 3000] [--concurrency 16] [--rounds 3]

CPU is the user + system time of the server's process tree (Granian's parent and its worker,
from /proc) over the requests, divided by the number of requests; the modes alternate, and the
median round of each is reported. The load generator runs in this process and is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from ferrule.procs import free_port, running_server

OPERATOR_KEY = "sk-ant-operator-0000000000000000"
ADMIN_KEY = "ferrule-admin-bench-quota-0000"
BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Say hello in five words. [mock:words=5]"}],
}
_TICKS = os.sysconf("SC_CLK_TCK")


def _tree_cpu(pid: int) -> float:
    """User + system seconds of ``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(stat[1]), []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(stat[11]) + int(stat[12])) / _TICKS
        todo.extend(children.get(p, []))
    return total


async def _load(url: str, key: str, n: int, concurrency: int) -> int:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    ok = 0
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        queue = iter(range(n))

        async def worker() -> None:
            nonlocal ok
            for _ in queue:
                r = await client.post(
                    url + "/v1/chat/completions",
                    json=BODY,
                    headers={"authorization": f"Bearer {key}"},
                )
                ok += r.status_code == 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


def _measure(mock_url: str, mode: str, n: int, concurrency: int) -> float:
    port = free_port()
    data = tempfile.mkdtemp(prefix="ferrule-bench-quota-")
    env = {
        "FERRULE_DATA_DIR": data,
        "FERRULE_RESPONSE_CACHE": "off",
        "FERRULE_LOG_LEVEL": "warning",
    }
    if mode.startswith("keys"):
        env |= {
            "FERRULE_AUTH": "keys",
            "FERRULE_UPSTREAM_API_KEY": OPERATOR_KEY,
            "FERRULE_ADMIN_KEY": ADMIN_KEY,
        }
    argv = ["serve", "--port", str(port), "--upstream-url", mock_url, "--workers", "1"]
    with running_server(argv, port, env=env, log_path=os.path.join(data, "ferrule.log")) as proc:
        url = f"http://127.0.0.1:{port}"
        key = "sk-ant-bench-0000000000000000"
        if mode.startswith("keys"):
            limits: dict[str, int] = {}
            if mode == "keys":
                limits = {"rpm": 10**7, "tpm": 10**10, "max_parallel": 10_000, "budget_usd": 10**6}
            r = httpx.post(url + "/admin/keys", json={"name": "bench", **limits},
                           headers={"authorization": f"Bearer {ADMIN_KEY}"})  # fmt: skip
            r.raise_for_status()
            key = r.json()["key"]
        asyncio.run(_load(url, key, 200, concurrency))  # warm-up
        before = _tree_cpu(proc.pid)
        ok = asyncio.run(_load(url, key, n, concurrency))
        cpu = _tree_cpu(proc.pid) - before
        if ok != n:
            raise SystemExit(f"{mode}: {n - ok} requests failed")
        return cpu / n * 1000  # ms per request


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--modes",
        default="passthrough,keys",
        help="passthrough, keys (every limit on), keys-nolimits (a key without limits)",
    )
    args = ap.parse_args()
    mock_port = free_port()
    with running_server(["mock-upstream", "--port", str(mock_port)], mock_port,
                        ready_path="/v1/models"):  # fmt: skip
        mock_url = f"http://127.0.0.1:{mock_port}"
        modes = args.modes.split(",")
        got: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.rounds):
            for mode in modes:
                t0 = time.monotonic()
                got[mode].append(_measure(mock_url, mode, args.requests, args.concurrency))
                print(f"{mode}: {got[mode][-1]:.3f} ms CPU/request "
                      f"({time.monotonic() - t0:.0f} s)", flush=True)  # fmt: skip
    base = statistics.median(got[modes[0]])
    for mode in modes:
        m = statistics.median(got[mode])
        print(f"median {mode}: {m:.3f} ms CPU/request ({(m / base - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
