"""Running the Node client tests in tests/node (``node --test``) from pytest: one place for the
install step, the environment they read and how their summary is checked."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent / "node"


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


def node_with_deps() -> str:
    """The ``node`` executable, with tests/node's locked dependencies installed (skips the test
    when node or npm is missing)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the Node client tests (not installed)")
    if not (NODE_DIR / "node_modules").is_dir():
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, "npm ci failed in tests/node\n" + output(proc)
    return node


def run_node_tests(node: str, test_file: str, env: dict[str, str]) -> int:
    """Run one ``.mjs`` test file with ``env`` added; assert it passed; how many tests passed."""
    proc = subprocess.run(
        [node, "--test", "--test-reporter=spec", test_file],
        cwd=NODE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    passed = re.search(r"^\S* ?pass (\d+)$", proc.stdout, re.M)
    failed = re.search(r"^\S* ?fail (\d+)$", proc.stdout, re.M)
    assert passed and failed, output(proc)
    assert proc.returncode == 0 and failed[1] == "0", output(proc)
    return int(passed[1])
