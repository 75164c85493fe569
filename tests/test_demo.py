"""``ferrule demo`` (the README's first command, ``make demo``) run as a user runs it, on both
backends: it finishes, every step prints what happened (the Responses step: a function tool call,
then a streamed ``previous_response_id`` follow-up), the savings table counts its requests, and no
server is left listening afterwards."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_demo_runs_every_step_and_cleans_up(backend: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ferrule.cli", "demo", "--backend", backend],
        capture_output=True,
        text=True,
        timeout=180,
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

    # both servers were stopped with the demo
    for port in (int(head.group(1)), int(head.group(3))):
        assert not _listening(port), f"port {port} still listening after the demo exited"
