"""``ferrule demo``: an offline tour. Starts the simulated Anthropic API and Ferrule on free
loopback ports, then talks to Ferrule with the official ``openai`` SDK exactly as an app would:
one plain request, one streamed request (tokens printed as they arrive), a cached agent turn, and
a Responses API turn (a function tool call, then a streamed ``previous_response_id`` follow-up)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .procs import ServerFailed, free_port, running_server

if TYPE_CHECKING:
    from openai import OpenAI

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
            code = _tour(openai, proxy_port, mock_port)
        # the proxy has stopped: its ledger is flushed
        _savings(data_dir)
        return code
    except ServerFailed as exc:
        print(f"ferrule demo: {exc}; logs in {logs}", file=sys.stderr)
        return 1


def _tour(openai: object, port: int, mock_port: int) -> int:
    import httpx
    from openai import OpenAI

    base = f"http://127.0.0.1:{port}/v1"
    health = httpx.get(f"http://127.0.0.1:{port}/health").json()
    print(
        f"Ferrule {health['version']} on {base} (backend: {health['backend']}), "
        f"upstream: simulated Anthropic on http://127.0.0.1:{mock_port}\n"
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

    return _responses_step(client, model, f"http://127.0.0.1:{mock_port}")


WEATHER = "18 °C, clear sky"
WEATHER_TOOL: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


def _responses_step(client: OpenAI, model: str, mock_url: str) -> int:
    """The Responses API as Codex CLI or the Agents SDK use it: the model calls a tool, the app
    runs it and sends back only the result, naming the previous response; Ferrule rebuilds the
    conversation from its store (nothing is resent) and streams the answer."""
    import httpx

    # Script the simulated model's next two answers (the mock's test-only control endpoint), so
    # the tour reads like a real agent turn rather than schema-generated placeholder values.
    httpx.post(
        f"{mock_url}/_mock/script",
        json=[
            {"tool_calls": [{"name": "get_weather", "input": {"city": "Lisbon"}}]},
            {"text": "It is 18 °C with a clear sky in Lisbon: a fine evening for a walk."},
        ],
    ).raise_for_status()
    print("\n4) Responses API: a function tool, then a previous_response_id follow-up")
    first = client.responses.create(
        model=model,
        instructions="Use the tools you are given.",
        input="What is the weather in Lisbon?",
        tools=WEATHER_TOOL,
    )
    print(f"   {first.id}: {first.status}, output items: {[o.type for o in first.output]}")
    calls = [o for o in first.output if o.type == "function_call"]
    for call in calls:
        print(f"   the model calls {call.name}({call.arguments}); the app answers: {WEATHER}")
    print("   follow-up, sending only the tool result + previous_response_id (streamed):")
    print("   ", end="", flush=True)
    stream = client.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[
            {"type": "function_call_output", "call_id": c.call_id, "output": WEATHER} for c in calls
        ],
        tools=WEATHER_TOOL,
        stream=True,
    )
    final = None
    for event in stream:
        if event.type == "response.output_text.delta":
            print(event.delta, end="", flush=True)
        elif event.type in ("response.completed", "response.incomplete", "response.failed"):
            final = event.response
    print()
    if final is None:
        print("   (the stream ended without a final response)")
        return 1
    u = final.usage
    print(
        f"   {final.id}: {final.status}, output items: {[o.type for o in final.output]}, "
        f"usage: input={u and u.input_tokens} output={u and u.output_tokens}"
    )
    print(f"   previous_response_id: {final.previous_response_id}")
    return 0 if final.status == "completed" else 1


def _savings(data_dir: Path) -> None:
    from .ledger import ledger_path
    from .stats_cli import render_text, stats_json

    print("\nWhat it cost and saved (ferrule stats, from this demo's ledger):")
    print(render_text(stats_json(ledger_path(data_dir)), ["model"]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(argparse.Namespace(backend=os.environ.get("FERRULE_BACKEND"))))
