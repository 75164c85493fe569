"""docs/deploy.md works as written: its marked command blocks run here (a single host; two
replicas behind nginx with PostgreSQL and Redis, serving through nginx to the simulated
upstream), the Kubernetes manifests pass the API schema of a fixed Kubernetes version and agree
with Ferrule and the image, and the Dockerfile is checked statically (no Docker daemon here or in
CI), its health check command run for real.

A block is the fenced code after a ``<!-- test: NAME -->`` line. It runs in bash with the venv's
``ferrule`` first on PATH; only these literals are mapped to the test's own: the ports (free
ones, or the throwaway PostgreSQL's and redis-server's), ``/tmp/ferrule-rehearsal`` and
``/var/lib/ferrule`` (fresh folders)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from ferrule.config import ConfigError, load
from ferrule.ledger import ledger_path
from ferrule.procs import free_port, running_server
from pg_server import PG_BIN, PgServer, needs_postgres
from redis_server import RedisServer, needs_redis
from servers import TEST_KEY, MockUpstream

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "deploy.md"
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.33.0"  # fixed: a new kubernetes-validate release must not change the verdict
BIN = Path(sys.executable).parent
CHAT = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "Hello"}]}

needs_nginx = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx is not installed (.ci/run installs it)"
)
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


# -- the document's blocks ----------------------------------------------------------------------


def doc_block(name: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(rf"<!-- test: {re.escape(name)} -->\n```[a-z]*\n(.*?)\n```", text, re.S)
    assert found, f"docs/deploy.md has no block marked {name!r}"
    return found.group(1)


class Mapped:
    """The doc's literals -> this test's ports and folders."""

    def __init__(self, ports: dict[int, int], folders: dict[str, str]) -> None:
        self.ports, self.folders = ports, folders

    def __call__(self, script: str) -> str:
        for doc_port, port in self.ports.items():
            script = re.sub(rf"(?<![0-9]){doc_port}(?![0-9])", str(port), script)
        for doc_path, path in self.folders.items():
            script = script.replace(doc_path, path)
        return script


def _shell_env() -> dict[str, str]:
    """The caller's environment without Ferrule's settings, the venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRULE_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}{os.pathsep}/usr/sbin"
    env.pop("VIRTUAL_ENV", None)
    return env


def run_block(script: str, env: dict[str, str], timeout: float = 60) -> str:
    proc = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{script}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return proc.stdout


@contextlib.contextmanager
def block_server(
    script: str, port: int, env: dict[str, str], log: Path, ready: str = "/health/liveness"
) -> Iterator[None]:
    """A block whose last command stays in the foreground: run until the test is done, then
    SIGTERM its process group (bash and what it started)."""
    with running_server(
        ["/bin/bash", "-c", "set -euo pipefail\n" + script],
        port,
        ready_path=ready,
        env=env,
        log_path=str(log),
        timeout=60,
    ):
        yield


# -- one host -----------------------------------------------------------------------------------


