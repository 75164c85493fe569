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
* ``tensorzero``: the TensorZero gateway (Rust), installed at benchmark time from PyPI
  (``tensorzero``) into its own venv under the cache folder. The wheel ships no gateway binary:
  its native module carries the gateway, which ``tensorzero._start_http_gateway`` (what the
  package's ``patch_openai_client`` uses) serves over HTTP from the Python process, on a port of
  its own choosing on 127.0.0.1, with the OpenAI-compatible routes only (``/openai/v1/...``).
  A small launcher (written into the temp folder) starts it with a generated
  ``tensorzero.toml`` (one model, ``claude-bench``, an ``anthropic`` provider whose api_base is
  the fake upstream's ``/v1/``, its key from an environment variable; observability and usage
  analytics off, so no ClickHouse or Postgres) and writes the port into a file that the runner
  reads. Requests go to ``/openai/v1/chat/completions`` with the model
  ``tensorzero::model_name::claude-bench``. Its server leaves Nagle's algorithm on (no
  TCP_NODELAY), which bounds its streams by the client's delayed ACK (README.md).

Neither LiteLLM nor TensorZero is a dependency of Ferrule: they are comparisons, installed only
here and never into the project's venv.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from benches.upstream_clients.run import Proc, free_port

from . import bodies

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PIPE_DIR = REPO / "benches" / "upstream_clients"
# Sent by the load generator to every target as ``Authorization: Bearer``: Ferrule forwards it as
# x-api-key (the fake upstream ignores it), LiteLLM checks it as its master key (it refuses to
# start without a strong one), TensorZero ignores it (its auth is off; its key comes from its env).
API_KEY = "sk-ant-bench-5f0c8e1d2b3a49678e1f0d2c3b4a59687a6b5c4d3e2f1a0b"
CHAT_PATH = "/v1/chat/completions"  # where the load generator posts, unless a target says else


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
    path: str = CHAT_PATH  # the target's Chat Completions route
    model: str = bodies.MODEL  # the model the request bodies name
    # A target that picks its own port writes it here once it listens (``port`` is 0 until then).
    port_file: Path | None = None

    def start(self, logdir: Path, cores: str | None) -> Proc:
        argv = (["taskset", "-c", cores] if cores else []) + self.argv
        return Proc(self.name, argv, self.env, self.cwd, logdir / f"{self.name}.log")

    def port_known(self) -> bool:
        """Whether ``port`` is known: always, unless the target has yet to write its port file."""
        if self.port_file is not None and not self.port:
            with contextlib.suppress(OSError, ValueError):
                self.port = int(self.port_file.read_text().strip() or 0)
        return self.port > 0


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


def _venv_install(
    venv: Path, requirement: str, exe: Path, log: Path, byte_compile: bool = False
) -> tuple[Path | None, str]:
    """``requirement`` in its own venv (installed when missing, with uv when the project's venv
    has it, else venv + pip): (exe, note), exe None when the install failed."""
    py = venv / "bin" / "python"
    installed = venv / ".installed"  # the requirement is in
    compiled = venv / ".bytecode-compiled"  # ... and byte-compiled (LiteLLM's venvs had only this)
    if exe.exists() and (compiled if byte_compile else installed).exists():
        return exe, "cached venv"
    how = "cached venv, byte-compiled now"
    uv = Path(sys.executable).with_name("uv")
    with log.open("ab") as out:

        def run(argv: list[str], timeout: float, check: bool = True) -> None:
            subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=check, timeout=timeout)

        try:
            if not exe.exists() or not (installed.exists() or compiled.exists()):
                how = "installed now"
                if uv.exists():
                    make = [str(uv), "venv", "-q", "--python", sys.executable, str(venv)]
                    install = [str(uv), "pip", "install", "-q", "--python", str(py)]
                else:
                    make = [sys.executable, "-m", "venv", str(venv)]
                    install = [str(py), "-m", "pip", "install", "-q"]
                if not py.exists():
                    run(make, 120)
                run([*install, requirement], 900)
                installed.touch()
            if byte_compile:
                run([str(py), "-m", "compileall", "-q", "-j", "0", str(venv / "lib")], 900, False)
                compiled.touch()
        except (subprocess.SubprocessError, OSError) as exc:
            shutil.rmtree(venv, ignore_errors=True)
            return None, f"install failed ({type(exc).__name__}; see {log})"
    return (exe, how) if exe.exists() else (None, f"install produced no {exe.name}")


