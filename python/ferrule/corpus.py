"""A deterministic synthetic corpus of coding-agent sessions, for tests and benchmarks.

``session(seed)`` builds one Anthropic Messages conversation as an agent with a file reader, an
editor, a shell, a search tool and an HTTP tool would send it: file views (``cat -n`` listings),
edits, JSON API results (pretty-printed, with big integers, escapes and non-ASCII text), and raw
terminal output as a pseudo-terminal records it (CRLF line ends, ANSI colours, progress bars
redrawn with carriage returns, spinners, cursor movement, repeated lines, tracebacks), with
outputs and file views repeated as agents repeat them. Same seed, same bytes, on every machine
(only ``random.Random(seed)`` and string formatting are used).

``Session.requests()`` replays it as the agent sent it: request k holds every message up to
its k-th user turn, so each request is a prefix of the next.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TOOLS", "Session", "corpus", "session", "terminal_log"]

MODEL = "claude-sonnet-4-6"
SYSTEM = (
    "You are a coding agent working in a repository checked out at /repo. Use the tools to read "
    "and edit files and to run commands. Read a file before editing it; Edit replaces an exact "
    "string, so copy old_string byte for byte from the file. Run the tests after each change."
)

TOOLS: list[dict[str, Any]] = [
    {
        "name": name,
        "description": description,
        "input_schema": {
            "type": "object",
            "properties": {p: {"type": "string"} for p in params},
            "required": list(params),
        },
    }
    for name, description, params in (
        ("Read", "Read a file; lines are numbered like cat -n.", ("file_path",)),
        ("Edit", "Replace old_string with new_string in a file.", ("file_path", "old", "new")),
        ("Bash", "Run a shell command in a pseudo-terminal and return its output.", ("command",)),
        ("Grep", "Search file contents with a regular expression.", ("pattern",)),
        ("http_get", "GET a URL of the project's API and return the JSON body.", ("url",)),
    )
]

_WORDS = (
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
    "session",
    "worker",
    "queue",
    "batch",
    "limit",
    "offset",
    "cursor",
    "payload",
    "encoder",
    "decoder",
)
_NAMES = ("Zoë", "Ana", "Łukasz", "Mei", "Søren", "Chidi", "Nadia", "Hugo", "Aiyana", "Ravi")
_RESET = "\x1b[0m"


def _ident(rng: random.Random) -> str:
    return "_".join(rng.sample(_WORDS, 2))


# -- files -------------------------------------------------------------------------------------


def _python_file(rng: random.Random, lines: int) -> str:
    out = ['"""' + " ".join(rng.sample(_WORDS, 5)).capitalize() + '."""', "", "import os", ""]
    while len(out) < lines:
        name = _ident(rng)
        out.append(f"def {name}({', '.join(rng.sample(_WORDS, rng.randint(1, 3)))}):")
        out.append(f'    """{" ".join(rng.sample(_WORDS, 6)).capitalize()}."""')
        for _ in range(rng.randint(2, 8)):
            a, b = _ident(rng), rng.choice(_WORDS)
            stmt = rng.choice(
                (
                    f"{a} = {b}.get({rng.randint(0, 99)!r})",
                    f"if {b} is None:\n        return {rng.randint(0, 9)}",
                    f"{a} += len({b})",
                    f"log.debug('{b} %s', {a})",
                )
            )
            # Editors leave trailing spaces now and then; an Edit must match them exactly.
            pad = " " * rng.choice((0, 0, 0, 0, 0, 1, 4))
            out.extend(f"    {s}{pad}" for s in stmt.split("\n"))
        out.append(f"    return {rng.choice(_WORDS)}")
        out.append("")
    return "\n".join(out[:lines]) + "\n"


def _numbered(text: str, start: int = 1) -> str:
    """``cat -n`` style, as Claude Code's Read and str_replace_editor print files."""
    return "\n".join(f"{n:6}\t{line}" for n, line in enumerate(text.split("\n"), start))


