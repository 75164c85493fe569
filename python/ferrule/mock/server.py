"""Run the simulated upstream as a real Granian server for tests, the demo and benchmarks.

``with mock_upstream() as base_url:`` starts ``python -m ferrule.mock`` on a free loopback port in a
subprocess (its own process group), waits until ``/_mock/health`` answers, yields
``http://127.0.0.1:PORT``, and on exit stops that process by its PID (SIGTERM, then SIGKILL to
its process group if it lingers).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

import ferrule

from .options import MockOptions

__all__ = ["free_port", "mock_upstream"]

_STOP_GRACE_S = 5.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS just reported free (another process may still take it: callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        # The process group is the one started below (start_new_session): Granian's workers too.
        with contextlib.suppress(ProcessLookupError):
            if hasattr(os, "killpg"):
                os.killpg(process.pid, signal.SIGKILL)
            else:  # pragma: no cover - Windows
                process.kill()
        process.wait()


def _wait_ready(process: subprocess.Popen[bytes], url: str, deadline: float) -> bool:
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url + "/_mock/health").status_code == 200:
                    return True
            time.sleep(0.05)
    return False


@contextlib.contextmanager
def mock_upstream(
    options: MockOptions | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    startup_timeout: float = 20.0,
) -> Iterator[str]:
    """Serve the simulated upstream (one Granian worker) and yield its base URL."""
    options = options or MockOptions()
    package_root = str(Path(ferrule.__file__).resolve().parent.parent)
    env = {**os.environ, **options.to_env()}
    # The subprocess must import this same ferrule, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    attempts = 1 if port is not None else 3
    with tempfile.TemporaryFile() as log:
        for attempt in range(attempts):
            chosen = port if port is not None else free_port(host)
            url = f"http://{host}:{chosen}"
            command = [sys.executable, "-m", "ferrule.mock", "--host", host, "--port", str(chosen)]
            process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                if _wait_ready(process, url, time.monotonic() + startup_timeout):
                    yield url
                    return
            finally:
                _stop(process)
            if attempt + 1 == attempts:
                log.seek(0)
                output = log.read().decode("utf-8", "replace")[-4000:]
                raise RuntimeError(f"mock upstream did not start on {url}:\n{output}")
