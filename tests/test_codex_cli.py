"""Codex CLI, unchanged, through Ferrule's ``POST /v1/responses`` (issue 14), on both backends.

Codex CLI (npm ``@openai/codex``, pinned exactly in ``tests/node/package.json``; its Linux binary
comes from npm as an optional dependency) runs ``codex exec`` non-interactively on a scratch git
repository, configured with a custom model provider pointing at a real ``ferrule serve``
(``wire_api = "responses"``). The simulated upstream is scripted as the model: call the
``apply_patch`` custom (freeform) tool with a patch, then the shell tool (``exec_command``, what
Codex 0.171 offers), then answer with text. The patch has to land in the file, and the tool results
have to reach the upstream as ``tool_result`` blocks.

Codex only offers ``apply_patch`` as a freeform tool to models its catalog says can use one; a
Claude model is not in its built-in catalog, so the test gives it a one-model catalog
(``model_catalog_json``), as a user would. Reasoning is on in that entry (``medium``): Claude's
signed thinking blocks travel through Codex as ``reasoning`` items' ``encrypted_content`` and the
simulated upstream rejects any that come back altered, so this also proves the reasoning round
trip with a real client.

No network beyond 127.0.0.1: update checks, analytics, feedback, OpenTelemetry, apps and plugins
(which look up chatgpt.com and api.github.com) are off, and any other HTTP(S) goes to a proxy on a
closed loopback port. Skipped only when ``node`` or ``npm`` is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from servers import TEST_KEY, MockUpstream, Proxy

NODE_DIR = Path(__file__).parent / "node"
CODEX_JS = NODE_DIR / "node_modules" / "@openai" / "codex" / "bin" / "codex.js"
MODEL = "claude-sonnet-4-6"
KEY_VAR = "FERRULE_CODEX_KEY"
SHELL_TOOL = "exec_command"  # Codex 0.171's shell tool (unified exec), as its first request shows
ORIGINAL = "hello\nfrom the scratch repository\n"
PATCHED = "hello, ferrule\nfrom the scratch repository\n"
PATCH = (
    "*** Begin Patch\n"
    "*** Update File: greeting.txt\n"
    "@@\n"
    "-hello\n"
    "+hello, ferrule\n"
    " from the scratch repository\n"
    "*** End Patch\n"
)
FINAL = "Patched greeting.txt and checked it with cat."


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


@pytest.fixture(scope="module")
def codex() -> list[str]:
    return codex_command()


def codex_command() -> list[str]:
    """The command that runs the pinned Codex CLI (``npm ci`` first when it is not installed);
    skips the test when node or npm is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the Codex CLI test (not installed)")
    pinned = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]["@openai/codex"]
    command = [node, str(CODEX_JS)]

    def version() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, "--version"], capture_output=True, text=True, timeout=60, check=False
        )

    if not CODEX_JS.is_file() or version().returncode != 0:
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, "npm ci failed in tests/node\n" + _output(proc)
    proc = version()
    assert proc.stdout.strip() == f"codex-cli {pinned}", _output(proc)
    return command


def _model_catalog() -> dict[str, Any]:
    """One catalog entry for the Claude model: freeform apply_patch, reasoning with summaries."""
    levels = [{"effort": e, "description": e} for e in ("low", "medium", "high")]
    entry = {
        "slug": MODEL,
        "display_name": "Claude Sonnet 4.6 through Ferrule",
        "description": None,
        "base_instructions": "You are Codex, a coding agent. Edit files with apply_patch.",
        "model_messages": None,
        "default_reasoning_level": "medium",
        "supported_reasoning_levels": levels,
        "supports_reasoning_summaries": True,
        "default_reasoning_summary": "auto",
        "shell_type": "shell_command",
        "apply_patch_tool_type": "freeform",
        "web_search_tool_type": "text",
        "visibility": "list",
        "supported_in_api": True,
        "priority": 1,
        "upgrade": None,
        "support_verbosity": False,
        "default_verbosity": None,
        "truncation_policy": {"mode": "bytes", "limit": 10000},
        "supports_parallel_tool_calls": False,
        "context_window": 200000,
        "max_context_window": 200000,
        "auto_compact_token_limit": None,
        "effective_context_window_percent": 95,
        "experimental_supported_tools": [],
        "input_modalities": ["text", "image"],
    }
    return {"models": [entry]}


