"""Model names and per-model facts, kept as data.

Clients name models the way TokenPak documents (``tokenpak-anthropic/<id>``), Ferrule's own way
(``ferrule/<id>``), or by an alias from the config; Anthropic gets the bare model id."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["DEFAULT_MAX_TOKENS", "KNOWN_MODELS", "default_max_tokens", "resolve_model"]

PREFIXES = ("tokenpak-anthropic/", "ferrule/", "anthropic/")

# Models listed by GET /v1/models (id, display name, created). Anthropic answers for any id it
# serves; this list is what clients discover.
KNOWN_MODELS: tuple[tuple[str, str, int], ...] = (
    ("claude-opus-4-6", "Claude Opus 4.6", 1770249600),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", 1771286400),
    ("claude-haiku-4-5", "Claude Haiku 4.5", 1760054400),
    ("claude-opus-4-5", "Claude Opus 4.5", 1763942400),
    ("claude-sonnet-4-5", "Claude Sonnet 4.5", 1759104000),
)

# max_tokens is required upstream but optional in OpenAI's API. When the client sends none we
# send a generous per-model default, below each model's ceiling and small enough that a
# non-streaming call stays within the time Anthropic allows for one.
DEFAULT_MAX_TOKENS: dict[str, int] = {
    "claude-opus-4-6": 16384,
    "claude-sonnet-4-6": 16384,
    "claude-haiku-4-5": 16384,
    "claude-opus-4-5": 16384,
    "claude-sonnet-4-5": 16384,
    "claude-opus-4-1": 16384,
    "claude-opus-4": 16384,
    "claude-sonnet-4": 16384,
    "claude-3-7-sonnet": 16384,
    "claude-3-5-haiku": 8192,
    "claude-3-haiku": 4096,
}
FALLBACK_MAX_TOKENS = 4096


def resolve_model(name: str, aliases: Mapping[str, str]) -> str:
    """The Anthropic model id for a client's model name."""
    if name in aliases:
        return aliases[name]
    for prefix in PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return aliases.get(name, name)


def default_max_tokens(model: str) -> int:
    """The longest-prefix entry of DEFAULT_MAX_TOKENS, so dated ids (``-20251001``) match."""
    best = ""
    for key in DEFAULT_MAX_TOKENS:
        if model.startswith(key) and len(key) > len(best):
            best = key
    return DEFAULT_MAX_TOKENS[best] if best else FALLBACK_MAX_TOKENS
