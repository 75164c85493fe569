"""Conversations to replay: the public agent transcripts when present, else a synthetic corpus.

A conversation is an OpenAI-format list of messages plus its tools. It is replayed as an agent
loop sends it: one request before each assistant message, holding every message before it (so
each request is a prefix of the next).

- ``../shared/corpus/swe-agent/*.traj``: SWE-agent trajectories, ``history`` lists of chat
  messages (``tool_calls`` and ``tool_call_ids`` may be Python-literal strings).
- ``../shared/corpus/tau-bench-airline-even.json`` with ``tau-bench-airline-tools.json``:
  tau-bench airline runs (OpenAI messages with tool calls), all sharing the 14 airline tools.
- :func:`synthetic`: generated here, deterministically (agent sessions with file views, JSON tool
  results, terminal logs with ANSI codes and progress bars, repeated outputs, and a turn with 24
  parallel tool calls to exercise the lookback window).
"""

from __future__ import annotations

import ast
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Conversation", "load_swe_agent", "load_tau_bench", "shared_corpus_dir", "synthetic"]


@dataclass
class Conversation:
    name: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)

    def requests(self) -> list[list[dict[str, Any]]]:
        """The message lists sent, one before each assistant message (the agent's calls)."""
        return [self.messages[:i] for i, m in enumerate(self.messages) if m["role"] == "assistant"]


def shared_corpus_dir() -> Path | None:
    """``../shared/corpus`` next to the repository, when it exists."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "corpus"
        if candidate.is_dir():
            return candidate
    return None


def _literal(value: Any) -> Any:
    """SWE-agent stores some lists as Python reprs; parse those, pass the rest through."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return None
    return value


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _swe_message(m: dict[str, Any]) -> dict[str, Any] | None:
    role = m.get("role")
    if role in ("system", "user"):
        return {"role": role, "content": _text(m.get("content"))}
    if role == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": _text(m.get("content"))}
        calls = _literal(m.get("tool_calls"))
        if isinstance(calls, list) and calls:
            out["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {
                        "name": c["function"]["name"],
                        "arguments": c["function"].get("arguments") or "{}",
                    },
                }
                for c in calls
            ]
        return out
    if role == "tool":
        ids = _literal(m.get("tool_call_ids")) or [m.get("tool_call_id")]
        return {"role": "tool", "tool_call_id": ids[0], "content": _text(m.get("content"))}
    return None


def load_swe_agent(folder: Path) -> list[Conversation]:
    out = []
    for path in sorted(folder.glob("*.traj")):
        history = json.loads(path.read_text(encoding="utf-8")).get("history") or []
        messages = [x for x in (_swe_message(m) for m in history) if x is not None]
        out.append(Conversation(path.stem, messages))
    return out


def load_tau_bench(runs: Path, tools: Path) -> list[Conversation]:
    tool_list = json.loads(tools.read_text(encoding="utf-8"))
    out = []
    for i, run in enumerate(json.loads(runs.read_text(encoding="utf-8"))):
        messages = []
        for m in run.get("traj") or []:
            keep = {k: v for k, v in m.items() if k in ("role", "content", "tool_calls")}
            if m.get("role") == "tool":
                keep["tool_call_id"] = m.get("tool_call_id")
            if keep.get("tool_calls") is None:
                keep.pop("tool_calls", None)
            messages.append(keep)
        out.append(Conversation(f"tau-{run.get('task_id', i)}-{i}", messages, tool_list))
    return out


# -- synthetic ------------------------------------------------------------------------------------

_WORDS = [
    "request",
    "response",
    "cache",
    "token",
    "stream",
    "parser",
    "buffer",
    "header",
    "client",
    "server",
    "handler",
    "config",
    "module",
    "function",
    "value",
    "error",
    "result",
    "record",
    "index",
    "object",
    "schema",
    "field",
    "path",
    "retry",
    "timeout",
]