def _venv_version(py: Path, dist: str) -> str:
    """The installed version of the distribution ``dist`` in the venv of ``py`` ('' if unknown)."""
    try:
        out = subprocess.run(
            [str(py), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except (subprocess.SubprocessError, OSError):
        return ""
    return out.stdout.strip()


def litellm_install(cache: Path, log: Path) -> tuple[Path | None, str]:
    """The LiteLLM proxy in its own venv under ``cache`` (installed when missing): (exe, note)."""
    venv = cache / "litellm-venv"
    # Byte-compiled as pip does by default (uv does not, and this machine sets
    # PYTHONDONTWRITEBYTECODE): this LiteLLM retries a failing import (its OpenTelemetry logger,
    # whose SDK `litellm[proxy]` lacks) on every request, and without .pyc files it would
    # recompile that module's source each time.
    return _venv_install(venv, "litellm[proxy]", venv / "bin" / "litellm", log, byte_compile=True)


def _config_file(tmp: Path, target: str, name: str, text: str) -> Path:
    """``text`` (dedented) as ``name`` in the target's own folder of the run's temp folder."""
    root = tmp / target
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(textwrap.dedent(text))
    return path


def litellm(tmp: Path, up_port: int, exe: Path) -> Target:
    port = free_port()
    cfg = _config_file(
        tmp,
        "litellm",
        "config.yaml",
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
            """,
    )
    root = cfg.parent
    env = _base_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env |= {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "HOME": str(root),
    }
    version = _venv_version(exe.with_name("python"), "litellm")
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


TENSORZERO_MODEL = "claude-bench"
# TensorZero's own default log filter (gateway.debug off), with the per-request warning about the
# bodies' OpenAI `user` field (which it ignores) silenced: logging it is no part of proxying.
TENSORZERO_LOG = (
    "warn,gateway=info,tensorzero_core=info,tensorzero_core::endpoints::openai_compatible=error"
)
# Run with the TensorZero venv's Python: the gateway (the wheel's native module) served over HTTP
# on 127.0.0.1 and a port the gateway picks, written into the port file once it listens.
TENSORZERO_LAUNCHER = """\
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

from tensorzero import _start_http_gateway

config, port_file = sys.argv[1], Path(sys.argv[2])
# SIGTERM and SIGINT are left to sigwait below, in every thread the gateway's runtime starts
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
gateway = _start_http_gateway(
    config_file=config, clickhouse_url=None, postgres_url=None, valkey_url=None,
    async_setup=False,
)
print(f"TensorZero gateway on {gateway.base_url}", flush=True)
tmp = port_file.with_suffix(".tmp")
tmp.write_text(str(urlsplit(gateway.base_url).port))
tmp.replace(port_file)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
gateway.close()
"""


def tensorzero_install(cache: Path, log: Path) -> tuple[Path | None, str]:
    """TensorZero (the PyPI package, which carries the gateway) in its own venv under ``cache``
    (installed when missing): (the venv's python, note)."""
    venv = cache / "tensorzero-venv"
    return _venv_install(venv, "tensorzero", venv / "bin" / "python", log)


def tensorzero(tmp: Path, up_port: int, exe: Path) -> Target:
    cfg = _config_file(
        tmp,
        "tensorzero",
        "tensorzero.toml",
        f"""\
            [gateway]
            observability.enabled = false
            disable_pseudonymous_usage_analytics = true

            [models.{TENSORZERO_MODEL}]
            routing = ["anthropic"]

            [models.{TENSORZERO_MODEL}.providers.anthropic]
            type = "anthropic"
            model_name = "{bodies.MODEL}"
            api_base = "http://127.0.0.1:{up_port}/v1/"
            api_key_location = "env::FERRULE_BENCH_ANTHROPIC_KEY"
            """,
    )
    root = cfg.parent
    launcher = root / "gateway.py"
    launcher.write_text(TENSORZERO_LAUNCHER)
    port_file = root / "port"
    port_file.unlink(missing_ok=True)
    # no ClickHouse, Postgres or Valkey URL (nor anything else) from the caller's environment
    env = {k: v for k, v in _base_env().items() if not k.startswith("TENSORZERO_")}
    env |= {"FERRULE_BENCH_ANTHROPIC_KEY": API_KEY, "RUST_LOG": TENSORZERO_LOG}
    return Target(
        "tensorzero",
        "TensorZero gateway (Rust, translating), embedded in its Python package",
        [str(exe), str(launcher), str(cfg), str(port_file)],
        env,
        0,
        cwd=root,
        version=_venv_version(exe, "tensorzero"),
        notes=[
            "tensorzero._start_http_gateway (no gateway binary in the wheel); observability and "
            "usage analytics off",
            "log filter: TensorZero's default less its per-request warning on the ignored `user` "
            "field",
        ],
        path="/openai/v1/chat/completions",
        model=f"tensorzero::model_name::{TENSORZERO_MODEL}",
        port_file=port_file,
    )
