"""The Vercel AI SDK (Node: ``ai`` + ``@ai-sdk/openai-compatible``), unchanged, through a real
``ferrule serve`` in front of the simulated upstream, on both backends.

The Node side is ``tests/node/clients.test.mjs`` (``node --test``), with its dependencies pinned in
``tests/node/package-lock.json``; ``npm ci`` installs them once when ``tests/node/node_modules`` is
missing. Skipped only when ``node`` or ``npm`` is not installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from servers import TEST_KEY, Proxy

NODE_DIR = Path(__file__).parent / "node"
TEST_FILE = "clients.test.mjs"


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


@pytest.fixture(scope="module")
def node_deps() -> str:
    """The ``node`` executable, with tests/node's locked dependencies installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the Vercel AI SDK tests (not installed)")
    if not (NODE_DIR / "node_modules").is_dir():
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, "npm ci failed in tests/node\n" + _output(proc)
    return node


def test_vercel_ai_sdk(proxy: Proxy, node_deps: str) -> None:
    env = {**os.environ, "FERRULE_BASE_URL": proxy.v1, "FERRULE_API_KEY": TEST_KEY}
    proc = subprocess.run(
        [node_deps, "--test", "--test-reporter=spec", TEST_FILE],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"node --test failed on the {proxy.backend} backend\n" + _output(
        proc
    )
    passed = re.search(r"^\S* ?pass (\d+)$", proc.stdout, re.M)
    failed = re.search(r"^\S* ?fail (\d+)$", proc.stdout, re.M)
    assert passed and failed, _output(proc)
    assert int(passed[1]) >= 7 and failed[1] == "0", _output(proc)