def _config(proxy: Proxy, catalog: Path) -> str:
    # json.dumps gives valid TOML basic strings for these values.
    return f"""\
model = {json.dumps(MODEL)}
model_provider = "ferrule"
model_catalog_json = {json.dumps(str(catalog))}
approval_policy = "never"
# The commands are the test's own (scripted), in a scratch folder; Codex's bubblewrap sandbox
# needs user namespaces, which CI containers often lack, so it would make the test flaky.
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"

[features]
# Each of these looks up chatgpt.com or api.github.com at start-up.
apps = false
plugins = false
remote_plugin = false
plugin_sharing = false
in_app_updates = false
tool_suggest = false
unbounded_connection_retries = false

[model_providers.ferrule]
name = "Ferrule"
base_url = {json.dumps(proxy.v1)}
env_key = "{KEY_VAR}"
wire_api = "responses"
# A failure shows at once instead of after Codex's retries.
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 30000
"""


def _scratch_repo(path: Path) -> Path:
    path.mkdir()
    (path / "greeting.txt").write_text(ORIGINAL)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    for args in (["init", "-q"], ["add", "greeting.txt"], ["commit", "-q", "-m", "start"]):
        subprocess.run([*git, *args], cwd=path, check=True, capture_output=True, timeout=30)
    return path


def _env(home: Path) -> dict[str, str]:
    closed = "http://127.0.0.1:9"  # nothing listens there: any request off loopback fails
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CODEX_HOME": str(home),
        KEY_VAR: TEST_KEY,
        "NO_COLOR": "1",
        "TERM": "dumb",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = closed
    return env


def _tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    last = body["messages"][-1]
    assert last["role"] == "user", last
    return [b for b in last["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]


def _text(result: dict[str, Any]) -> str:
    content = result.get("content")
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if isinstance(b, dict))


def test_codex_exec_applies_a_patch_and_runs_a_shell_command(
    proxy: Proxy, mock: MockUpstream, codex: list[str], tmp_path: Path
) -> None:
    repo = _scratch_repo(tmp_path / "repo")
    home = tmp_path / "codex-home"
    home.mkdir()
    catalog = home / "models.json"
    catalog.write_text(json.dumps(_model_catalog()))
    (home / "config.toml").write_text(_config(proxy, catalog))
    last_message = tmp_path / "last-message.txt"

    # The model's three turns, one per request Codex makes.
    mock.script(
        [
            {"tool_calls": [{"name": "apply_patch", "input": {"input": PATCH}}]},
            {"tool_calls": [{"name": SHELL_TOOL, "input": {"cmd": "cat greeting.txt"}}]},
            {"text": FINAL},
        ]
    )
    proc = subprocess.run(
        [
            *codex,
            "exec",
            "--strict-config",  # a config key this version does not know fails the test
            "--color",
            "never",
            "--cd",
            str(repo),
            "--output-last-message",
            str(last_message),
            "Add ', ferrule' after hello in greeting.txt, then show the file.",
        ],
        cwd=repo,
        env=_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    report = f"codex exec on the {proxy.backend} backend\n" + _output(proc)
    assert proc.returncode == 0, report
    assert (repo / "greeting.txt").read_text() == PATCHED, report
    assert last_message.read_text().strip() == FINAL, report

    sent = [r["body"] for r in mock.requests() if r["path"] == "/v1/messages"]
    assert len(sent) == 3, report
    first, second, third = sent

    # Codex's freeform apply_patch reached Claude as a tool taking its raw text.
    tools = {t["name"]: t for t in first["tools"]}
    assert SHELL_TOOL in tools, sorted(tools)
    assert tools["apply_patch"]["input_schema"]["properties"] == {"input": {"type": "string"}}
    assert "*** Begin Patch" in tools["apply_patch"]["description"]
    # reasoning effort medium turns Claude's thinking on (the model table picks the mode)
    assert first.get("thinking", {}).get("type") in ("adaptive", "enabled"), first.get("thinking")

    # Turn 2: the patch call came back (as a custom_tool_call and its output) unchanged.
    patch_turn = second["messages"][-2]
    assert patch_turn["role"] == "assistant", patch_turn
    thinking, patch_call = patch_turn["content"][0], patch_turn["content"][-1]
    assert thinking["type"] == "thinking" and thinking["signature"], patch_turn
    assert patch_call["name"] == "apply_patch" and patch_call["input"] == {"input": PATCH}
    (patched,) = _tool_results(second)
    assert patched["tool_use_id"] == patch_call["id"]
    assert "Success. Updated the following files" in _text(patched), patched
    assert "greeting.txt" in _text(patched), patched

    # Turn 3: the patch turn again (its thinking byte for byte), then the shell call's result.
    assert third["messages"][len(second["messages"]) - 2] == patch_turn
    shell_turn = third["messages"][-2]
    assert shell_turn["content"][0]["type"] == "thinking", shell_turn
    shell_call = shell_turn["content"][-1]
    assert shell_call["name"] == SHELL_TOOL and shell_call["input"] == {"cmd": "cat greeting.txt"}
    (shell,) = _tool_results(third)
    assert shell["tool_use_id"] == shell_call["id"]
    assert PATCHED.splitlines()[0] in _text(shell), shell
