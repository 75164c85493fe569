"""The release artifacts work on their own. ``make wheels`` gives an sdist and abi3 manylinux
wheels for x86_64 and aarch64 (cross-built with zig, checked by auditwheel): the x86_64 wheel
installs into a fresh venv (its locked dependencies only, no source tree) and proxies a request;
the aarch64 one, which this machine cannot run without an arm64 Python, is inspected (tags,
machine code, contents).

The wheels come from ``dist/`` when a ``make wheels`` step left them there after the last change
to the sources; otherwise this module runs ``make wheels`` into a temporary folder (about 40 s a
target on two cores with the quick profile below, in ``$CARGO_TARGET_DIR`` or a cache folder
under /tmp, never the shared ``target/``)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ferrule.procs import free_port, running_server
from servers import TEST_KEY, MockUpstream

ROOT = Path(__file__).resolve().parent.parent
X86, ARM = "x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"
SOURCES = ("Cargo.toml", "Cargo.lock", "pyproject.toml", "README.md", "rust", "python/ferrule")
EM_X86_64, EM_AARCH64 = 62, 183  # ELF e_machine

pytestmark = [
    # a cold build of both targets (tokio, hyper and rustls included) takes minutes on 2 cores
    pytest.mark.timeout(1300),
    pytest.mark.skipif(shutil.which("cargo") is None, reason="no Rust toolchain to build wheels"),
    pytest.mark.skipif(
        sys.platform != "linux" or platform.machine() != "x86_64",
        reason="the manylinux wheels are cross-built from a Linux x86_64 machine",
    ),
]


# What this module checks is the packaging (tags, contents, auditwheel, a fresh install that
# serves), not the optimiser: its own build skips fat LTO, which halves it (66 -> 38 s a target on
# two cores). `make wheels` itself, and a dist/ it left, keep the release profile of Cargo.toml.
QUICK_PROFILE = {
    "CARGO_PROFILE_RELEASE_LTO": "off",
    "CARGO_PROFILE_RELEASE_CODEGEN_UNITS": "16",
    "CARGO_PROFILE_RELEASE_OPT_LEVEL": "1",
}


@dataclass
class Artifacts:
    folder: Path
    x86: Path
    arm: Path | None  # None when the aarch64 Rust target is not installed
    sdist: Path


def _installed_targets() -> set[str]:
    if shutil.which("rustup") is None:
        return {X86}
    out = subprocess.run(
        ["rustup", "target", "list", "--installed"], capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


def _newest_source() -> float:
    newest = 0.0
    for name in SOURCES:
        top = ROOT / name
        files = [top] if top.is_file() else top.rglob("*")
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".so", ".pyc"):
                newest = max(newest, f.stat().st_mtime)
    return newest


def _find(folder: Path) -> Artifacts | None:
    x86 = sorted(folder.glob("ferrule-*-cp310-abi3-*manylinux_2_17_x86_64.whl"))
    arm = sorted(folder.glob("ferrule-*-cp310-abi3-*manylinux_2_17_aarch64.whl"))
    sdist = sorted(folder.glob("ferrule-*.tar.gz"))
    if len(x86) != 1 or len(sdist) != 1 or len(arm) > 1:
        return None
    return Artifacts(folder, x86[0], arm[0] if arm else None, sdist[0])


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    targets = [t for t in (X86, ARM) if t in _installed_targets()]
    found = _find(ROOT / "dist")
    if (
        found is not None
        and (found.arm is not None or ARM not in targets)
        and min(p.stat().st_mtime for p in found.folder.glob("ferrule-*")) > _newest_source()
    ):
        return found  # a `make wheels` step already built these sources
    out = tmp_path_factory.mktemp("dist")
    target_dir = os.environ.get("CARGO_TARGET_DIR") or str(
        Path(tempfile.gettempdir()) / "ferrule-wheels-target"
    )
    proc = subprocess.run(
        [
            "nice",
            "-n",
            "10",
            "make",
            "-s",
            "wheels",
            f"DIST={out}",
            f"WHEEL_TARGETS={' '.join(targets)}",
        ],
        cwd=ROOT,
        env={**os.environ, "CARGO_TARGET_DIR": target_dir, **QUICK_PROFILE},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    built = _find(out)
    assert built is not None, sorted(p.name for p in out.iterdir())
    return built


def _auditwheel_tag(wheel: Path) -> str:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "auditwheel"), "show", str(wheel)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    text = " ".join(out.split())
    marker = "consistent with the following platform tag: "
    assert marker in text, text
    return text.split(marker, 1)[1].split('"')[1]


def _elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1  # 64-bit, little-endian
    return int.from_bytes(data[18:20], "little")


def _wheel_meta(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as z:
        [info] = [n for n in z.namelist() if n.endswith(".dist-info/" + name)]
        return z.read(info).decode()


def test_linux_x86_64_wheel_installs_in_a_fresh_venv_and_serves(
    artifacts: Artifacts, mock: MockUpstream, tmp_path: Path
) -> None:
    wheel = artifacts.x86
    assert _auditwheel_tag(wheel) == "manylinux_2_17_x86_64"
    with zipfile.ZipFile(wheel) as z:
        assert _elf_machine(z.read("ferrule/_native.abi3.so")) == EM_X86_64
    uv = Path(sys.executable).parent / "uv"
    venv = tmp_path / "venv"
    subprocess.run([str(uv), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    # as the Dockerfile installs it: with the postgres extra, the locked versions of the
    # runtime dependencies as constraints
    subprocess.run(
        [str(uv), "pip", "install", "-q", "--python", str(python), f"{wheel}[postgres]",
         "-c", str(ROOT / "requirements-dev.lock")],
        check=True,
        timeout=600,
    )  # fmt: skip
    # runs from the installed wheel, not from the source tree
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import ferrule, ferrule.backend as b, psycopg_pool; print(ferrule.__file__, b.NAME)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    ).stdout.split()
    assert str(venv) in where[0] and where[1] == "rust"
    port = free_port()
    with running_server(
        [str(venv / "bin" / "ferrule"), "serve", "--port", str(port), "--upstream-url", mock.url],
        port,
        env={"FERRULE_DATA_DIR": str(tmp_path / "data"), "FERRULE_BACKEND": "rust"},
        log_path=str(tmp_path / "serve.log"),
    ):
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["backend"] == "rust"
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {TEST_KEY}"},
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    assert len(mock.requests()) == 1  # the answer came from the upstream, through the wheel


def test_aarch64_wheel_tags_machine_code_and_contents(artifacts: Artifacts) -> None:
    """Not run here: that needs an arm64 Python under qemu-user (a second Debian architecture's
    packages), so the wheel is checked as a file instead."""
    if artifacts.arm is None:
        pytest.skip(f"the {ARM} Rust target is not installed (`make wheels` adds it)")
    arm, x86 = artifacts.arm, artifacts.x86
    assert arm.name.endswith("-cp310-abi3-manylinux2014_aarch64.manylinux_2_17_aarch64.whl")
    tags = {line.split(": ", 1)[1] for line in _wheel_meta(arm, "WHEEL").splitlines()
            if line.startswith("Tag: ")}  # fmt: skip
    assert tags == {"cp310-abi3-manylinux2014_aarch64", "cp310-abi3-manylinux_2_17_aarch64"}
    assert "Root-Is-Purelib: false" in _wheel_meta(arm, "WHEEL")
    assert _auditwheel_tag(arm) == "manylinux_2_17_aarch64"
    with zipfile.ZipFile(arm) as za, zipfile.ZipFile(x86) as zx:
        assert _elf_machine(za.read("ferrule/_native.abi3.so")) == EM_AARCH64
        # the same package apart from the machine code and the wheel's own records
        differs = {"ferrule/_native.abi3.so"}
        names_a = {n for n in za.namelist() if ".dist-info/" not in n}
        names_x = {n for n in zx.namelist() if ".dist-info/" not in n}
        assert names_a == names_x
        assert {"ferrule/cli.py", "ferrule/_native.pyi", "ferrule/py.typed"} <= names_a
        assert [n for n in sorted(names_a - differs) if za.read(n) != zx.read(n)] == []
    assert _wheel_meta(arm, "METADATA") == _wheel_meta(x86, "METADATA")
    assert "ferrule=ferrule.cli:main" in _wheel_meta(arm, "entry_points.txt").replace(" ", "")


def test_sdist_builds_from_the_rust_and_python_sources(artifacts: Artifacts) -> None:
    with tarfile.open(artifacts.sdist) as t:
        top = artifacts.sdist.name.removesuffix(".tar.gz")
        names = {n.removeprefix(top + "/") for n in t.getnames()}
    for needed in ("pyproject.toml", "Cargo.toml", "Cargo.lock", "PKG-INFO", "rust/src/lib.rs",
                   "python/ferrule/__init__.py", "python/ferrule/py.typed"):  # fmt: skip
        assert needed in names, needed
    # nothing built or local: a pip install from the sdist compiles the extension itself
    assert not [
        n for n in names if n.endswith((".so", ".pyd")) or n.startswith(("target/", ".venv/"))
    ]
