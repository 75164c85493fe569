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


def test_tensorzero_target_without_install(tmp_path: Path) -> None:
    """TensorZero's target (no install here): its route, its model name in bodies of the same
    size, a config whose Anthropic provider is the fake upstream, and the port it writes."""
    tomllib = pytest.importorskip("tomllib")
    import json

    from benches.load import bodies, targets

    t = targets.tensorzero(tmp_path, 12345, tmp_path / "no-venv" / "python")
    assert t.path == "/openai/v1/chat/completions"
    assert t.model == "tensorzero::model_name::claude-bench"
    cfg = tomllib.loads((tmp_path / "tensorzero" / "tensorzero.toml").read_text())
    assert cfg["gateway"]["observability"]["enabled"] is False
    provider = cfg["models"]["claude-bench"]["providers"]["anthropic"]
    assert provider["type"] == "anthropic"
    assert provider["api_base"] == "http://127.0.0.1:12345/v1/"
    assert provider["api_key_location"] == "env::FERRULE_BENCH_ANTHROPIC_KEY"
    assert t.env["FERRULE_BENCH_ANTHROPIC_KEY"] == targets.API_KEY
    assert not t.port_known()
    assert t.port_file is not None
    t.port_file.write_text("4242")
    assert t.port_known() and t.port == 4242
    written = bodies.write_all(tmp_path / "bodies", model=t.model)
    assert json.loads(written["st-2k"].read_bytes())["model"] == t.model
    assert len(written["ns-2k"].read_bytes()) == len(bodies.small(False)) == 2048
