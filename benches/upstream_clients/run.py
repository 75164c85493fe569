"""Runs the whole upstream-client benchmark in one go, on 127.0.0.1 only, bounded in time.

* starts ``fast_upstream.py`` pinned to core 1 and measures it directly with wrk (wrk on core 0,
  then on core 1 beside it, as in the pipe runs) to show it is not the bottleneck;
* for each engine (``none`` baseline, ``httpx``, ``httpx-aiohttp``, ``aiohttp``) and each repetition
  starts ``pipe.py`` under ``granian --interface asgi --workers 1 --loop uvloop`` pinned to core 0,
  drives it from core 1 with wrk (``post.lua``: 2 KB JSON POST, 32 connections) in three modes:
  ``json`` (non-stream), ``stream`` (56 SSE events sent in one burst) and ``paced`` (the same 56
  events 1 ms apart, so each arrives on its own, as tokens do);
* records req/s, wrk's p50/p99, errors (non-2xx and socket errors), the CPU time of the Granian
  process tree per request (utime+stime from /proc/<pid>/stat around the wrk run), the busy share
  of both cores, and the upstream connections opened per request (pool behaviour);
* checks what each engine does with the upstream when the client disconnects mid-stream;
* stops every process it started by PID, writes ``results/<utc>.json`` and prints Markdown tables.

Usage (from the repo root): ``.venv/bin/python benches/upstream_clients/run.py`` (about 10 min
with the defaults; ``--duration 3 --reps 1`` for a quick look).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LUA = HERE / "post.lua"
CLK_TCK = os.sysconf("SC_CLK_TCK")
ENGINES = ["none", "httpx", "httpx-aiohttp", "aiohttp", "httpx2", "httpx2-aiohttp"]
MODES = {"json": [], "stream": ["stream"], "paced": ["stream", "paced=1"]}
PIPE_CORE, LOAD_CORE = "0", "1"
HARD_LIMIT_S = 40 * 60  # the whole run never goes past this


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def check(self, what: str) -> None:
        if time.monotonic() > self.end:
            raise TimeoutError(f"benchmark time limit reached before {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """pid and all its descendants, via /proc/<pid>/task/<tid>/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return out


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total


def core_busy() -> dict[str, tuple[int, int]]:
    """(busy, total) jiffies of each core from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                nums = [int(v) for v in vals[:8]]
                idle = nums[3] + nums[4]
                out[name] = (sum(nums) - idle, sum(nums))
    return out


def start_time(pid: int) -> int | None:
    """The start time of pid (field 22 of /proc/<pid>/stat), to never signal a reused PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class Proc:
    """A process we started; stopped by its PID and by the PIDs of the children it made."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path):
        self.name = name
        self.log_path = log
        self.log = log.open("wb")
        self.popen = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.pid = self.popen.pid
        self.known: dict[int, int | None] = {}

    def tree(self) -> list[int]:
        pids = descendants(self.pid)
        for pid in pids:
            self.known.setdefault(pid, start_time(pid))
        return pids

    def stop(self) -> None:
        self.tree()
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=8)
        for pid, started in self.known.items():
            if pid == self.pid:
                if self.popen.poll() is None:
                    self.popen.kill()
            elif started is not None and start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        self.log.close()


def machine_busy(seconds: float) -> float:
    """Cores busy (0..nproc) over the next `seconds`, whoever uses them."""
    a = core_busy()
    time.sleep(seconds)
    b = core_busy()
    return sum((b[c][0] - a[c][0]) / max(b[c][1] - a[c][1], 1) for c in a)


def wait_quiet(limit: float = 0.25, max_wait: float = 10.0) -> float:
    """Wait (bounded) until the machine is idle apart from us, since this box is shared: our own
    servers are idle between runs, so anything busy is someone else's. Returns the last reading."""
    end = time.monotonic() + max_wait
    busy = machine_busy(0.5)
    while busy > limit and time.monotonic() < end:
        busy = machine_busy(1.0)
    return busy