# -- JSON --------------------------------------------------------------------------------------


def _json_result(rng: random.Random) -> str:
    items = [
        {
            "id": rng.randint(10**17, 10**19),  # past 2**53 and past 2**63: kept as spelled
            "name": f"{rng.choice(_NAMES)} {rng.choice(_WORDS)}",
            "status": rng.choice(("active", "pending", "failed", "archived")),
            "score": round(rng.random() * 100, rng.randint(1, 4)),
            "tags": rng.sample(_WORDS, rng.randint(0, 4)),
            "owner": {"email": f"{rng.choice(_WORDS)}@example.com", "verified": rng.random() < 0.5},
            "note": rng.choice(("", "line one\nline two", 'quote " and \\ backslash', "tab\there")),
            "updated_at": f"2026-{rng.randint(1, 12):02}-{rng.randint(1, 28):02}T10:00:00Z",
            "parent": None,
        }
        for _ in range(rng.randint(2, 12))
    ]
    doc = {"data": items, "total": len(items), "next_cursor": None if rng.random() < 0.5 else "c2"}
    indent = rng.choice((2, 4))
    ascii_only = rng.random() < 0.5
    return json.dumps(doc, indent=indent, ensure_ascii=ascii_only)


# -- terminal output (raw pty: CRLF, ANSI, carriage-return redraws) ---------------------------------


def _bar(done: float, width: int = 40) -> str:
    filled = int(done * width)
    return "━" * filled + " " * (width - filled)


def _pip_install(rng: random.Random) -> list[str]:
    lines = []
    for pkg in rng.sample(_WORDS, rng.randint(3, 6)):
        version = f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}"
        size = rng.randint(20, 9000)
        lines.append(f"Collecting {pkg}-kit=={version}")
        lines.append(f"  Downloading {pkg}_kit-{version}-py3-none-any.whl ({size} kB)")
        steps = rng.randint(8, 40)
        redraw = "".join(
            f"\r   \x1b[38;2;249;38;114m{_bar(i / steps)}\x1b[0m \x1b[32m{size * i // steps}/{size} kB"
            f"\x1b[0m \x1b[31m{rng.uniform(1, 30):.1f} MB/s\x1b[0m eta \x1b[36m0:00:{steps - i:02}\x1b[0m"
            for i in range(1, steps + 1)
        )
        lines.append(redraw)
    lines.append("Installing collected packages: " + ", ".join(rng.sample(_WORDS, 4)))
    lines.append("\x1b[32mSuccessfully installed\x1b[0m " + " ".join(rng.sample(_WORDS, 4)))
    return lines