def _code(rng: random.Random, lines: int) -> str:
    out = []
    for n in range(1, lines + 1):
        indent = "    " * rng.randint(0, 3)
        a, b, c = rng.sample(_WORDS, 3)
        out.append(f"{n}:{indent}{a}_{b} = {c}({rng.randint(0, 999)})")
    return "\n".join(out)


def _terminal(rng: random.Random, lines: int) -> str:
    out = []
    for _ in range(lines):
        pct = rng.randint(0, 100)
        bar = "#" * (pct // 5)
        out.append(f"\x1b[32m{rng.choice(_WORDS)}\x1b[0m [{bar:<20}] {pct}%\r")
        out.append(f"test_{rng.choice(_WORDS)}_{rng.choice(_WORDS)} ... ok")
    return "\n".join(out)


def _json_result(rng: random.Random, items: int) -> str:
    rows = [
        {
            "id": rng.randint(1000, 9999),
            "name": f"{rng.choice(_WORDS)}-{rng.choice(_WORDS)}",
            "status": rng.choice(["ok", "pending", "failed"]),
            "score": round(rng.random(), 3),
        }
        for _ in range(items)
    ]
    return json.dumps({"results": rows, "count": items})


_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{desc} " + " ".join(_WORDS) * 2,
            "parameters": {
                "type": "object",
                "properties": {p: {"type": "string", "description": f"the {p}"} for p in params},
                "required": list(params),
            },
        },
    }
    for name, desc, params in (
        ("open_file", "Open a file and show a window of its lines.", ("path", "line")),
        ("search_repo", "Search the repository for a pattern.", ("pattern", "glob")),
        ("run_shell", "Run a shell command and return its output.", ("command",)),
        ("edit_file", "Replace an exact string in a file.", ("path", "old", "new")),
        ("query_db", "Query the records database, JSON out.", ("table", "filter")),
        ("submit", "Submit the final answer.", ("summary",)),
    )
]


def synthetic(sessions: int = 12, seed: int = 7) -> list[Conversation]:
    """Deterministic agent sessions (same arguments, same bytes)."""
    rng = random.Random(seed)
    system = "You are a careful software agent working in a repository through tools. " + " ".join(
        rng.choice(_WORDS) for _ in range(900)
    )
    out = []
    for s in range(sessions):
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Task {s}: " + " ".join(rng.sample(_WORDS, 20))},
        ]
        steps = rng.randint(10, 35)
        call = 0
        for step in range(steps):
            parallel = 24 if step == steps // 2 else (3 if rng.random() < 0.15 else 1)
            calls: list[dict[str, Any]] = []
            for _ in range(parallel):
                call += 1
                name = rng.choice(["open_file", "search_repo", "run_shell", "query_db"])
                calls.append(
                    {
                        "id": f"call_{s}_{call}",
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps({"arg": call})},
                    }
                )
            messages.append(
                {
                    "role": "assistant",
                    "content": " ".join(rng.choice(_WORDS) for _ in range(rng.randint(10, 60))),
                    "tool_calls": calls,
                }
            )
            for c in calls:
                name = c["function"]["name"]
                if name == "open_file":
                    result = _code(rng, rng.randint(20, 100))
                elif name == "run_shell":
                    result = _terminal(rng, rng.randint(5, 60))
                elif name == "query_db":
                    result = _json_result(rng, rng.randint(3, 40))
                else:
                    result = "\n".join(
                        f"src/{rng.choice(_WORDS)}.py:{rng.randint(1, 500)}" for _ in range(12)
                    )
                if rng.random() < 0.1 and len(messages) > 4:
                    result = messages[-2]["content"] if messages[-2]["role"] == "tool" else result
                messages.append({"role": "tool", "tool_call_id": c["id"], "content": result})
        messages.append({"role": "assistant", "content": "Done."})
        out.append(Conversation(f"synthetic-{s}", messages, list(_TOOLS)))
    return out
