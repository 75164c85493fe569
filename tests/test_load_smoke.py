"""The load benchmark's quick profile as a smoke test: every target starts, serves its load
and stops (the full profile is run by hand; its figures live in benches/RESULTS.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
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
    # the results may be committed: no machine's own folders in them
    written = [*tmp_path.glob("*.json"), *tmp_path.glob("*.md")]
    assert len(written) == 2
    for path in written:
        text = path.read_text()
        for folder in (str(ROOT), tempfile.gettempdir() + "/", str(Path.home()) + "/"):
            assert folder not in text, f"{path.name} names {folder}"


def test_recorded_paths_are_portable() -> None:
    """What the benchmark writes (a flame graph's title is py-spy's command line) names the
    repository's files relatively, the home and temp folders by name."""
    from benches.load.run import REPO, portable, portable_text

    tmp, home = Path(tempfile.gettempdir()) / "ferrule-load-x", Path.home()
    title = (
        f"{REPO}/.venv/bin/py-spy record --output {REPO}/benches/load/results/f.svg "
        f"--raw {tmp}/f.txt --venv {home}/.cache/ferrule-bench/litellm-venv"
    )
    assert portable_text(title, REPO, tmp.parent, home) == (
        ".venv/bin/py-spy record --output benches/load/results/f.svg "
        "--raw $TMPDIR/ferrule-load-x/f.txt --venv ~/.cache/ferrule-bench/litellm-venv"
    )
    assert portable(REPO / "benches") == "benches"
    assert portable("/usr/sbin/nginx") == "/usr/sbin/nginx"
