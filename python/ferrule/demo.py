"""``ferrule demo``: an offline tour. Starts the simulated Anthropic API and Ferrule on free
loopback ports, then talks to Ferrule with the official ``openai`` SDK exactly as an app would:
one plain request, one streamed request (tokens printed as they arrive), a cached agent turn, and
a Responses API turn (a function tool call, then a streamed ``previous_response_id`` follow-up).

Everything lives in one temporary folder (logs, the demo's own ledger), removed at the end unless
something failed (then its path is printed, for the logs). ``--serve`` leaves both servers
running after the tour, for the dashboard at ``/ui``, until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .procs import ServerFailed, free_port, running_server

if TYPE_CHECKING:
    from openai import OpenAI

__all__ = ["TOKEN_DELAY_MS", "run"]

DEMO_KEY = "sk-ant-demo-not-a-real-key"
# The simulated upstream waits this long before each piece of an answer, as a real model takes
# time to generate: most of each request's time below is this wait, not Ferrule's.
TOKEN_DELAY_MS = 15
SERVE_PORT = 8766  # --serve listens where the README's examples point, when that port is free
CHAT_REQUESTS = 4  # what the tour sends, for waiting on the ledger in --serve mode
RESPONSES_REQUESTS = 2


def run(args: argparse.Namespace) -> int:
    keep = bool(getattr(args, "serve", False))
    folder = Path(tempfile.mkdtemp(prefix="ferrule-demo-"))
    failed = True
    try:
        code = _run(args, folder, keep)
        failed = code != 0
        return code
    except KeyboardInterrupt:
        failed = False
        return 0 if keep else 130
    finally:
        if failed:
            print(f"ferrule demo: logs kept in {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _run(args: argparse.Namespace, logs: Path, keep: bool) -> int:
    data_dir = logs / "data"  # the demo's own ledger, so its savings table shows only its requests
    admin_key = "demo-admin-" + secrets.token_urlsafe(12)  # signs in to /ui; loopback only
    env = {"FERRULE_DATA_DIR": str(data_dir), "FERRULE_ADMIN_KEY": admin_key}
    if getattr(args, "backend", None):
        env["FERRULE_BACKEND"] = args.backend
    mock_port = free_port()
    proxy_port = SERVE_PORT if keep and _port_free(SERVE_PORT) else free_port()
    if keep:
        # Ctrl-C may come at any point; SIGTERM (a test, a service manager) ends it the same way.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        with _all_running(
            running_server(
                [
                    "mock-upstream",
                    "--port",
                    str(mock_port),
                    "--token-delay-ms",
                    str(TOKEN_DELAY_MS),
                ],
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
            # the SDK takes a second or more to import: here, while the servers start (the
            # threads that start them import nothing, so no import lock is shared)
            meanwhile=lambda: importlib.import_module("openai"),
        ):
            code = _tour(proxy_port, mock_port)
            if code == 0 and keep:
                _wait_for_ledger(data_dir, CHAT_REQUESTS + RESPONSES_REQUESTS)
                _savings(data_dir)
                _serving(proxy_port, mock_port, admin_key)
                threading.Event().wait()  # until Ctrl-C / SIGTERM (KeyboardInterrupt)
        if not keep:
            # the proxy has stopped: its ledger is flushed
            _savings(data_dir)
            print(
                "\nNext: `ferrule demo --serve` runs the same tour and leaves Ferrule running,\n"
                "with its dashboard at /ui."
            )
        return code
    except ServerFailed as exc:
        print(f"ferrule demo: {exc}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _all_running(
    *servers: contextlib.AbstractContextManager[Any], meanwhile: Callable[[], object] = object
) -> Iterator[None]:
    """Start the servers at the same time (each takes seconds to import and spawn its worker;
    Ferrule's readiness does not need its upstream), run ``meanwhile`` in this thread while
    they start, and stop them all on the way out. When one fails to start, the others that did
    are stopped and the first failure is raised."""
    with contextlib.ExitStack() as stack:
        failure: BaseException | None = None
        with ThreadPoolExecutor(len(servers)) as pool:
            started = [(cm, pool.submit(cm.__enter__)) for cm in servers]
            try:
                meanwhile()
                for _, future in started:
                    future.result()
            except BaseException as exc:  # a server failed, or Ctrl-C: raised after cleanup
                failure = exc
        # (the pool has waited for every start) stop each server that did start
        for cm, future in started:
            if future.exception() is None:
                stack.push(cm)
        if failure is not None:
            raise failure
        yield


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_for_ledger(data_dir: Path, rows: int, timeout: float = 10.0) -> None:
    """A running proxy writes its ledger in batches (about once a second): wait for the tour's
    rows, so the table below counts them all."""
    from .ledger import ledger_path
    from .stats_cli import stats_json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stats_json(ledger_path(data_dir))["totals"]["requests"] >= rows:
            return
        time.sleep(0.2)


def _serving(port: int, mock_port: int, admin_key: str) -> None:
    base = f"http://127.0.0.1:{port}"
    body = '{"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "Hello"}]}'
    lines = [
        "",
        f"Ferrule keeps running on {base} (OpenAI SDKs: {base}/v1),",
        f"in front of the simulated Anthropic API on http://127.0.0.1:{mock_port}. Try:",
        f"   curl {base}/v1/chat/completions -H 'Authorization: Bearer {DEMO_KEY}' \\",
        f"     -H 'Content-Type: application/json' -d '{body}'",
        "Ctrl-C stops both servers and removes the demo's folder.",
        f"Dashboard: {base}/ui  (admin key: {admin_key})",
    ]
    print("\n".join(lines), flush=True)


def _tour(port: int, mock_port: int) -> int:
    import httpx
    from openai import OpenAI

    base = f"http://127.0.0.1:{port}/v1"
    health = httpx.get(f"http://127.0.0.1:{port}/health").json()
    print(
        f"Ferrule {health['version']} on {base} (backend: {health['backend']}), "
        f"upstream: simulated Anthropic on http://127.0.0.1:{mock_port}\n"
        f"(the simulated model waits {TOKEN_DELAY_MS} ms before each piece of its answer, as a\n"
        "real one takes time to generate: the times below are mostly that wait, not Ferrule's)\n"
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
    paced = chunks * TOKEN_DELAY_MS  # the simulated upstream's own wait, one per piece
    print(f"Summary (times include the simulated upstream's {TOKEN_DELAY_MS} ms per piece)")
    print(f"   backend                 {health['backend']}")
    print(f"   plain request           {plain_ms:.1f} ms")
    print(f"   first streamed token    {(first or 0) * 1000:.1f} ms")
    print(
        f"   streamed total          {total * 1000:.1f} ms ({chunks} content chunks; "
        f"~{paced} ms of it the upstream's {TOKEN_DELAY_MS} ms x {chunks} wait)"
    )
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
    # as wide as the terminal (80 columns when not a terminal): no wrapped rows
    width = shutil.get_terminal_size().columns
    print(render_text(stats_json(ledger_path(data_dir)), ["model"], width=width))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(argparse.Namespace(backend=os.environ.get("FERRULE_BACKEND"))))