def wait_ready(port: int, body: bytes, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("POST", "/v1/messages", body, {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            if resp.status == 200:
                return
            last = RuntimeError(f"status {resp.status}")
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"port {port} not ready: {last}")


def upstream_stats(port: int) -> dict[str, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/__stats")
    data: dict[str, int] = json.loads(conn.getresponse().read())
    conn.close()
    return data


def wrk(
    port: int, core: str, duration: float, conns: int, args: list[str], deadline: Deadline
) -> dict[str, Any]:
    deadline.check("a wrk run")
    argv = [
        "taskset", "-c", core, "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s",
        "-s", str(LUA), f"http://127.0.0.1:{port}/v1/messages",
    ]  # fmt: skip
    if args:
        argv += ["--", *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT_JSON "):
            res: dict[str, Any] = json.loads(line[len("RESULT_JSON ") :])
            res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
            res["errors"] = sum(v for k, v in res.items() if k.startswith("err_"))
            return res
    raise RuntimeError(f"no RESULT_JSON in wrk output:\n{out.stdout}\n{out.stderr}")


def settle(up_port: int, max_wait: float = 5.0) -> None:
    """Wait (bounded) until no paced stream is left running upstream: streams the load generator
    left behind (Granian does not cancel them) drain before the pipe is stopped."""
    end = time.monotonic() + max_wait
    while upstream_stats(up_port)["paced_active"] > 0 and time.monotonic() < end:
        time.sleep(0.1)


def pipe_log_errors(pipe: Proc | None) -> int:
    if pipe is None:
        return 0
    pipe.log.flush()
    return pipe.log_path.read_text(errors="replace").count("[ERROR]")


def measured_run(
    pipe: Proc | None,
    upstream: Proc,
    up_port: int,
    port: int,
    duration: float,
    conns: int,
    args: list[str],
    deadline: Deadline,
) -> dict[str, Any]:
    pipe_pids = pipe.tree() if pipe else []
    up_pids = upstream.tree()
    settle(up_port)  # the warm-up's abandoned streams first
    log_errors0 = pipe_log_errors(pipe)
    idle_before = wait_quiet()
    stats0 = upstream_stats(up_port)
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cores0, p0, u0, t0 = core_busy(), cpu_ticks(pipe_pids), cpu_ticks(up_pids), time.monotonic()
    res = wrk(port, LOAD_CORE if pipe else PIPE_CORE, duration, conns, args, deadline)
    cores1, p1, u1, t1 = core_busy(), cpu_ticks(pipe_pids), cpu_ticks(up_pids), time.monotonic()
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    stats1 = upstream_stats(up_port)
    wall = t1 - t0
    n = max(res["requests"], 1)
    res["pipe_cpu_s"] = (p1 - p0) / CLK_TCK
    res["pipe_cpu_ms_per_req"] = 1000 * res["pipe_cpu_s"] / n
    res["pipe_util"] = res["pipe_cpu_s"] / wall
    res["upstream_cpu_ms_per_req"] = 1000 * (u1 - u0) / CLK_TCK / n
    res["upstream_util"] = (u1 - u0) / CLK_TCK / wall
    busy_all = 0.0
    for core in ("cpu0", "cpu1"):
        busy = cores1[core][0] - cores0[core][0]
        total = cores1[core][1] - cores0[core][1]
        res[f"{core}_busy"] = busy / total if total else 0.0
        busy_all += res[f"{core}_busy"]
    wrk_cpu = (ch1.ru_utime + ch1.ru_stime) - (ch0.ru_utime + ch0.ru_stime)
    res["wrk_util"] = wrk_cpu / wall
    # cores busy with work that is not ours (another session's tests on this shared box)
    res["foreign_util"] = max(
        0.0, busy_all - res["pipe_util"] - res["upstream_util"] - res["wrk_util"]
    )
    res["machine_busy_before"] = idle_before
    res["pipe_log_errors"] = pipe_log_errors(pipe) - log_errors0  # includes the warm-up's tail
    # -1 for the /__stats connection itself
    res["upstream_conns_opened"] = stats1["accepted"] - stats0["accepted"] - 1
    res["upstream_requests"] = stats1["requests"] - stats0["requests"] - 1
    return res


PACED_BODY = b'{"model":"m","max_tokens":8,"stream":true,"messages":[]}'


def open_paced_stream(port: int, pace_ms: int) -> socket.socket:
    """A streaming request through the pipe, read up to its first event, left open."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(
        b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"x-bench-pace-ms: %d\r\ncontent-length: %d\r\n\r\n%b"
        % (pace_ms, len(PACED_BODY), PACED_BODY)
    )
    got = b""
    while b"event: message_start" not in got:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return s


def disconnect_check(
    engine: str, watch: bool, up_port: int, env: dict[str, str], logdir: Path, deadline: Deadline
) -> dict[str, Any]:
    """Client disconnects mid-stream (events 20 ms apart, ~1.1 s a stream): does the upstream
    stream stop, how fast, and is the pool healthy afterwards (32 streams cut at once, then 2 s
    of JSON load: errors, connections opened, connections left open, errors in the log)?"""
    deadline.check(f"disconnect check {engine}")
    port = free_port()
    penv = env | {
        "PIPE_ENGINE": engine,
        "UPSTREAM_URL": f"http://127.0.0.1:{up_port}",
        "PIPE_WATCH_DISCONNECT": "1" if watch else "0",
    }
    log = logdir / f"disconnect-{engine}-watch{int(watch)}.log"
    argv = [
        "taskset", "-c", PIPE_CORE, str(Path(sys.executable).with_name("granian")),
        "--interface", "asgi", "--workers", "1", "--loop", "uvloop", "--host", "127.0.0.1",
        "--port", str(port), "--log-level", "warning", "pipe:app",
    ]  # fmt: skip
    pipe = Proc(engine, argv, penv, HERE, log)
    try:
        wait_ready(port, b'{"stream":false}')
        out: dict[str, Any] = {"engine": engine, "watch_disconnect": watch}
        # one stream cut after its first event
        before = upstream_stats(up_port)
        s = open_paced_stream(port, 20)
        t0 = time.monotonic()
        s.close()
        seen = None
        while time.monotonic() - t0 < 2.0:
            if upstream_stats(up_port)["paced_aborted"] > before["paced_aborted"]:
                seen = time.monotonic() - t0
                break
            time.sleep(0.01)
        out["upstream_stream_stopped"] = seen is not None
        out["stopped_after_ms"] = None if seen is None else round(1000 * seen)
        time.sleep(1.2)  # let an unstopped stream run out before the mass cut
        # 32 streams cut at once, then load: does the pool recover?
        before = upstream_stats(up_port)
        socks = [open_paced_stream(port, 20) for _ in range(32)]
        for s in socks:
            s.close()
        time.sleep(1.5)
        mid = upstream_stats(up_port)
        out["mass_cut_upstream_stopped"] = mid["paced_aborted"] - before["paced_aborted"]
        r = wrk(port, LOAD_CORE, 2, 32, MODES["stream"], deadline)
        after = upstream_stats(up_port)
        out["after_cut_load_errors"] = r["errors"]
        out["after_cut_load_requests"] = r["requests"]
        out["upstream_conns_opened"] = after["accepted"] - before["accepted"] - 2
        out["upstream_conns_open_after"] = after["open_connections"] - 1
    finally:
        pipe.stop()
    text = log.read_text(errors="replace")
    out["log_errors"] = text.count("[ERROR]")
    out["log_tracebacks"] = text.count("Traceback")
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    return {
        "rps": med("rps"),
        "p50_ms": med("p50_us") / 1000,
        "p99_ms": med("p99_us") / 1000,
        "errors": sum(r["errors"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "cpu_ms": med("pipe_cpu_ms_per_req"),
        "cpu_ms_min": min(r["pipe_cpu_ms_per_req"] for r in runs),
        "cpu_ms_max": max(r["pipe_cpu_ms_per_req"] for r in runs),
        "pipe_util": med("pipe_util"),
        "foreign_util_max": max(r["foreign_util"] for r in runs),
        "cpu1_busy": med("cpu1_busy"),
        "conns_per_req": sum(r["upstream_conns_opened"] for r in runs)
        / max(sum(r["requests"] for r in runs), 1),
        "rps_all": [round(r["rps"]) for r in runs],
    }


def markdown(summary: dict[str, dict[str, dict[str, Any]]], engines: list[str]) -> str:
    lines = [
        "| engine | non-stream req/s | stream streams/s | p50 ms (json / stream) "
        "| p99 ms (json / stream) | errors | CPU ms/request (json / stream) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in engines:
        j, s = summary[e]["json"], summary[e]["stream"]
        lines.append(
            f"| {e} | {j['rps']:,.0f} | {s['rps']:,.0f} | {j['p50_ms']:.1f} / {s['p50_ms']:.1f} "
            f"| {j['p99_ms']:.1f} / {s['p99_ms']:.1f} | {j['errors'] + s['errors']} "
            f"| {j['cpu_ms']:.3f} / {s['cpu_ms']:.3f} |"
        )
    lines += [
        "",
        "| engine | paced streams/s | p50 ms | p99 ms | errors | CPU ms/stream "
        "| Granian core busy (json / stream / paced) | upstream conns opened per request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in engines:
        m = summary[e]
        p = m["paced"]
        conns = max(m[k]["conns_per_req"] for k in MODES)
        lines.append(
            f"| {e} | {p['rps']:,.0f} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {p['errors']} "
            f"| {p['cpu_ms']:.3f} | {m['json']['pipe_util']:.0%} / {m['stream']['pipe_util']:.0%}"
            f" / {p['pipe_util']:.0%} | {conns:.4f} |"
        )
    return "\n".join(lines)


def markdown_extra(results: dict[str, Any]) -> str:
    lines = [
        "| engine (no Granian) | JSON req/s | JSON CPU ms/req | stream/s | stream CPU ms/req "
        "| chunks per stream |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    by: dict[str, dict[str, Any]] = {}
    for c in results.get("client_only", []):
        by.setdefault(c["engine"], {})[c["mode"]] = c
    for e, m in by.items():
        j, s = m["json"], m["stream"]
        lines.append(
            f"| {e} | {j['rps']:,.0f} | {j['cpu_ms_per_req']:.3f} | {s['rps']:,.0f} "
            f"| {s['cpu_ms_per_req']:.3f} | {s['chunks_per_req']:.0f} |"
        )
    lines += [
        "",
        "| engine | receive() watcher | one cut stream stopped upstream | after | "
        "32 cut: upstream stopped | then 2 s stream load: errors / requests "
        "| upstream conns opened | log errors |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for d in results.get("disconnect", {}).values():
        after = "-" if d["stopped_after_ms"] is None else f"{d['stopped_after_ms']} ms"
        lines.append(
            f"| {d['engine']} | {'yes' if d['watch_disconnect'] else 'no'} "
            f"| {'yes' if d['upstream_stream_stopped'] else 'no (ran to the end)'} | {after} "
            f"| {d['mass_cut_upstream_stopped']}/32 "
            f"| {d['after_cut_load_errors']} / {d['after_cut_load_requests']} "
            f"| {d['upstream_conns_opened']} | {d['log_errors']} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description="upstream HTTP client benchmark")
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of wrk before measuring")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (engines interleaved)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args()
    engines = [
        e
        for e in a.engines.split(",")
        if not e.startswith("httpx2") or importlib.util.find_spec("httpx2") is not None
    ]
    modes = a.modes.split(",")
    if not shutil.which("wrk") or not shutil.which("taskset"):
        print("needs wrk and taskset (apt-get install wrk util-linux)", file=sys.stderr)
        return 2
    deadline = Deadline(HARD_LIMIT_S)
    py = sys.executable
    granian = str(Path(py).with_name("granian"))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    a.out.mkdir(parents=True, exist_ok=True)
    logdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"ferrule-upstream-bench-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    up_port = free_port()
    json_body = b'{"model":"m","max_tokens":8,"stream":false,"messages":[]}'
    results: dict[str, Any] = {
        "date_utc": stamp,
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "versions": _versions(),
        "argv": sys.argv,
        "params": vars(a) | {"out": str(a.out)},
        "upstream_direct": {},
        "runs": [],
        "disconnect": {},
    }
    upstream = Proc(
        "upstream",
        ["taskset", "-c", LOAD_CORE, py, str(HERE / "fast_upstream.py"), "--port", str(up_port)],
        env,
        HERE,
        logdir / "upstream.log",
    )
    procs: list[Proc] = [upstream]
    try:
        wait_ready(up_port, json_body)
        # 1. the fake upstream on its own, wrk on the other core and then on the same core
        for where, core in (("wrk on core 0", PIPE_CORE), ("wrk on core 1 (as in pipe runs)", "1")):
            for mode in ("json", "stream"):
                wrk(up_port, core, a.warmup, a.connections, MODES[mode], deadline)
                up_pids = upstream.tree()
                u0, t0 = cpu_ticks(up_pids), time.monotonic()
                r = wrk(up_port, core, a.duration, a.connections, MODES[mode], deadline)
                r["upstream_util"] = (cpu_ticks(up_pids) - u0) / CLK_TCK / (time.monotonic() - t0)
                results["upstream_direct"][f"{where} / {mode}"] = r
                print(
                    f"upstream direct, {where}, {mode}: {r['rps']:,.0f} req/s, "
                    f"p99 {r['p99_us'] / 1000:.1f} ms, errors {r['errors']}, "
                    f"upstream busy {r['upstream_util']:.0%}",
                    flush=True,
                )
        # 2. the pipes, engines interleaved within each repetition
        for rep in range(a.reps):
            order = engines if rep % 2 == 0 else engines[::-1]
            for engine in order:
                deadline.check(f"{engine} rep {rep}")
                port = free_port()
                penv = env | {
                    "PIPE_ENGINE": engine,
                    "UPSTREAM_URL": f"http://127.0.0.1:{up_port}",
                    "PYTHONPATH": str(HERE),
                }
                argv = [
                    "taskset", "-c", PIPE_CORE, granian, "--interface", "asgi",
                    "--workers", "1", "--loop", "uvloop", "--host", "127.0.0.1",
                    "--port", str(port), "--log-level", "warning", "pipe:app",
                ]  # fmt: skip
                pipe = Proc(engine, argv, penv, HERE, logdir / f"pipe-{engine}-{rep}.log")
                procs.append(pipe)
                try:
                    wait_ready(port, json_body)
                    for mode in modes:
                        wrk(port, LOAD_CORE, a.warmup, a.connections, MODES[mode], deadline)
                        r = measured_run(
                            pipe,
                            upstream,
                            up_port,
                            port,
                            a.duration,
                            a.connections,
                            MODES[mode],
                            deadline,
                        )
                        r |= {"engine": engine, "mode": mode, "rep": rep}
                        results["runs"].append(r)
                        print(
                            f"rep {rep} {engine:14s} {mode:6s} {r['rps']:8,.0f} req/s "
                            f"p50 {r['p50_us'] / 1000:6.1f} ms p99 {r['p99_us'] / 1000:6.1f} ms "
                            f"err {r['errors']:4d}  CPU {r['pipe_cpu_ms_per_req']:.3f} ms/req "
                            f"(Granian {r['pipe_util']:.0%}, core1 {r['cpu1_busy']:.0%}, "
                            f"not ours {r['foreign_util']:.2f} cores, "
                            f"pipe log errors {r['pipe_log_errors']}, "
                            f"upstream conns opened {r['upstream_conns_opened']})",
                            flush=True,
                        )
                finally:
                    settle(up_port)
                    if pipe.popen.poll() is None:
                        results.setdefault("shutdown_log_errors", {})
                        before = pipe_log_errors(pipe)
                        pipe.stop()
                        results["shutdown_log_errors"][f"{engine} rep {rep}"] = (
                            pipe.log_path.read_text(errors="replace").count("[ERROR]") - before
                        )
                    procs.remove(pipe)
        # 3. client disconnects mid-stream, without and with a receive() watcher in the pipe
        for engine in engines:
            if engine == "none":
                continue
            for watch in (False, True):
                d = disconnect_check(engine, watch, up_port, env, logdir, deadline)
                results["disconnect"][f"{engine} watch={int(watch)}"] = d
                print("disconnect", json.dumps(d), flush=True)
        # 4. the clients alone, without Granian (pinned to core 0, upstream on core 1)
        deadline.check("client-only check")
        argv = [
            "taskset", "-c", PIPE_CORE, py, str(HERE / "client_only.py"),
            "--upstream", f"http://127.0.0.1:{up_port}", "--seconds", str(min(a.duration, 5)),
            "--engines", ",".join(e for e in engines if e != "none"),
        ]  # fmt: skip
        wait_quiet()
        co = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=True)
        results["client_only"] = [
            json.loads(line.split(" ", 1)[1])
            for line in co.stdout.splitlines()
            if line.startswith("CLIENT_ONLY ")
        ]
        for c in results["client_only"]:
            print(
                f"client only {c['engine']:14s} {c['mode']:6s} {c['rps']:8,.0f} req/s "
                f"CPU {c['cpu_ms_per_req']:.3f} ms/req ({c['cpu_util']:.0%} busy, "
                f"{c['chunks_per_req']:.0f} chunks/stream)",
                flush=True,
            )
    finally:
        for p in procs:
            p.stop()
    summary = {
        e: {
            m: summarize([r for r in results["runs"] if r["engine"] == e and r["mode"] == m])
            for m in modes
        }
        for e in engines
    }
    results["summary"] = summary
    out = a.out / f"{stamp}.json"
    out.write_text(json.dumps(results, indent=1))
    print(
        f"\nraw results: {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}"
    )
    print("logs:", logdir)
    if set(modes) == set(MODES):
        print()
        print(markdown(summary, engines))
        print()
        print(markdown_extra(results))
    return 0


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("granian", "httpx", "httpcore", "h11", "aiohttp", "httpx-aiohttp", "uvloop"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out


if __name__ == "__main__":
    sys.exit(main())
