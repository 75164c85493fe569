"""The release artifact works on its own: ``maturin build --release`` gives one abi3 wheel, which
installs into a fresh venv (its locked dependencies only, no source tree) and proxies a request."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ferrule.procs import free_port, running_server
from servers import TEST_KEY, MockUpstream

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("cargo") is None, reason="no Rust toolchain to build the wheel")
def test_abi3_wheel_installs_in_a_fresh_venv_and_serves(mock: MockUpstream, tmp_path: Path) -> None:
    bindir = Path(sys.executable).parent
    maturin, uv = bindir / "maturin", bindir / "uv"
    out = tmp_path / "dist"
    subprocess.run(
        [str(maturin), "build", "--release", "-q", "-o", str(out)],
        cwd=ROOT,
        check=True,
        timeout=900,
    )
    [wheel] = list(out.glob("*.whl"))  # exactly one wheel
    assert "-abi3-" in wheel.name, wheel.name
    venv = tmp_path / "venv"
    subprocess.run([str(uv), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    # the locked versions of the runtime dependencies, then the wheel itself
    subprocess.run(
        [
            str(uv),
            "pip",
            "install",
            "-q",
            "--python",
            str(python),
            str(wheel),
            "-c",
            str(ROOT / "requirements-dev.lock"),
        ],
        check=True,
        timeout=600,
    )
    # runs from the installed wheel, not from the source tree
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import ferrule, ferrule.backend as b; print(ferrule.__file__, b.NAME)",
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
