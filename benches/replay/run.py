"""Replay the public agent transcripts through Ferrule, turn by turn, as the agents sent them,
then print ``ferrule stats`` for the run.

Request k of a session carries the first k turns (each request a prefix of the next), with the
session's tools, against the simulated Anthropic upstream (which simulates the prompt cache from
the ``cache_control`` breakpoints Ferrule places). Usage numbers are the simulator's estimates, so
the table shows what Ferrule's placement, compression and accounting do, not a real bill.

    .venv/bin/python benches/replay/run.py [--sessions 20] [--backend rust]

Reads ../shared/corpus/ (tau-bench airline); exits 0 with a note when it is absent."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from ferrule.ledger import ledger_path
from ferrule.procs import free_port, running_server
from ferrule.stats_cli import render_text, stats_json

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"


def requests_of(session: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The prefixes an agent sent: one request per assistant turn, with everything before it."""
    return [session[:i] for i, m in enumerate(session) if m.get("role") == "assistant" and i > 0]


def clean(msg: dict[str, Any]) -> dict[str, Any]:
    keep = {"role", "content", "tool_calls", "tool_call_id", "name"}
    out = {k: v for k, v in msg.items() if k in keep and v is not None}
    if out.get("role") == "tool":
        out.pop("name", None)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--backend", default="rust")
    args = ap.parse_args()
    path = CORPUS / "tau-bench-airline-even.json"
    if not path.exists():
        print(f"{path} not found: nothing to replay")
        return 0
    sessions = [[clean(m) for m in run["traj"]] for run in orjson.loads(path.read_bytes())]
    tools = orjson.loads((CORPUS / "tau-bench-airline-tools.json").read_bytes())
    data = Path(tempfile.mkdtemp(prefix="ferrule-replay-"))
    mock_port, port = free_port(), free_port()
    sent = 0
    t0 = time.time()
    with (
        running_server(
            ["mock-upstream", "--port", str(mock_port)], mock_port, ready_path="/v1/models"
        ),
        running_server(
            ["serve", "--port", str(port), "--upstream-url", f"http://127.0.0.1:{mock_port}"],
            port,
            env={"FERRULE_DATA_DIR": str(data), "FERRULE_BACKEND": args.backend},
        ),
        httpx.Client(timeout=60) as client,
    ):
        for session in sessions[: args.sessions]:
            for prefix in requests_of(session):
                body = {
                    "model": "claude-sonnet-4-6",
                    "messages": prefix,
                    "tools": tools,
                    "max_tokens": 200,
                }
                r = client.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json=body,
                    headers={"authorization": "Bearer sk-ant-replay"},
                )
                if r.status_code != 200:
                    print(f"request {sent}: HTTP {r.status_code} {r.text[:200]}", file=sys.stderr)
                sent += 1
    print(
        f"replayed {sent} requests from {min(args.sessions, len(sessions))} tau-bench sessions "
        f"in {time.time() - t0:.1f} s (backend {args.backend})\n"
    )
    print(render_text(stats_json(ledger_path(data)), ["model"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
