"""What the soak benches share: the fake upstream and the proxy as child processes (stopped by
PID), probes of the proxy worker (psutil), and the machine description for RESULTS.md."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(ROOT / "python"))

from ferrule.procs import free_port, running_server  # noqa: E402

MiB = 1024 * 1024
KEY = "sk-ant-bench-0000000000000000"


def native_built() -> bool:
    try:
        from ferrule import _native  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def fake_upstream(
    stats: Path, max_seconds: float
) -> Iterator[tuple[str, int, subprocess.Popen[bytes]]]:
    port = free_port()
    argv = [
        sys.executable,
        str(HERE / "fake.py"),
        "--port",
        str(port),
        "--stats",
        str(stats),
        "--max-seconds",
        str(max_seconds),
    ]
    log = str(stats.with_suffix(".log"))
    with running_server(argv, port, ready_path="/_faults/health", log_path=log) as proc:
        yield f"http://127.0.0.1:{port}", port, proc


@contextlib.contextmanager
def proxy(
    upstream: str, backend: str, env: Mapping[str, str], log: Path
) -> Iterator[tuple[str, int, subprocess.Popen[bytes]]]:
    port = free_port()
    data_dir = RESULTS / "tmp-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = {
        "FERRULE_BACKEND": backend,
        "FERRULE_DATA_DIR": str(data_dir / f"proxy-{port}"),
        **env,
    }
    argv = ["serve", "--port", str(port), "--upstream-url", upstream]
    with running_server(argv, port, env=full_env, log_path=str(log)) as proc:
        yield f"http://127.0.0.1:{port}", port, proc


def worker_of(server: subprocess.Popen[bytes]) -> psutil.Process:
    """The Granian worker (the child of ``ferrule serve``) where requests are served."""
    parent = psutil.Process(server.pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = parent.children(recursive=True)
        if children:
            return children[0]
        time.sleep(0.1)
    return parent


@dataclass
class Probe:
    rss: int
    fds: int
    threads: int
    cpu_s: float
    upstream_conns: int  # established TCP connections from the worker to the fake upstream
    client_conns: int  # established TCP connections from clients to the worker


def probe(proc: psutil.Process, proxy_port: int, upstream_port: int) -> Probe:
    with proc.oneshot():
        conns = proc.net_connections("tcp")
        cpu = proc.cpu_times()
        return Probe(
            rss=proc.memory_info().rss,
            fds=proc.num_fds(),
            threads=proc.num_threads(),
            cpu_s=cpu.user + cpu.system,
            upstream_conns=sum(
                1
                for c in conns
                if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == upstream_port
            ),
            client_conns=sum(
                1
                for c in conns
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == proxy_port
            ),
        )


_GAUGE = re.compile(
    rb"^(ferrule_open_streams|ferrule_upstream_pool_in_use)(?:\{[^}]*\})? (\S+)$", re.M
)


def gauges(proxy_url: str) -> dict[str, float]:
    """``ferrule_open_streams`` and ``ferrule_upstream_pool_in_use`` from ``/metrics``."""
    try:
        with urllib.request.urlopen(proxy_url + "/metrics", timeout=5) as r:
            text = r.read()
    except OSError:
        return {}
    return {m.group(1).decode(): float(m.group(2)) for m in _GAUGE.finditer(text)}


def read_stats(path: Path) -> dict[str, object]:
    try:
        data: dict[str, object] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = psutil.virtual_memory().total / 1024**3
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def other_load() -> str:
    """Load average and the busiest processes that are not ours (the machine is shared)."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) {five:.1f} (5 min)"


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]
