"""The systems under test, each started as a child process on a free loopback port, pinned to the
proxy core, and stopped by PID (``Proc`` from benches/upstream_clients/run.py).

* ``nginx``: Debian's nginx as a ``proxy_pass`` byte pipe (config generated into the run's temp
  folder: one worker, ``proxy_buffering off``, HTTP/1.1 keep-alive pool to the upstream).
* ``pipe``: the Granian + aiohttp byte pipe of benches/upstream_clients/pipe.py (one worker,
  uvloop, aiohttp engine, pool 1,024, no disconnect watcher: the pipe as measured there).
* ``ferrule-native`` / ``ferrule-python``: ``ferrule serve --workers 1`` on each backend, default
  settings except the data folder (in the temp folder), a 1,024-connection upstream pool (the
  default 256 would queue the 1,000-stream point) and a 5 s shutdown.
* ``ferrule-keys``: ``ferrule-native`` in keys mode (``FERRULE_AUTH=keys``): the load generator
  presents a virtual key made before the start with every limit on (RPM, TPM, parallel and a
  monthly budget, all far above the load, so each request is admitted and settled in the SQLite
  quota store and nothing is refused); the operator key goes upstream.
* ``litellm``: the LiteLLM proxy, installed at benchmark time into its own venv under the cache
  folder, with one Anthropic model whose api_base is the fake upstream.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from benches.upstream_clients.run import Proc, free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PIPE_DIR = REPO / "benches" / "upstream_clients"
# Sent by the load generator to every target as ``Authorization: Bearer``: Ferrule forwards it as
# x-api-key (the fake upstream ignores it), LiteLLM checks it as its master key (it refuses to
# start without a strong one).
API_KEY = "sk-ant-bench-5f0c8e1d2b3a49678e1f0d2c3b4a59687a6b5c4d3e2f1a0b"


@dataclass
class Target:
    name: str
    description: str
    argv: list[str]
    env: dict[str, str]
    port: int
    cwd: Path = REPO
    health: str | None = None  # GET path that answers when ready (else a POST is tried)
    expect_backend: str | None = None
    ready_timeout: float = 60.0
    notes: list[str] = field(default_factory=list)
    version: str = ""
    api_key: str = API_KEY  # what the load generator presents as Authorization: Bearer

    def start(self, logdir: Path, cores: str | None) -> Proc:
        argv = (["taskset", "-c", cores] if cores else []) + self.argv
        return Proc(self.name, argv, self.env, self.cwd, logdir / f"{self.name}.log")


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    return env


def nginx(tmp: Path, up_port: int) -> Target | None:
    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if exe is None:
        return None
    port = free_port()
    root = tmp / "nginx"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(
        textwrap.dedent(
            f"""\
            worker_processes 1;
            daemon off;
            pid {root}/nginx.pid;
            error_log {root}/error.log warn;
            worker_rlimit_nofile 16384;
            events {{ worker_connections 8192; multi_accept on; }}
            http {{
              access_log off;
              client_body_temp_path {root}/body;
              proxy_temp_path {root}/proxy;
              fastcgi_temp_path {root}/fastcgi;
              uwsgi_temp_path {root}/uwsgi;
              scgi_temp_path {root}/scgi;
              client_max_body_size 64m;
              client_body_buffer_size 1m;
              keepalive_requests 100000000;
              keepalive_timeout 120s;
              upstream fast {{
                server 127.0.0.1:{up_port};
                keepalive 1024;
                keepalive_requests 100000000;
                keepalive_timeout 120s;
              }}
              server {{
                listen 127.0.0.1:{port} backlog=4096;
                location / {{
                  proxy_pass http://fast;
                  proxy_http_version 1.1;
                  proxy_set_header Connection "";
                  proxy_buffering off;
                  proxy_read_timeout 120s;
                }}
              }}
            }}
            """
        )
    )
    version = subprocess.run([exe, "-v"], capture_output=True, text=True).stderr.strip()
    return Target(
        "nginx",
        "nginx proxy_pass byte pipe (no translation)",
        [exe, "-c", str(conf), "-e", str(root / "error.log")],
        _base_env(),
        port,
        version=version.replace("nginx version: ", ""),
    )


def pipe(tmp: Path, up_port: int) -> Target:
    port = free_port()
    env = _base_env() | {
        "PIPE_ENGINE": "aiohttp",
        "UPSTREAM_URL": f"http://127.0.0.1:{up_port}",
        "PIPE_POOL": "1024",
        "PYTHONPATH": str(PIPE_DIR),
    }
    granian = str(Path(sys.executable).with_name("granian"))
    argv = [
        granian, "--interface", "asgi", "--workers", "1", "--loop", "uvloop",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "pipe:app",
    ]  # fmt: skip
    return Target(
        "pipe", "Granian + aiohttp byte pipe (no translation)", argv, env, port, cwd=PIPE_DIR
    )


def ferrule(
    tmp: Path,
    up_port: int,
    backend: str,
    workers: int = 1,
    name: str = "",
    keys: bool = False,
    limits: bool = True,
) -> Target:
    port = free_port()
    name = name or (
        "ferrule-keys" if keys else f"ferrule-{'native' if backend == 'rust' else 'python'}"
    )
    data = tmp / name / "data"
    metrics = tmp / name / "metrics"
    data.mkdir(parents=True, exist_ok=True)
    metrics.mkdir(parents=True, exist_ok=True)
    env = _base_env() | {
        "FERRULE_BACKEND": backend,
        "FERRULE_DATA_DIR": str(data),
        "FERRULE_POOL_SIZE": "1024",
        "FERRULE_SHUTDOWN_TIMEOUT": "5",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }
    for var in ("FERRULE_CONFIG", "FERRULE_PORT", "TOKENPAK_PORT", "FERRULE_UPSTREAM_URL"):
        env.pop(var, None)
    exe = str(Path(sys.executable).with_name("ferrule"))
    argv = [
        exe, "serve", "--workers", str(workers), "--port", str(port),
        "--upstream-url", f"http://127.0.0.1:{up_port}",
    ]  # fmt: skip
    notes = ["FERRULE_POOL_SIZE=1024 (default 256)"]
    api_key = API_KEY
    if keys:
        env |= {"FERRULE_AUTH": "keys", "FERRULE_UPSTREAM_API_KEY": API_KEY}
        every = {"--rpm": "10000000", "--tpm": "10000000000", "--max-parallel": "100000",
                 "--budget": "1000000", "--budget-period": "month"}  # fmt: skip
        options = every if limits else {}
        made = subprocess.run(
            [exe, "keys", "create", "--name", "bench", "--json", *(x for kv in options.items() for x in kv)],
            env=env, capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        api_key = json.loads(made.stdout)["key"]
        notes.append("FERRULE_AUTH=keys; one virtual key with " + (", ".join(
            f"{k.lstrip('-')} {v}" for k, v in options.items()) or "no limits"))  # fmt: skip
    return Target(
        name,
        f"Ferrule, {'native (Rust)' if backend == 'rust' else 'pure-Python'} backend, "
        f"{workers} worker{'s' if workers > 1 else ''}"
        + ((", keys mode, every limit on" if limits else ", keys mode, no limits") if keys else ""),
        argv,
        env,
        port,
        health="/health",
        expect_backend=backend,
        notes=notes,
        api_key=api_key,
    )


def litellm_install(cache: Path, log: Path) -> tuple[Path | None, str]:
    """The LiteLLM proxy in its own venv under ``cache`` (installed when missing): (exe, note)."""
    venv = cache / "litellm-venv"
    exe = venv / "bin" / "litellm"
    py = venv / "bin" / "python"
    marker = venv / ".bytecode-compiled"
    if exe.exists() and marker.exists():
        return exe, "cached venv"
    how = "cached venv, byte-compiled now" if exe.exists() else "installed now"
    uv = Path(sys.executable).with_name("uv")
    with log.open("ab") as out:

        def run(argv: list[str], timeout: float, check: bool = True) -> None:
            subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=check, timeout=timeout)

        try:
            if not exe.exists():
                if uv.exists():
                    make = [str(uv), "venv", "-q", "--python", sys.executable, str(venv)]
                    install = [str(uv), "pip", "install", "-q", "--python", str(py)]
                else:
                    make = [sys.executable, "-m", "venv", str(venv)]
                    install = [str(py), "-m", "pip", "install", "-q"]
                run(make, 120)
                run([*install, "litellm[proxy]"], 900)
            # Byte-compile as pip does by default (uv does not, and this machine sets
            # PYTHONDONTWRITEBYTECODE): this LiteLLM retries a failing import (its OpenTelemetry
            # logger, whose SDK `litellm[proxy]` lacks) on every request, and without .pyc files
            # it would recompile that module's source each time.
            run([str(py), "-m", "compileall", "-q", "-j", "0", str(venv / "lib")], 900, False)
            marker.touch()
        except (subprocess.SubprocessError, OSError) as exc:
            shutil.rmtree(venv, ignore_errors=True)
            return None, f"install failed ({type(exc).__name__}; see {log})"
    return (exe, how) if exe.exists() else (None, "install produced no litellm")


def litellm(tmp: Path, up_port: int, exe: Path) -> Target:
    port = free_port()
    root = tmp / "litellm"
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "config.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""\
            model_list:
              - model_name: claude-sonnet-4-6
                litellm_params:
                  model: anthropic/claude-sonnet-4-6
                  api_base: http://127.0.0.1:{up_port}
                  api_key: {API_KEY}
            litellm_settings:
              telemetry: false
              drop_params: true
            general_settings:
              master_key: {API_KEY}
            """
        )
    )
    env = _base_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env |= {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "HOME": str(root),
    }
    version = ""
    try:
        out = subprocess.run(
            [str(exe.with_name("python")), "-c",
             "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        version = out.stdout.strip()
    except (subprocess.SubprocessError, OSError):
        pass
    argv = [
        str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
        "--num_workers", "1",
    ]  # fmt: skip
    return Target(
        "litellm",
        "LiteLLM proxy (translating), 1 worker",
        argv,
        env,
        port,
        cwd=root,
        health="/health/liveliness",
        ready_timeout=180.0,
        version=version,
    )
