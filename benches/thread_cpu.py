"""Where a Ferrule worker's CPU goes, thread by thread, under one load point (issue 12).

    .venv/bin/python -m benches.thread_cpu [--point paced-1000] [--seconds 12] [--window 4]
                                           [--keys] [--perf-stat EVENTS --thread NAME]

One ``ferrule serve`` (native backend) pinned to core 0, the fake upstream and the load
generator of ``benches/load`` on core 1, as in the full profile. The server is warmed up first
(ns-2k at 32 clients), then loaded at ``--point``; in the middle of that load each thread's
utime + stime is read from ``/proc/<pid>/task/*/stat`` over ``--window`` seconds and printed as
a share of one core, with the load generator's summary (CPU per request, TTFT) after it.
``--perf-stat`` counts perf events (e.g. ``syscalls:sys_enter_writev``) on the threads named
``--thread`` (``comm``: ``ferrule``, ``tokio-rt-worker``, ``ferrule-upstrea``) over the window.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from benches.load import bodies, targets
from benches.load.run import LOADGEN, build_loadgen, full_points, point_flags, wait_ready
from benches.quota_cpu import _argv, _together, start_upstream

Ticks = dict[tuple[int, str, str], int]


def thread_ticks(pids: list[int]) -> Ticks:
    """(pid, tid, name) -> utime + stime in clock ticks, for every thread of ``pids``."""
    out: Ticks = {}
    for pid in pids:
        with os.scandir(f"/proc/{pid}/task") as tasks:
            for task in tasks:
                try:
                    stat = Path(task.path, "stat").read_text()
                    name = Path(task.path, "comm").read_text().strip()
                except OSError:
                    continue  # the thread ended meanwhile
                fields = stat.rsplit(")", 1)[1].split()
                out[(pid, task.name, name)] = int(fields[11]) + int(fields[12])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--point", default="paced-1000")
    ap.add_argument("--seconds", type=float, default=12.0, help="measured load (after warmup)")
    ap.add_argument("--window", type=float, default=4.0, help="seconds of per-thread reading")
    ap.add_argument("--keys", action="store_true", help="keys mode, every limit on")
    ap.add_argument("--perf-stat", default="", metavar="EVENTS")
    ap.add_argument("--thread", default="tokio-rt-worker", help="the threads --perf-stat counts")
    args = ap.parse_args()
    point = next((p for p in full_points() if p.name == args.point), None)
    if point is None:
        raise SystemExit(f"no load point {args.point!r} in the full profile")
    build_loadgen()
    tmp = Path(tempfile.mkdtemp(prefix="ferrule-thread-cpu-"))
    files, up_port, up = start_upstream(tmp)
    t = targets.ferrule(tmp, up_port, "rust", keys=args.keys)
    proc = t.start(tmp, "0")
    try:
        wait_ready(t, proc, files["ns-2k"].read_bytes())
        _together([_argv(t, proc, up, files, "ns-2k-c32", 8)], 8)
        pids = proc.tree()
        argv = [
            "taskset", "-c", "1", str(LOADGEN), "gen",
            "--url", f"http://127.0.0.1:{t.port}/v1/chat/completions",
            "--connections", str(point.conns), "--warmup", str(point.warmup),
            "--duration", str(args.seconds), "--body", str(files[point.body]),
            "--header", f"authorization: Bearer {t.api_key}",
            "--token-marker", bodies.TOKEN_MARKER,
            "--cpu-pids", ",".join(map(str, pids)),
            "--upstream-pids", ",".join(map(str, up.tree())),
            "--timeout", "30", "--grace", "20",
            *point_flags(point),
        ]  # fmt: skip
        gen = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        time.sleep(point.warmup + args.seconds / 2 - args.window / 2)
        before, started = thread_ticks(pids), time.monotonic()
        stat = None
        if args.perf_stat:
            tids = [tid for (_, tid, name) in before if name == args.thread]
            stat = subprocess.run(
                ["taskset", "-c", "1", "perf", "stat", "-e", args.perf_stat,
                 "-t", ",".join(tids), "--", "sleep", str(args.window)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
        else:
            time.sleep(args.window)
        after, took = thread_ticks(pids), time.monotonic() - started
        hz = os.sysconf("SC_CLK_TCK")
        print(f"{args.point}, {t.name}: each thread's CPU over {took:.1f} s, % of one core")
        for key in sorted(after, key=lambda k: before.get(k, 0) - after[k]):
            used = (after[key] - before.get(key, 0)) / hz / took
            if used > 0:
                print(f"  {key[2]:>16} (tid {key[1]}) {100 * used:5.1f}%")
        if stat is not None:
            print(stat.stderr.strip())
        out, _ = gen.communicate(timeout=args.seconds + 120)
        res = json.loads(out)
        ttft = res.get("ttft_ms") or {}
        print(
            f"load: {res['proxy_cpu_ms_per_req'] * 1000:.0f} us CPU per request, "
            f"errors {res['errors']}"
            + (f", TTFT p50 {ttft['p50']:.1f} ms, p99 {ttft['p99']:.1f} ms" if ttft else "")
        )
    finally:
        proc.stop()
        up.stop()


if __name__ == "__main__":
    main()
