"""``ferrule demo`` (the README's first command, ``make demo``) run as a user runs it, on both
backends: it finishes, every step prints what happened (the Responses step: a function tool call,
then a streamed ``previous_response_id`` follow-up), the savings table counts its requests, the
simulated upstream's own pacing is labelled as such, and no server and no temporary folder are
left afterwards. ``ferrule demo --serve`` leaves both servers running and ends by pointing at
``/ui``, until Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_demo_runs_every_step_and_cleans_up(backend: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ferrule.cli", "demo", "--backend", backend],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "TMPDIR": str(tmp_path), "COLUMNS": "80"},
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    head = re.search(
        r"on http://127\.0\.0\.1:(\d+)/v1 \(backend: (\w+)\), .* on http://127\.0\.0\.1:(\d+)", out
    )
    assert head, out
    assert head.group(2) == backend
    for step in ("1) plain request", "2) streamed request", "3) an agent turn", "4) Responses API"):
        assert step in out, out
    # the simulated model's per-token wait is named as the upstream's, not read as proxy overhead
    assert "the simulated model waits 15 ms before each piece of its answer, as a\nreal one" in out
    streamed = re.search(
        r"streamed total .*\((\d+) content chunks; ~(\d+) ms of it the upstream", out
    )
    assert streamed and int(streamed.group(2)) == 15 * int(streamed.group(1)), out

    # the Responses step: a tool call with the scripted arguments, then the chained, streamed answer
    step4 = out[out.index("4) Responses API") : out.index("What it cost")]
    first = re.search(r"(resp_\w+): completed, output items: \['function_call'\]", step4)
    assert first, step4
    assert 'the model calls get_weather({"city":"Lisbon"})' in step4
    assert "It is 18 °C with a clear sky in Lisbon: a fine evening for a walk." in step4
    second = re.search(
        r"(resp_\w+): completed, output items: \['message'\], usage: input=(\d+)", step4
    )
    assert second and second.group(1) != first.group(1), step4
    # the follow-up sent only the tool result; the simulated upstream rejects a tool_result with no
    # tool_use before it, so a completed answer means Ferrule rebuilt the conversation from its store
    assert int(second.group(2)) > 0
    assert f"previous_response_id: {first.group(1)}" in step4

    # four chat requests and two Responses requests, all in the demo's own ledger
    row = re.search(r"│ claude-sonnet-4-6 │\s+(\d+) │", out)
    assert row and row.group(1) == "6", out

    # the table fits the 80-column terminal it was given
    table = out[out.index("What it cost") :]
    assert all(len(line) <= 80 for line in table.splitlines()), table
    assert "ferrule demo --serve" in out  # the way to keep it running, for /ui

    # both servers were stopped with the demo, and its temporary folder is gone
    for port in (int(head.group(1)), int(head.group(3))):
        assert not _listening(port), f"port {port} still listening after the demo exited"
    assert list(tmp_path.iterdir()) == []


def test_demo_serve_keeps_running_until_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferrule.cli", "demo", "--backend", "python", "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # Ctrl-C below goes to the demo alone, as from a terminal
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 150
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Dashboard: "):
                break
        out = "".join(lines)
        # it ends by pointing at /ui of the server it left running
        dashboard = re.match(r"Dashboard: (http://127\.0\.0\.1:(\d+))/ui ", lines[-1])
        assert dashboard, out
        base, port = dashboard.group(1), int(dashboard.group(2))
        mock_port = int(re.search(r"simulated Anthropic API on http://127\.0\.0\.1:(\d+)", out)[1])
        assert "Ctrl-C stops both servers" in out
        assert re.search(r"│ claude-sonnet-4-6 │\s+6 │", out), out  # the tour's requests, counted
        # the server answers after the tour: the curl the demo suggests works
        r = httpx.post(
            f"{base}/v1/chat/completions",
            headers={"authorization": "Bearer sk-ant-demo-not-a-real-key"},
            json={"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "Hi"}]},
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"], r.text
        # the dashboard it points at is there (its sign-in page, with the admin key shown)
        ui = httpx.get(f"{base}/ui", timeout=30, follow_redirects=True)
        assert ui.status_code == 200 and "admin key" in ui.text.lower(), ui.text[:500]
        time.sleep(1)
        assert proc.poll() is None  # still running
        assert any(p.name.startswith("ferrule-demo-") for p in tmp_path.iterdir())
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest, rest
    for p in (port, mock_port):
        assert not _listening(p), f"port {p} still listening after Ctrl-C"
    assert list(tmp_path.iterdir()) == []


def test_ferrule_alone_prints_its_help() -> None:
    """A new user's first command: ``ferrule`` with no arguments lists what it can do."""
    done = subprocess.run(
        [sys.executable, "-m", "ferrule.cli"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ferrule")
    for command in ("serve", "mock-upstream", "demo", "stats", "doctor", "version"):
        assert f"    {command}" in done.stdout, done.stdout
    assert (
        "--serve"
        in subprocess.run(
            [sys.executable, "-m", "ferrule.cli", "demo", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    )


def test_demo_that_cannot_start_keeps_its_logs_and_stops_the_other_server(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ferrule.cli", "demo", "--backend", "python"],
        capture_output=True,
        text=True,
        timeout=120,
        # an invalid setting in the environment: Ferrule refuses to start, the mock starts fine
        env={**os.environ, "TMPDIR": str(tmp_path), "FERRULE_RESPONSE_CACHE": "bogus"},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    kept = re.search(r"ferrule demo: logs kept in (\S+)", done.stderr)
    assert kept, done.stderr
    folder = Path(kept.group(1))
    assert folder.parent == tmp_path
    assert (
        "FERRULE_RESPONSE_CACHE=bogus: response_cache must be"
        in (folder / "ferrule.log").read_text()
    )
    mock_log = (folder / "mock-upstream.log").read_text()
    mock_port = int(re.search(r"on http://127\.0\.0\.1:(\d+)", mock_log)[1])  # type: ignore[index]
    assert not _listening(mock_port), "the simulated upstream was left running"


def test_pip_install_brings_the_openai_sdk_the_demo_needs() -> None:
    """``pip install .`` (the README's path) must be enough for ``ferrule demo``: the SDK is a
    base dependency, not an extra (the installed metadata of an old editable install may lag,
    so the source of truth is read)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    base = [re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0] for d in project["project"]["dependencies"]]
    assert "openai" in base
    demo = (Path(__file__).parent.parent / "python" / "ferrule" / "demo.py").read_text()
    assert "ferrule[demo]" not in demo  # no "install the extra" detour left
