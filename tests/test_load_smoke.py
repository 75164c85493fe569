"""The load benchmark's quick profile as a smoke test: every target starts, serves its load
and stops (the full profile is run by hand; its figures live in benches/RESULTS.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx is not installed (.ci/run installs it)"
)
@pytest.mark.skipif(
    shutil.which("cargo") is None, reason="no Rust toolchain for the load generator"
)
def test_quick_load_profile_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benches.load",
            "--profile",
            "quick",
            "--no-profile",
            "--no-results-md",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
