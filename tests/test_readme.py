"""The README as a new user follows it: its first screen gives two commands, its offline recipe
(``ferrule mock-upstream`` + ``ferrule serve`` + curl + ``ferrule stats``) runs as written (on
free ports, in a scratch data folder), its example config loads, and its client snippets name
the packages they import."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ferrule.config import load
from ferrule.procs import free_port

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


def _blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, offset) of every fenced block."""
    return [(m.group(1), m.group(2), m.start()) for m in FENCE.finditer(text)]


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def test_first_screen_gives_exactly_two_commands() -> None:
    text = README.read_text()
    first_screen = text[: text.index("\n---\n")]
    blocks = _blocks(first_screen)
    assert len(blocks) == 1, blocks
    commands = [line.split("#")[0].strip() for line in blocks[0][1].splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_offline_recipe_runs_as_written(tmp_path: Path) -> None:
    (lang, recipe, _) = _blocks(_section(README.read_text(), "## Try it offline"))[0]
    assert lang == "sh"
    assert "ferrule mock-upstream --port 9100 &" in recipe
    assert "ferrule serve --port 8766 --upstream-url http://127.0.0.1:9100 &" in recipe
    # the README's ports may be taken on a shared machine: the same commands on free ones
    mock_port, proxy_port = free_port(), free_port()
    script = recipe.replace("9100", str(mock_port)).replace("8766", str(proxy_port))
    bin_dir = str(Path(sys.executable).parent)  # `ferrule` as `pip install .` puts it on PATH
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "FERRULE_DATA_DIR": str(tmp_path / "data"),  # not the user's ledger
        "COLUMNS": "80",
    }
    for var in ("FERRULE_CONFIG", "FERRULE_PORT", "FERRULE_UPSTREAM_URL", "FERRULE_ACCESS_KEY"):
        env.pop(var, None)
    done = subprocess.run(
        ["bash", "-e", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # curl printed an OpenAI chat completion from the simulated model
    assert '"object":"chat.completion"' in out and '"finish_reason":"stop"' in out, out
    # ferrule stats counted that one request, in an 80-column table
    assert re.search(r"│ claude-sonnet-4-6 │\s+1 │", out), out
    # the server's own banner and one short access line went to the terminal too
    assert f"listening  http://127.0.0.1:{proxy_port}" in done.stderr, done.stderr
    assert re.search(r" 200 /v1/chat/completions claude-sonnet-4-6 in=\d+", done.stderr)


def test_example_config_loads(tmp_path: Path) -> None:
    examples = [b for lang, b, _ in _blocks(README.read_text()) if lang == "toml"]
    (example,) = [b for b in examples if b.startswith("# ferrule.toml")]
    path = tmp_path / "ferrule.toml"
    path.write_text(example)
    cfg = load({}, env={}, config_path=str(path))  # raises on an unknown or invalid setting
    assert (cfg.host, cfg.port, cfg.workers) == ("127.0.0.1", 8766, 2)
    assert (cfg.response_cache, cfg.access_log, cfg.compression) == (
        "sqlite",
        "compact",
        "lossless",
    )
    assert dict(cfg.model_aliases) == {"fast": "claude-haiku-4-5", "smart": "claude-sonnet-4-6"}


def test_client_snippets_name_their_packages() -> None:
    text = README.read_text()
    snippets = [(b, at) for lang, b, at in _blocks(text) if lang == "python"]
    assert len(snippets) >= 2
    for body, at in snippets:
        intro = text[text.rfind("\n\n", 0, at - 2) : at]  # the paragraph just above the block
        for module in re.findall(r"^from (\w+)", body, re.M):
            assert f"pip install {module.replace('_', '-')}" in intro, (module, intro)
    agents = text.index("OpenAI Agents SDK")
    assert "pip install openai-agents" in text[agents : agents + 80]