def _tqdm(rng: random.Random) -> list[str]:
    total = rng.randint(50, 400)
    redraws = []
    for i in range(0, total + 1, max(1, total // rng.randint(20, 60))):
        pct = i * 100 // total
        bar = "█" * (pct // 10) + " " * (10 - pct // 10)
        rate = rng.uniform(5, 50)
        redraws.append(
            f"\r{pct:3}%|{bar}| {i}/{total} [00:{i // 10:02}<00:{(total - i) // 10:02}, {rate:.2f}it/s]"
        )
    return ["Processing shards", "".join(redraws)]


def _cargo_build(rng: random.Random) -> list[str]:
    lines = []
    crates = [f"{rng.choice(_WORDS)}-{rng.choice(_WORDS)}" for _ in range(rng.randint(10, 30))]
    for i, crate in enumerate(crates):
        lines.append(
            f"\x1b[0m\x1b[0m\x1b[1m\x1b[32m   Compiling\x1b[0m\x1b[0m {crate} v0.{rng.randint(1, 9)}.{i}"
        )
        progress = "".join(
            f"\r\x1b[1m\x1b[36m    Building\x1b[0m [{'=' * (j * 25 // len(crates))}>"
            f"{' ' * (25 - j * 25 // len(crates))}] {j}/{len(crates)}: {crate}\x1b[K"
            for j in range(i, min(i + 3, len(crates)))
        )
        lines.append(progress + "\r\x1b[K")
    lines.append(
        f"\x1b[0m\x1b[0m\x1b[1m\x1b[32m    Finished\x1b[0m dev [unoptimized + debuginfo] target(s) in {rng.uniform(5, 90):.2f}s"
    )
    return lines


def _pytest(rng: random.Random, fail: bool) -> list[str]:
    n = rng.randint(8, 40)
    lines = [
        "\x1b[1m============================= test session starts ==============================\x1b[0m",
        "platform linux -- Python 3.12.3, pytest-8.3.2, pluggy-1.5.0",
        "rootdir: /repo",
        f"collected {n} items",
        "",
    ]
    failed = rng.randrange(n) if fail else -1
    for i in range(n):
        name = f"tests/test_{rng.choice(_WORDS)}.py::test_{_ident(rng)}"
        if i == failed:
            lines.append(
                f"{name} \x1b[31mFAILED\x1b[0m{' ' * rng.randint(1, 20)}\x1b[31m[{(i + 1) * 100 // n:3}%]\x1b[0m"
            )
        else:
            lines.append(
                f"{name} \x1b[32mPASSED\x1b[0m{' ' * rng.randint(1, 20)}\x1b[32m[{(i + 1) * 100 // n:3}%]\x1b[0m"
            )
    if fail:
        lines += [
            "",
            "=================================== FAILURES ===================================",
            "Traceback (most recent call last):",
            '  File "/repo/src/app.py", line 42, in handle',
            "    return parse(payload)",
            '  File "/repo/src/parser.py", line 7, in parse',
            "    raise ValueError(f'bad {kind}')",
            "ValueError: bad header",
            "\x1b[31m=========================== short test summary info ============================\x1b[0m",
            "\x1b[31mFAILED\x1b[0m tests/test_parser.py::test_header - ValueError: bad header",
            f"\x1b[31m========================= \x1b[1m1 failed\x1b[0m, \x1b[32m{n - 1} passed\x1b[0m\x1b[31m in {rng.uniform(0.1, 9):.2f}s\x1b[0m ==========================\x1b[0m",
        ]
    else:
        lines.append(
            f"\x1b[32m============================== \x1b[1m{n} passed\x1b[0m\x1b[32m in {rng.uniform(0.1, 9):.2f}s\x1b[0m ===============================\x1b[0m"
        )
    return lines


def _npm_install(rng: random.Random) -> list[str]:
    spinner = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
    redraw = "".join(
        f"\r\x1b[K{spinner[i % len(spinner)]} reify:{rng.choice(_WORDS)}: \x1b[32mtiming\x1b[0m reifyNode:node_modules/{rng.choice(_WORDS)}"
        for i in range(rng.randint(20, 80))
    )
    return [
        redraw + "\r\x1b[K",
        f"added {rng.randint(50, 900)} packages, and audited {rng.randint(900, 1500)} packages in {rng.randint(2, 40)}s",
        "",
        f"{rng.randint(10, 200)} packages are looking for funding",
        "  run `npm fund` for details",
        "",
        "found \x1b[32m\x1b[1m0\x1b[22m\x1b[39m vulnerabilities",
    ]


def _server_log(rng: random.Random, lines: int) -> list[str]:
    """A long service log: repeated health checks, a warning storm, one traceback."""
    out: list[str] = []
    second = 0
    while len(out) < lines:
        second += 1
        ts = f"\x1b[2m2026-11-27T10:{second // 60 % 60:02}:{second % 60:02}Z\x1b[0m"
        roll = rng.random()
        if roll < 0.5:
            out.extend(["\x1b[32mINFO\x1b[0m  GET /health 200 0.4ms"] * rng.randint(3, 30))
        elif roll < 0.8:
            out.append(
                f"{ts} \x1b[32mINFO\x1b[0m  {rng.choice(_WORDS)} {rng.choice(_WORDS)} id={rng.randint(1, 10**6)}"
            )
        elif roll < 0.97:
            out.extend(
                [f"\x1b[33mWARN\x1b[0m  pool {rng.choice(_WORDS)} is {rng.randint(80, 99)}% full"]
                * rng.randint(1, 6)
            )
        else:
            out += [
                f"{ts} \x1b[31mERROR\x1b[0m unhandled exception in worker",
                "Traceback (most recent call last):",
                '  File "/srv/app/worker.py", line 88, in run',
                "    job.execute()",
                "ConnectionResetError: [Errno 104] Connection reset by peer",
            ]
    return out[:lines]


def terminal_log(rng: random.Random, kind: str | None = None) -> str:
    """Raw output of one command as a pseudo-terminal records it (CRLF line ends, ANSI codes)."""
    kind = kind or rng.choice(("pip", "tqdm", "cargo", "pytest", "npm"))
    if kind == "pip":
        lines = _pip_install(rng)
    elif kind == "tqdm":
        lines = _tqdm(rng)
    elif kind == "cargo":
        lines = _cargo_build(rng)
    elif kind == "pytest":
        lines = _pytest(rng, fail=rng.random() < 0.4)
    elif kind == "npm":
        lines = _npm_install(rng)
    elif kind == "server":
        lines = _server_log(rng, rng.randint(800, 2000))
    else:
        raise ValueError(f"unknown terminal log kind {kind!r}")
    # A pty turns each "\n" into "\r\n", and shells often leave trailing blanks at the end.
    return "\r\n".join(lines) + "\r\n" + rng.choice(("", "\r\n", "\r\n\r\n"))


# -- sessions ------------------------------------------------------------------------------------


@dataclass
class Session:
    """One conversation in Anthropic Messages form (the final request's ``messages``)."""

    seed: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    system: str = SYSTEM
    tools: list[dict[str, Any]] = field(default_factory=lambda: TOOLS)

    def body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "model": MODEL,
            "max_tokens": 4096,
            "system": self.system,
            "tools": self.tools,
            "messages": messages,
        }

    def requests(self) -> list[dict[str, Any]]:
        """Request k: every message up to the k-th user turn (fresh dicts: safe to mutate)."""
        out = []
        for i, message in enumerate(self.messages):
            if message["role"] == "user":
                out.append(json.loads(json.dumps(self.body(self.messages[: i + 1]))))
        return out


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.session = Session(seed)
        self.files = {
            f"src/{_ident(self.rng)}.py": _python_file(self.rng, self.rng.randint(30, 160))
            for _ in range(4)
        }
        self.outputs: list[tuple[str, str]] = []  # (command, output) already shown
        self.ids = 0

    def _id(self) -> str:
        self.ids += 1
        return f"toolu_{self.session.seed:04}_{self.ids:03}"

    def user(self, text: str) -> None:
        self.session.messages.append({"role": "user", "content": text})

    def calls(self, calls: list[tuple[str, dict[str, str], str]]) -> None:
        """One assistant turn with these tool calls, then one user turn with their results."""
        rng = self.rng
        blocks: list[dict[str, Any]] = [
            {"type": "text", "text": f"Let me {rng.choice(_WORDS)} the {rng.choice(_WORDS)}."}
        ]
        results = []
        for name, tool_input, output in calls:
            tool_id = self._id()
            blocks.append({"type": "tool_use", "id": tool_id, "name": name, "input": tool_input})
            results.append({"type": "tool_result", "tool_use_id": tool_id, "content": output})
        self.session.messages.append({"role": "assistant", "content": blocks})
        self.session.messages.append({"role": "user", "content": results})

    def read(self) -> tuple[str, dict[str, str], str]:
        path = self.rng.choice(sorted(self.files))
        return "Read", {"file_path": f"/repo/{path}"}, _numbered(self.files[path].rstrip("\n"))

    def edit(self) -> tuple[str, dict[str, str], str]:
        rng = self.rng
        path = rng.choice(sorted(self.files))
        lines = self.files[path].split("\n")
        at = rng.randrange(1, max(2, len(lines) - 1))
        old, new = lines[at], lines[at].replace("return", "return  ") + "  # fixed"
        lines[at] = new
        self.files[path] = "\n".join(lines)
        lo = max(0, at - 4)
        snippet = _numbered("\n".join(lines[lo : at + 5]), lo + 1)
        output = (
            f"The file /repo/{path} has been updated. Here's the result of running `cat -n` on "
            f"a snippet of the edited file:\n{snippet}"
        )
        return "Edit", {"file_path": f"/repo/{path}", "old": old, "new": new}, output

    def shell(self, kind: str | None = None) -> tuple[str, dict[str, str], str]:
        rng = self.rng
        if self.outputs and rng.random() < 0.25:  # the agent runs the same thing again
            command, output = rng.choice(self.outputs)
            return "Bash", {"command": command}, output
        kind = kind or rng.choice(("pip", "tqdm", "cargo", "pytest", "pytest", "npm", "ls"))
        command = {
            "pip": "pip install -r requirements.txt",
            "tqdm": "python scripts/reindex.py",
            "cargo": "cargo build",
            "pytest": "python -m pytest -v",
            "npm": "npm install",
            "ls": "ls -la src",
            "server": "docker logs api --tail 2000",
        }[kind]
        if kind == "ls":
            output = (
                "\r\n".join(
                    f"-rw-r--r--  1 dev dev {rng.randint(100, 99999):6} Nov 27 10:{rng.randint(0, 59):02} {p.split('/')[-1]}"
                    for p in sorted(self.files)
                )
                + "\r\n"
            )
        else:
            output = terminal_log(rng, kind)
        self.outputs.append((command, output))
        return "Bash", {"command": command}, output

    def grep(self) -> tuple[str, dict[str, str], str]:
        rng = self.rng
        word = rng.choice(_WORDS)
        hits = [
            f"{path}:{n}:{line}"
            for path, text in sorted(self.files.items())
            for n, line in enumerate(text.split("\n"), 1)
            if word in line
        ]
        return "Grep", {"pattern": word}, "\n".join(hits[:60]) or "No matches found"

    def http(self) -> tuple[str, dict[str, str], str]:
        return "http_get", {"url": f"/api/{self.rng.choice(_WORDS)}s"}, _json_result(self.rng)


def session(seed: int, *, turns: int = 14) -> Session:
    """One synthetic agent session of about ``turns`` tool-call turns (deterministic)."""
    b = _Builder(seed)
    rng = b.rng
    b.user(
        f"Fix the {rng.choice(_WORDS)} bug: requests with a {rng.choice(_WORDS)} header fail "
        f"with ValueError. Run the tests when you are done."
    )
    actions = (b.read, b.read, b.edit, b.shell, b.shell, b.shell, b.grep, b.http, b.http)
    for turn in range(turns):
        if turn == turns // 2:
            b.calls([b.shell("server")])  # one long log: aggressive mode cuts it
            continue
        width = 1 if rng.random() < 0.75 else rng.randint(2, 4)  # parallel tool calls
        b.calls([rng.choice(actions)() for _ in range(width)])
        if rng.random() < 0.1:
            b.session.messages[-1]["content"].append(
                {"type": "text", "text": "Keep going, and do not touch the tests."}
            )
    return b.session


def corpus(sessions: int = 12, seed: int = 2026) -> list[Session]:
    """The standard synthetic corpus: ``sessions`` sessions with seeds ``seed``, ``seed+1``..."""
    return [session(seed + i) for i in range(sessions)]
