"""``ferrule demo``: an offline tour. Starts the simulated Anthropic API and Ferrule on free
loopback ports, then talks to Ferrule with the official ``openai`` SDK exactly as an app would:
one plain request and one streamed request (tokens printed as they arrive)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from .procs import ServerFailed, free_port, running_server

__all__ = ["run"]

DEMO_KEY = "sk-ant-demo-not-a-real-key"


def run(args: argparse.Namespace) -> int:
    try:
        import openai
    except ImportError:
        print("ferrule demo needs the openai SDK: pip install 'ferrule[demo]'", file=sys.stderr)
        return 1
    logs = Path(tempfile.mkdtemp(prefix="ferrule-demo-"))
    data_dir = logs / "data"  # the demo's own ledger, so its savings table shows only its requests
    env = {"FERRULE_DATA_DIR": str(data_dir)}
    if getattr(args, "backend", None):
        env["FERRULE_BACKEND"] = args.backend
    mock_port, proxy_port = free_port(), free_port()
    try:
        with (
            running_server(
                ["mock-upstream", "--port", str(mock_port), "--token-delay-ms", "15"],
                mock_port,
                ready_path="/v1/models",
                log_path=str(logs / "mock-upstream.log"),
            ),
            running_server(
                [
                    "serve",
                    "--port",
                    str(proxy_port),
                    "--upstream-url",
                    f"http://127.0.0.1:{mock_port}",
                ],
                proxy_port,
                env=env,
                log_path=str(logs / "ferrule.log"),
            ),
        ):
            code = _tour(openai, proxy_port)
        # the proxy has stopped: its ledger is flushed
        _savings(data_dir)
        return code
    except ServerFailed as exc:
        print(f"ferrule demo: {exc}; logs in {logs}", file=sys.stderr)
        return 1


def _tour(openai: object, port: int) -> int:
    import httpx
    from openai import OpenAI

    base = f"http://127.0.0.1:{port}/v1"
    health = httpx.get(f"http://127.0.0.1:{port}/health").json()
    print(
        f"Ferrule {health['version']} on {base} (backend: {health['backend']}), upstream: simulated Anthropic\n"
    )
    client = OpenAI(base_url=base, api_key=DEMO_KEY)
    model = "tokenpak-anthropic/claude-sonnet-4-6"

    print("1) plain request")
    t0 = time.perf_counter()
    answer = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Say hello to Ferrule."},
        ],
        max_tokens=200,
    )
    plain_ms = (time.perf_counter() - t0) * 1000
    print(f"   {answer.choices[0].message.content}")
    u = answer.usage
    print(
        f"   finish_reason={answer.choices[0].finish_reason} usage: prompt={u and u.prompt_tokens} completion={u and u.completion_tokens}\n"
    )

    print("2) streamed request: ", end="", flush=True)
    t0 = time.perf_counter()
    first: float | None = None
    chunks = 0
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Stream a short story, please. [mock:words=30]"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                if first is None:
                    first = time.perf_counter() - t0
                chunks += 1
                print(choice.delta.content, end="", flush=True)
    total = time.perf_counter() - t0
    print("\n")
    print("Summary")
    print(f"   backend                 {health['backend']}")
    print(f"   plain request           {plain_ms:.1f} ms")
    print(f"   first streamed token    {(first or 0) * 1000:.1f} ms")
    print(f"   streamed total          {total * 1000:.1f} ms ({chunks} content chunks)")
    if usage is not None:
        print(
            f"   streamed usage          prompt={usage.prompt_tokens} completion={usage.completion_tokens}"
        )

    print("\n3) an agent turn with a long cached prefix, asked twice (temperature 0)")
    history = [
        {
            "role": "system",
            "content": "You are a coding agent. " + "Follow the house rules. " * 400,
        },
        {"role": "user", "content": "Summarise the build log. [mock:cache]"},
    ]
    for attempt in (1, 2):
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=history,  # type: ignore[arg-type]
            temperature=0,
            max_tokens=100,
        )
        done = raw.parse()
        details = done.usage.prompt_tokens_details if done.usage else None
        print(
            f"   ask {attempt}: x-cache={raw.headers.get('x-cache')} "
            f"prompt={done.usage and done.usage.prompt_tokens} "
            f"prompt-cache reads={details.cached_tokens if details else 0}"
        )
    return 0


def _savings(data_dir: Path) -> None:
    from .ledger import ledger_path
    from .stats_cli import render_text, stats_json

    print("\nWhat it cost and saved (ferrule stats, from this demo's ledger):")
    print(render_text(stats_json(ledger_path(data_dir)), ["model"]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(argparse.Namespace(backend=os.environ.get("FERRULE_BACKEND"))))
