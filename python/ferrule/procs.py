"""Start a server as a child process on a free loopback port, wait until it answers, and stop it
by its PID. Used by ``ferrule demo`` and by the end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence

__all__ = ["ServerFailed", "free_port", "running_server"]


class ServerFailed(RuntimeError):
    """The child exited or never answered; the message carries the tail of its output."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(url: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(f"server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=0.5):
                return
        except urllib.error.HTTPError:
            return  # it answered, even if with an error status
        except OSError:
            time.sleep(0.05)
    raise ServerFailed(f"server did not answer {url} in time")


@contextlib.contextmanager
def running_server(
    args: Sequence[str],
    port: int,
    *,
    ready_path: str = "/health",
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    log_path: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m ferrule.cli <args>`` (or any argv starting with an executable) until the
    block exits. Output goes to ``log_path`` (default: discarded)."""
    argv = (
        list(args)
        if args and os.path.sep in args[0]
        else [sys.executable, "-m", "ferrule.cli", *args]
    )
    full_env = {**os.environ, **(env or {})}
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(log_path or os.devnull, "ab"))
        proc = subprocess.Popen(
            argv, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            _wait_ready(f"http://127.0.0.1:{port}{ready_path}", proc, time.monotonic() + timeout)
            yield proc
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group (Granian workers included), then SIGKILL if needed."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
