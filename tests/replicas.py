"""Several ``ferrule serve`` replicas started side by side, and nginx in front of them: the
multi-replica topology of docs/deploy.md, for the tests that run it."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from ferrule.procs import free_port
from servers import start_proxy


@contextlib.contextmanager
def replicas(
    backend: str, upstream: str, logs: Sequence[str], envs: Sequence[dict[str, str]], *extra: str
) -> Iterator[list[str]]:
    """One replica per log file (with its env), started in parallel: their URLs."""
    n = len(logs)
    with contextlib.ExitStack() as stack:
        started: list[Any] = [None] * n

        def start(i: int) -> None:
            cm = start_proxy(backend, upstream, logs[i], *extra, env=envs[i])
            try:
                started[i] = (cm, cm.__enter__())
            except BaseException as exc:
                started[i] = exc

        threads = [threading.Thread(target=start, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for item in started:
            if isinstance(item, tuple):
                stack.push(item[0].__exit__)
        for item in started:
            if not isinstance(item, tuple):
                raise RuntimeError(f"a replica did not start: {item!r}")
        yield [item[1].url for item in started]


@contextlib.contextmanager
def nginx_in_front(nginx: str, conf: Path, root: Path) -> Iterator[str]:
    """nginx running ``conf`` (see test_postgres_outage.nginx_conf): its URL once it answers."""
    proc = subprocess.Popen(
        [nginx, "-c", str(conf), "-e", str(root / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port = int(conf.read_text().split("listen 127.0.0.1:", 1)[1].split(";", 1)[0])
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


__all__ = ["free_port", "nginx_in_front", "replicas"]
