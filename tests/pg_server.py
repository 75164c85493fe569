"""A real throwaway PostgreSQL server for tests: ``initdb`` into a fresh folder, ``postgres`` on a
free loopback port (its Unix socket in that folder too), stopped and restarted mid-test on the
same port and data, killed by its PID. Tests that need it are marked ``needs_postgres``: skipped,
never failed, when the binaries are absent (``.ci/run`` installs Debian's ``postgresql``).

``initdb`` and ``postgres`` refuse to run as root, and CI runs as root: then the server runs as
the ``postgres`` user when there is one (Debian's package creates it), else as ``nobody``, in a
folder under the system temp dir that user owns (pytest's tmp_path is root-only, 0700)."""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferrule.procs import free_port

__all__ = ["PG_BIN", "PgServer", "needs_postgres", "pg_bin_dir", "pg_server_fixture"]


def pg_bin_dir() -> str | None:
    """The folder holding ``initdb`` and ``postgres``: PATH first, else Debian's
    /usr/lib/postgresql/<version>/bin (newest version), which is not on PATH."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return os.path.dirname(os.path.realpath(found))
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    candidates.sort(key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    return os.path.dirname(candidates[-1]) if candidates else None


PG_BIN = pg_bin_dir()
needs_postgres = pytest.mark.skipif(
    PG_BIN is None,
    reason="PostgreSQL server binaries not found (Debian: apt-get install -y postgresql)",
)


def _run_as() -> pwd.struct_passwd | None:
    """The user to run the server as: None when we are not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and there is no postgres or nobody user for initdb")


# A freshly initialised cluster to copy (and who owns it), made by the session's first server.
_TEMPLATE: tuple[Path, pwd.struct_passwd | None] | None = None


class PgServer:
    """One PostgreSQL cluster in a temp folder; ``url`` reaches database ``ferrule`` over TCP."""

    def __init__(self) -> None:
        assert PG_BIN is not None
        self.bin = PG_BIN
        self.port = free_port()
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="ferrule-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self.role = "ferrule"

    @property
    def url(self) -> str:
        return f"postgresql://{self.role}@127.0.0.1:{self.port}/ferrule"

    def _popen(self, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        extra: dict[str, object] = {}
        if self.user is not None:
            extra = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            argv, env=env, cwd=self.root, **extra, **kw
        )

    def init(self) -> None:
        """initdb, once per test session: later servers copy the first one's fresh cluster
        (``cp -a`` keeps its owner), which saves an initdb per test module."""
        global _TEMPLATE
        if _TEMPLATE is not None and _TEMPLATE[1] == self.user and _TEMPLATE[0].exists():
            subprocess.run(["cp", "-a", str(_TEMPLATE[0]), str(self.data)], check=True)
            return
        self._initdb()
        root = tempfile.mkdtemp(prefix="ferrule-pg-template-")
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        template = Path(root) / "data"
        subprocess.run(["cp", "-a", str(self.data), str(template)], check=True)
        _TEMPLATE = (template, self.user)

    def _initdb(self) -> None:
        argv = [
            f"{self.bin}/initdb", "-D", str(self.data), "-U", self.role, "--auth=trust",
            "--encoding=UTF8", "--no-sync",
        ]  # fmt: skip
        proc = self._popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed: {out.decode(errors='replace')[-2000:]}")

    def start(self) -> None:
        """Start (or restart, same port and data) and wait until it accepts connections."""
        if not self.data.exists():
            self.init()
        with open(self.log, "ab") as log:
            if self.user is not None:
                os.chown(self.log, self.user.pw_uid, self.user.pw_gid)
            self.proc = self._popen(
                [
                    f"{self.bin}/postgres", "-D", str(self.data), "-p", str(self.port),
                    "-k", str(self.root), "-c", "listen_addresses=127.0.0.1",
                    # a test server: durability of the server itself is not under test
                    "-c", "fsync=off", "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off", "-c", "max_connections=200",
                    "-c", "shared_buffers=32MB",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log.read_text()[-2000:]}")
            if self._ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"postgres did not start: {self.log.read_text()[-2000:]}")

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(
                f"postgresql://{self.role}@127.0.0.1:{self.port}/postgres", connect_timeout=2
            ) as conn:
                conn.autocommit = True
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'ferrule'")
                if exists.fetchone() is None:
                    conn.execute("CREATE DATABASE ferrule")
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients are disconnected, data kept), by PID."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(name="pg_server", scope="module")
def pg_server_fixture() -> Iterator[PgServer]:
    """A started server shared by a module's tests (import ``pg_server_fixture``)."""
    server = PgServer()
    server.start()
    try:
        yield server
    finally:
        server.destroy()
