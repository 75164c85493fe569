"""The Claude models the simulated upstream knows, with the per-model rules validation needs.

Figures follow Anthropic's model overview and "what's new" pages: Claude 4.6 models have no
assistant prefill (a 400) and support adaptive thinking; every 4.5+ model rejects ``temperature``
together with ``top_p``. An id outside this table is a 404, as on the real API.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MODELS", "ModelInfo", "resolve"]


@dataclass(frozen=True)
class ModelInfo:
    id: str
    display_name: str
    created_at: str
    max_input_tokens: int
    max_tokens: int
    aliases: tuple[str, ...] = ()
    prefill: bool = True
    """Whether a conversation may end with an assistant turn (removed on Claude 4.6)."""
    adaptive_thinking: bool = False
    """Whether ``thinking: {"type": "adaptive"}`` is accepted."""
    sampling_exclusive: bool = True
    """Whether ``temperature`` and ``top_p`` may not both be set (Claude 4.5 and later)."""

    def to_json(self) -> dict[str, object]:
        """The ``/v1/models`` entry (``lifecycle`` is required by the SDK's ``ModelInfo``)."""
        return {
            "type": "model",
            "id": self.id,
            "display_name": self.display_name,
            "created_at": self.created_at,
            "lifecycle": "active",
            "max_input_tokens": self.max_input_tokens,
            "max_tokens": self.max_tokens,
        }


# Newest first, the order the real /v1/models lists them in.
MODELS: tuple[ModelInfo, ...] = (
    ModelInfo(
        id="claude-sonnet-4-6",
        display_name="Claude Sonnet 4.6",
        created_at="2026-02-17T00:00:00Z",
        max_input_tokens=1_000_000,
        max_tokens=128_000,
        prefill=False,
        adaptive_thinking=True,
    ),
    ModelInfo(
        id="claude-opus-4-6",
        display_name="Claude Opus 4.6",
        created_at="2026-02-05T00:00:00Z",
        max_input_tokens=1_000_000,
        max_tokens=128_000,
        prefill=False,
        adaptive_thinking=True,
    ),
    ModelInfo(
        id="claude-opus-4-5-20251101",
        display_name="Claude Opus 4.5",
        created_at="2025-11-24T00:00:00Z",
        max_input_tokens=200_000,
        max_tokens=64_000,
        aliases=("claude-opus-4-5",),
    ),
    ModelInfo(
        id="claude-haiku-4-5-20251001",
        display_name="Claude Haiku 4.5",
        created_at="2025-10-15T00:00:00Z",
        max_input_tokens=200_000,
        max_tokens=64_000,
        aliases=("claude-haiku-4-5",),
    ),
    ModelInfo(
        id="claude-sonnet-4-5-20250929",
        display_name="Claude Sonnet 4.5",
        created_at="2025-09-29T00:00:00Z",
        max_input_tokens=200_000,
        max_tokens=64_000,
        aliases=("claude-sonnet-4-5",),
    ),
)

_BY_NAME: dict[str, ModelInfo] = {
    name: model for model in MODELS for name in (model.id, *model.aliases)
}


def resolve(name: str) -> ModelInfo | None:
    """The model an id or alias names, or None (the caller answers 404)."""
    return _BY_NAME.get(name)