def test_single_host_block_serves_with_its_data_folder(mock: MockUpstream, tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "var-lib-ferrule"
    mapped = Mapped({8766: port}, {"/var/lib/ferrule": str(data)})
    env = {**_shell_env(), "FERRULE_UPSTREAM_URL": mock.url}
    base = f"http://127.0.0.1:{port}"
    # `ferrule doctor` runs first: with `set -e` a failed check would stop the block
    with block_server(mapped(doc_block("single-host")), port, env, tmp_path / "serve.log"):
        _check_health_routes(base)
        r = httpx.post(
            base + "/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {TEST_KEY}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"]
    # the workers shared the documented data folder: the ledger and the generated secret (0600)
    assert ledger_path(data).is_file()
    assert (data / "secret.key").stat().st_mode & 0o777 == 0o600


def _check_health_routes(base: str) -> None:
    """The doc's table of health routes, as documented: no key needed, these bodies."""
    live = httpx.get(base + "/health/liveness")
    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    ready = httpx.get(base + "/health/readiness")
    assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
    assert {"not_draining", "ledger_writable"} <= set(ready.json()["checks"])
    for path in ("/health", "/healthz"):
        health = httpx.get(base + path)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert {"backend", "version"} <= set(health.json())
    table = DOC.read_text(encoding="utf-8").split("## Health routes", 1)[1].split("\n## ", 1)[0]
    for route in ("/health/liveness", "/health/readiness", "/health`", "/healthz"):
        assert route in table, route


# -- many replicas ------------------------------------------------------------------------------


def _metric_total(base: str, name: str, key: str) -> float:
    text = httpx.get(base + "/metrics", headers={"authorization": f"Bearer {key}"}).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


@needs_postgres
@needs_redis
@needs_nginx
@needs_curl
def test_two_replicas_behind_nginx_as_documented(tmp_path: Path) -> None:
    assert PG_BIN is not None
    pg, redis = PgServer(), RedisServer()
    # nginx's workers run as nobody when started by root: a folder they may enter
    folder = Path(tempfile.mkdtemp(prefix="ferrule-rehearsal-"))
    folder.chmod(0o755)
    try:
        pg.start()
        redis.start()
        ports = {8780: free_port(), 8781: free_port(), 8782: free_port(), 9000: free_port()}
        mapped = Mapped(
            {**ports, 5432: pg.port, 6379: redis.port},
            {"/tmp/ferrule-rehearsal": str(folder)},
        )
        _rehearse(mapped, ports, folder, tmp_path)
    finally:
        redis.kill()
        pg.destroy()
        shutil.rmtree(folder, ignore_errors=True)


def _rehearse(mapped: Mapped, ports: dict[int, int], folder: Path, logs: Path) -> None:
    env = _shell_env()
    shared = mapped(doc_block("rehearsal-env")) + "\n"
    run_block(mapped(doc_block("rehearsal-setup")), env)
    nginx, r1, r2, up = (f"http://127.0.0.1:{ports[p]}" for p in (8780, 8781, 8782, 9000))
    with contextlib.ExitStack() as stack:
        for name, port, ready in (
            ("rehearsal-mock", ports[9000], "/v1/models"),
            ("rehearsal-replica-1", ports[8781], "/health/liveness"),
            ("rehearsal-replica-2", ports[8782], "/health/liveness"),
        ):
            script = shared + mapped(doc_block(name))
            stack.enter_context(block_server(script, port, env, logs / f"{name}.log", ready))
        run_block(shared + mapped(doc_block("rehearsal-nginx-conf")), env)
        stack.enter_context(
            block_server(
                shared + mapped(doc_block("rehearsal-nginx")), ports[8780], env, logs / "nginx.log"
            )
        )
        # the doc's own check: readiness and a chat completion, through nginx, with curl
        out = run_block(shared + mapped(doc_block("rehearsal-check")), env)
        assert '"status":"ready"' in out and '"redis_reachable":true' in out, out
        assert '"object":"chat.completion"' in out, out

        key = _exported(shared, "FERRULE_ACCESS_KEY")
        auth = {"authorization": f"Bearer {key}"}
        with httpx.Client(timeout=30, headers=auth) as c:
            for i in range(8):
                r = c.post(nginx + "/v1/chat/completions", json={**CHAT, "user": f"u{i}"})
                assert r.status_code == 200, r.text
            # nginx spread them: both replicas served some
            served = [_metric_total(b, "ferrule_requests_total", key) for b in (r1, r2)]
            assert all(n >= 1 for n in served), served
            # a stored Responses item, made through nginx, read on each replica: one sealing
            # secret and one store (Redis) for the fleet
            made = c.post(nginx + "/v1/responses", json={"model": CHAT["model"],
                                                         "input": "Hello", "store": True})  # fmt: skip
            assert made.status_code == 200, made.text
            rid = made.json()["id"]
            for base in (r1, r2):
                got = c.get(f"{base}/v1/responses/{rid}")
                assert got.status_code == 200 and got.json()["id"] == rid, (base, got.text)
            # ...which is why the secret must be shared: a replica with its own cannot open it
            _other_secret_cannot_read(shared, mapped, env, logs, c, rid)

        # the ledger in PostgreSQL: one row per upstream call the mock saw, from both replicas
        recorded = httpx.get(up + "/_mock/requests").json()
        upstream_calls = sum(
            1 for q in recorded if (q["method"], q["path"]) == ("POST", "/v1/messages")
        )
        stats_env = {**env, **_exports(shared)}
        totals: dict[str, Any] = {}
        deadline = time.monotonic() + 15  # the writers batch their rows
        while time.monotonic() < deadline:
            totals = _stats_json(stats_env)
            if totals.get("requests") == upstream_calls:
                break
            time.sleep(0.2)
        # curl's request, 8 chat completions, 1 Responses request
        assert totals.get("requests") == upstream_calls == 10, (totals, upstream_calls)
        # and the doc's `ferrule stats` shows them
        out = run_block(shared + mapped(doc_block("rehearsal-stats")), env)
        assert "claude-sonnet-4-6" in out, out


def _other_secret_cannot_read(
    shared: str, mapped: Mapped, env: dict[str, str], logs: Path, c: httpx.Client, rid: str
) -> None:
    port = free_port()
    script = (
        shared
        + "export FERRULE_SECRET_KEY=\"$(python3 -c 'import secrets; print(secrets.token_hex(32))')\"\n"
        + mapped(doc_block("rehearsal-replica-2")).replace("replica-2", "replica-3")
    )
    script = re.sub(r"--port \d+", f"--port {port}", script)
    with block_server(script, port, env, logs / "replica-3.log"):
        got = c.get(f"http://127.0.0.1:{port}/v1/responses/{rid}")
        assert got.status_code != 200, got.text


def _exports(script: str) -> dict[str, str]:
    out = subprocess.run(
        ["bash", "-c", script + "\nenv -0"], capture_output=True, check=True, env=_shell_env()
    ).stdout.decode()
    pairs = (item.split("=", 1) for item in out.split("\0") if "=" in item)
    return {k: v for k, v in pairs if k.startswith("FERRULE_")}


def _exported(script: str, name: str) -> str:
    return _exports(script)[name]


def _stats_json(env: dict[str, str]) -> dict[str, Any]:
    import json

    proc = subprocess.run(
        [str(BIN / "ferrule"), "stats", "--since", "1h", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    totals: dict[str, Any] = json.loads(proc.stdout)["totals"]
    return totals


# -- Kubernetes ---------------------------------------------------------------------------------


def _manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return docs


def _kind(kind: str) -> dict[str, Any]:
    [found] = [d for d in _manifests() if d["kind"] == kind]
    return found


def test_k8s_manifests_pass_the_api_schema() -> None:
    docs = _manifests()
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment", "Secret", "Service"]
    for doc in docs:
        # strict: an unknown or misspelt field (e.g. "readinessProbes") is an error
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    bad = _kind("Deployment")
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


@pytest.fixture(scope="module")
def k8s_ferrule(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``ferrule serve`` with the ConfigMap's and the Secret's settings, except: loopback (the
    tests stay off the network), a local data folder, one worker, no PostgreSQL/Redis (their
    URLs name cluster services). Yields its port."""
    env = {**_kind("ConfigMap")["data"], **_kind("Secret")["stringData"]}
    for name in ("FERRULE_DATABASE_URL", "FERRULE_REDIS_URL"):
        env.pop(name)
    port = free_port()
    tmp = tmp_path_factory.mktemp("k8s")
    env |= {"FERRULE_HOST": "127.0.0.1", "FERRULE_PORT": str(port),
            "FERRULE_DATA_DIR": str(tmp / "data"), "FERRULE_WORKERS": "1"}  # fmt: skip
    with running_server(["serve"], port, env=env, log_path=str(tmp / "serve.log")):
        yield port


def test_k8s_manifests_agree_with_ferrule_and_the_image(k8s_ferrule: int) -> None:
    dep, svc = _kind("Deployment"), _kind("Service")
    cfg, secret = _kind("ConfigMap")["data"], _kind("Secret")["stringData"]
    pod = dep["spec"]["template"]
    [box] = pod["spec"]["containers"]
    # the pieces refer to each other by the right names
    assert {e.get("configMapRef", e.get("secretRef"))["name"] for e in box["envFrom"]} == {
        _kind("ConfigMap")["metadata"]["name"],
        _kind("Secret")["metadata"]["name"],
    }
    labels = pod["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [port] = box["ports"]
    assert port["containerPort"] == int(cfg["FERRULE_PORT"])
    assert svc["spec"]["ports"][0]["targetPort"] == port["name"]
    # non-root, as the image's user; the grace period covers Ferrule's shutdown drain
    sc = pod["spec"]["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == _dockerfile_uid()
    assert box["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(cfg["FERRULE_SHUTDOWN_TIMEOUT"])
    assert box["resources"]["requests"] and box["resources"]["limits"]
    mounts = {m["mountPath"] for m in box["volumeMounts"]}
    assert cfg["FERRULE_DATA_DIR"] in mounts  # the root filesystem is read-only
    # the settings load: the public bind is accepted because the Secret has an access key...
    env = {**cfg, **secret}
    assert load(env=env).host == "0.0.0.0"
    with pytest.raises(ConfigError, match="non-loopback address needs an access key"):
        load(env={k: v for k, v in env.items() if k != "FERRULE_ACCESS_KEY"})
    # ...and a Ferrule with them (on loopback, with a local data folder) answers the probes
    probes = {name: box[name]["httpGet"]["path"] for name in
              ("livenessProbe", "readinessProbe", "startupProbe")}  # fmt: skip
    assert probes["readinessProbe"] == "/health/readiness"
    assert probes["livenessProbe"] == "/health/liveness"
    for path in probes.values():
        assert httpx.get(f"http://127.0.0.1:{k8s_ferrule}{path}").status_code == 200, path


# -- the container image ------------------------------------------------------------------------


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


def _dockerfile_uid() -> int:
    users = re.findall(r"^USER\s+(\S+)", _dockerfile(), re.M)
    assert len(users) == 1, users
    return int(users[0].split(":")[0])


def _stages() -> list[tuple[str, str]]:
    return re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)", _dockerfile(), re.M)


def test_dockerfile_builds_the_make_wheels_wheel_and_runs_it_as_non_root() -> None:
    text = _dockerfile()
    stages = _stages()
    assert [name for _, name in stages] == ["builder", "runtime"]  # multi-stage, runtime last
    assert "slim" in stages[1][0]
    assert _dockerfile_uid() != 0
    # the builder's maturin flags are the ones `make wheels` uses
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for flag in ("--release", "--locked", "--zig", "--compatibility manylinux_2_17"):
        assert flag in makefile.split("\nwheels:", 1)[1].split("\n\n", 1)[0], flag
        assert flag in text.split(" AS builder", 1)[1].split("\nFROM ", 1)[0], flag
    # the wheel the runtime installs: the builder's -o folder, a name `make wheels` produces
    out = re.search(r"maturin build [^\n]*-o (\S+)", text)
    assert out is not None
    copy = re.search(r"COPY --from=builder /src/(\S+?)/? (\S+)", text)
    assert copy is not None and copy.group(1) == out.group(1)
    pattern = re.search(r'ls /tmp/dist/(\S+\.whl)\)"', text)
    assert pattern is not None
    import fnmatch

    for arch in ("x86_64", "aarch64"):
        made = f"ferrule-0.1.0-cp310-abi3-manylinux2014_{arch}.manylinux_2_17_{arch}.whl"
        assert fnmatch.fnmatch(made, pattern.group(1)), made
    assert not fnmatch.fnmatch("ferrule-0.1.0.tar.gz", pattern.group(1))
    # the pinned build tools are the locked ones
    lock = (ROOT / "requirements-dev.lock").read_text(encoding="utf-8")
    for pin in re.findall(r"\b(maturin|ziglang)==(\S+)", text):
        assert f"{pin[0]}=={pin[1]}\n" in lock, pin
    # nothing the builder copies is excluded by .dockerignore, and the big folders are
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for item in src.split():
            assert item not in ignored and (ROOT / item).exists(), item
    assert {".git", ".venv", "target", "dist", "**/*.so"} <= set(ignored)


def test_dockerfile_env_binds_publicly_only_with_an_access_key(tmp_path: Path) -> None:
    runtime = _dockerfile().split(" AS runtime", 1)[1]
    env_block = re.search(r"^ENV ((?:.*\\\n)*.*)$", runtime, re.M)
    assert env_block is not None
    image_env = dict(re.findall(r"(\w+)=(\S+)", env_block.group(1)))
    assert image_env["FERRULE_HOST"] == "0.0.0.0"
    env = {**_shell_env(), **image_env, "FERRULE_DATA_DIR": str(tmp_path)}
    # no access key: refused before anything binds, with the reason
    proc = subprocess.run(
        [str(BIN / "ferrule"), "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert "refusing to bind 0.0.0.0" in proc.stderr and "access key" in proc.stderr
    with pytest.raises(ConfigError):
        load(env=image_env)
    assert load(env={**image_env, "FERRULE_ACCESS_KEY": "k" * 16}).host == "0.0.0.0"


def test_dockerfile_healthcheck_command_probes_liveness(k8s_ferrule: int) -> None:
    found = re.search(r"^HEALTHCHECK .*\\\n\s+CMD (\[.*\])$", _dockerfile(), re.M)
    assert found is not None
    argv: list[str] = yaml.safe_load(found.group(1))  # exec form is a JSON array
    assert argv[0] == "python"
    argv[0] = sys.executable
    # a running Ferrule: healthy; nothing listening on the port: unhealthy
    for port, healthy in ((k8s_ferrule, True), (free_port(), False)):
        env = {**_shell_env(), "FERRULE_PORT": str(port)}
        code = subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode
        assert (code == 0) is healthy, (port, code)


def _docker_usable() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _docker_usable(), reason="no usable Docker daemon here (checked above)")
def test_docker_build_and_run(tmp_path: Path) -> None:  # pragma: no cover - no daemon in CI
    tag = "ferrule-test:deploy"
    subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, timeout=1800)
    out = subprocess.run(
        ["docker", "run", "--rm", tag, "version"], capture_output=True, text=True, check=True
    )
    assert "backend: rust" in out.stdout


# -- the release workflow -----------------------------------------------------------------------


def test_release_workflow_builds_every_platform_like_make_wheels() -> None:
    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    jobs = flow["jobs"]
    built: dict[str, list[str]] = {}
    for name, job in jobs.items():
        targets = job.get("strategy", {}).get("matrix", {})
        listed = targets.get("target") or [i["target"] for i in targets.get("include", [])]
        for step in job["steps"]:
            if step.get("uses", "").startswith("PyO3/maturin-action@"):
                w = step["with"]
                for target in listed or [w.get("target", "")]:
                    built.setdefault(name, []).append(f"{w.get('command', 'build')} {target}")
                if name == "linux":  # the same flags as `make wheels` (manylinux_2_17 via zig)
                    for flag in (
                        "--release",
                        "--locked",
                        "--zig",
                        "--compatibility manylinux_2_17",
                    ):
                        assert flag in w["args"], flag
                # the locked maturin
                assert (
                    f"maturin=={w['maturin-version']}\n"
                    in (ROOT / "requirements-dev.lock").read_text()
                )
    assert sorted(built["linux"]) == [
        "build aarch64-unknown-linux-gnu",
        "build x86_64-unknown-linux-gnu",
    ]
    assert sorted(built["macos"]) == ["build aarch64-apple-darwin", "build x86_64-apple-darwin"]
    assert built["windows"] == ["build x86_64-pc-windows-msvc"]
    assert built["sdist"] == ["sdist "]
    assert set(jobs["publish"]["needs"]) == {"linux", "macos", "windows", "sdist"}
    assert flow[True]["push"]["tags"] == ["v*"]  # YAML 1.1 reads the key `on` as True
