"""The end of a pytest run names the programs whose absence skipped tests (tests/prereqs.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SAMPLE = """
import pytest

@pytest.mark.skipif(True, reason="redis-server is not installed (Debian: apt-get install -y redis-server)")
def test_redis_a(): pass

@pytest.mark.skipif(True, reason="redis-server is not installed (Debian: apt-get install -y redis-server)")
def test_redis_b(): pass

def test_nginx(): pytest.skip("nginx is not installed (.ci/run installs it)")
def test_root(): pytest.skip("needs root and mount namespaces (unshare -m)")
def test_other(): pytest.skip("a random profile was asked for")
def test_runs(): pass
"""


def _run(tmp_path: Path, body: str) -> str:
    (tmp_path / "test_sample.py").write_text(body)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "prereqs", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        # no third-party plugins (hypothesis, playwright, ...): a second or two, not ten
        env={
            **os.environ,
            "PYTHONPATH": str(Path(__file__).parent),
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        },
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_summary_names_missing_prerequisites(tmp_path: Path) -> None:
    out = _run(tmp_path, SAMPLE)
    (line,) = [x for x in out.splitlines() if x.startswith("skipped for missing prerequisites")]
    assert line == (
        "skipped for missing prerequisites: redis-server (2 tests), nginx (1 test), "
        "root (1 test) (README: What make test needs)"
    )
    assert "5 skipped" in out  # the other skip is named by -ra's list only


def test_the_suite_loads_the_plugin() -> None:
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert "-p prereqs" in pyproject
