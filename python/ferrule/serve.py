"""``ferrule serve``: validate the config, then hand the app to Granian's ASGI server."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .config import RESOLVED_ENV, load

__all__ = ["serve"]


def serve(cli: Mapping[str, Any], config_path: str | None) -> int:
    cfg = load(cli, config_path=config_path)  # raises ConfigError before anything binds
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels
    from granian.server import Server

    # Workers are separate processes: they read the validated config from the environment.
    os.environ[RESOLVED_ENV] = cfg.to_json().decode()
    try:
        import uvloop  # noqa: F401

        loop = Loops.uvloop
    except ImportError:  # pragma: no cover - uvloop is not on Windows
        loop = Loops.asyncio
    server = Server(
        "ferrule.app:create_app",
        factory=True,
        address=cfg.host,
        port=cfg.port,
        interface=Interfaces.ASGI,
        workers=cfg.workers,
        loop=loop,
        log_level=LogLevels(cfg.log_level if cfg.log_level != "critical" else "critical"),
        websockets=False,
        # SIGTERM: Granian stops accepting and waits for in-flight requests (streams included)
        # up to this deadline; the lifespan shutdown then flushes the ledger.
        workers_kill_timeout=max(1, round(cfg.shutdown_timeout)),
        respawn_failed_workers=True,
    )
    # Prometheus multiprocess mode: every worker writes its samples to this folder and
    # /metrics on any worker sums them; a fresh folder per run.
    from .metrics import cleanup_multiprocess_dir, prepare_multiprocess_dir

    metrics_dir = prepare_multiprocess_dir()
    try:
        server.serve()
    finally:
        cleanup_multiprocess_dir(metrics_dir)
    return 0
