"""Compression replays: tokens saved per mode, prefix stability, raw terminal logs, tokenizer.

``.venv/bin/python benches/compress_corpus.py`` prints the Markdown tables of benches/RESULTS.md
("Compression"). Each conversation is replayed as its agent sent it, turn by turn (request k =
the first k turns), through ``ferrule.compression.compress_request`` on each backend:

- ``synthetic``: ``ferrule.corpus.corpus()`` (Anthropic requests, always available);
- ``tau-bench``/``swe-agent``: the public transcripts in ``../shared/corpus/`` when that folder
  exists (loaded by ``benches/cache_sim/corpus.py``), OpenAI messages translated with
  ``ferrule.translate.request.to_anthropic`` as the proxy does.

Per corpus and mode: input tokens before and after (the whole prompt: tools as JSON, system,
messages; and without the tool definitions, as ../shared/reference counts them), tool-result
tokens before and after, and the share of turns whose compressed request extends the previous
compressed request message for message, byte for byte (with the same system and tools). The two
backends must give identical requests (checked on every request). Tokens are counted with
``ferrule.tokens`` (legacy Claude tokenizer); the last table compares its counts with the
simulated upstream's estimate (one token per 4 bytes of canonical JSON).
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from ferrule import _pure, backend, corpus, tokens
from ferrule.compression import compress_request
from ferrule.errors import ProxyError
from ferrule.mock.usage import segments
from ferrule.translate.request import to_anthropic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_sim import corpus as shared

try:
    from ferrule import _native
except ImportError:  # pragma: no cover - depends on the build
    _native = None  # type: ignore[assignment]

Session = list[dict[str, Any]]  # the Anthropic request bodies of one conversation, in order


def synthetic_sessions() -> list[Session]:
    return [s.requests() for s in corpus.corpus()]


def translated(conversations: list[shared.Conversation]) -> list[Session]:
    out = []
    for conv in conversations:
        bodies = []
        try:
            for messages in conv.requests():
                request: dict[str, Any] = {"model": "claude-sonnet-4-6", "messages": messages}
                if conv.tools:
                    request["tools"] = conv.tools
                body = to_anthropic(copy.deepcopy(request), aliases={}, version="2023-06-01")
                bodies.append(body.body)
        except ProxyError as exc:  # pragma: no cover - depends on the corpus
            print(f"skipped {conv.name}: {exc}", file=sys.stderr)
            continue
        out.append(bodies)
    return out


def load(names: list[str]) -> dict[str, list[Session]]:
    sets: dict[str, list[Session]] = {}
    folder = shared.shared_corpus_dir()
    for name in names:
        if name == "synthetic":
            sets[name] = synthetic_sessions()
        elif folder is None:
            print(f"no ../shared/corpus: {name} skipped", file=sys.stderr)
        elif name == "tau-bench":
            convs = shared.load_tau_bench(
                folder / "tau-bench-airline-even.json", folder / "tau-bench-airline-tools.json"
            )
            sets[name] = translated(convs)
        elif name == "swe-agent":
            sets[name] = translated(shared.load_swe_agent(folder / "swe-agent"))
    return sets


def tool_result_texts(body: dict[str, Any]) -> list[str]:
    texts = []
    for message in body.get("messages") or []:
        if message.get("role") != "user" or not isinstance(message.get("content"), list):
            continue
        for block in message["content"]:
            if block.get("type") != "tool_result":
                continue
            content = block.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts += [p["text"] for p in content if p.get("type") == "text"]
    return texts


@dataclass
class Stats:
    requests: int = 0
    before: int = 0
    after: int = 0
    tools: int = 0  # tokens of the tool definitions, summed over requests
    results_before: int = 0
    results_after: int = 0
    turns: int = 0  # consecutive request pairs
    stable: int = 0  # ... whose compressed request extends the previous one
    mock: int = 0  # the simulated upstream's estimate of the uncompressed requests
    seconds: float = 0.0


def replay(sessions: list[Session], mode: str, kernels: ModuleType | None, check: bool) -> Stats:
    """Replay every session turn by turn; ``check``: both backends must agree on each request."""
    stats = Stats()
    for session in sessions:
        previous: dict[str, Any] | None = None
        for original in session:
            body = copy.deepcopy(original)
            results = tool_result_texts(body)
            if kernels is not None:
                backend.Compressor = kernels.Compressor  # type: ignore[misc]
            started = time.perf_counter()
            result = compress_request(body, mode)
            stats.seconds += time.perf_counter() - started
            if check and _native is not None:
                backend.Compressor = _pure.Compressor  # type: ignore[misc]
                twin = compress_request(copy.deepcopy(original), mode).body
                assert orjson.dumps(twin) == orjson.dumps(body), "backends disagree"
            stats.requests += 1
            stats.before += result.tokens_before
            stats.after += result.tokens_after
            stats.tools += tokens.count_texts(body.get("tools") or [])
            stats.results_before += tokens.count_texts(results)
            stats.results_after += tokens.count_texts(tool_result_texts(body))
            stats.mock += sum(s.tokens for s in segments(original))
            if previous is not None:
                stats.turns += 1
                stats.stable += extends(previous, body)
            previous = body
    return stats


def extends(previous: dict[str, Any], body: dict[str, Any]) -> bool:
    """``body`` has ``previous``'s system, tools and messages, byte for byte, then more."""
    old, new = previous["messages"], body["messages"]
    return (
        orjson.dumps(previous.get("system")) == orjson.dumps(body.get("system"))
        and orjson.dumps(previous.get("tools")) == orjson.dumps(body.get("tools"))
        and len(new) > len(old)
        and all(orjson.dumps(a) == orjson.dumps(b) for a, b in zip(old, new, strict=False))
    )


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def terminal_logs() -> list[str]:
    rng = random.Random(2026)
    kinds = ("pip", "tqdm", "cargo", "pytest", "npm", "server")
    return [corpus.terminal_log(rng, kind) for _ in range(10) for kind in kinds]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="synthetic,tau-bench,swe-agent")
    parser.add_argument("--no-check", action="store_true", help="skip the native == Python check")
    args = parser.parse_args(argv)
    tokens.load()
    sets = load(args.corpus.split(","))
    kernels = _native or _pure

    print(
        "| corpus | mode | requests | input tokens before | after | saved | saved w/o tool defs"
        " | tool-result tokens saved | prefix-stable turns |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    mocks: dict[str, tuple[int, int]] = {}
    for name, sessions in sets.items():
        for mode in ("off", "lossless", "aggressive"):
            s = replay(sessions, mode, kernels, check=not args.no_check and mode != "off")
            saved = s.before - s.after
            results_saved = s.results_before - s.results_after
            print(
                f"| {name} | {mode} | {s.requests:,} | {s.before:,} | {s.after:,} | "
                f"{pct(saved, s.before)} | {pct(saved, s.before - s.tools)} | "
                f"{pct(results_saved, s.results_before)} of {s.results_before:,} | "
                f"{s.stable}/{s.turns} ({pct(s.stable, s.turns)}) |"
            )
            mocks[name] = (s.before, s.mock)

    print()
    print("| raw terminal logs (synthetic pty output) | tokens before | after | saved |")
    print("|---|---:|---:|---:|")
    logs = terminal_logs()
    before = tokens.count_texts(logs)
    for mode in ("lossless", "aggressive"):
        c = kernels.Compressor(mode)
        after = tokens.count_texts(
            c.compress(log, "tool_result", f"log {i}") for i, log in enumerate(logs)
        )
        print(
            f"| {len(logs)} logs, {mode} | {before:,} | {after:,} | {pct(before - after, before)} |"
        )

    print()
    print(f"| corpus | {tokens.NAME} tokens | simulated upstream estimate (bytes/4) | ratio |")
    print("|---|---:|---:|---:|")
    for name, (ours, mock) in mocks.items():
        print(f"| {name} | {ours:,} | {mock:,} | {ours / mock:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
