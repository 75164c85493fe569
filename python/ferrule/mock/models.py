"""The Claude models the simulated upstream serves, and the rules it enforces for each.

Both come from Ferrule's model table (``ferrule/data/models.toml``, :mod:`ferrule.models`), the
same dated data the proxy's translation and pricing read, so the mock cannot drift from the table:
a model's thinking modes, effort levels, sampling rules, prefill, forced tool choice, structured
outputs and output limit are enforced here exactly as the table (and the docs it cites) state.

``/v1/models`` answers in the Models API shape of the ``anthropic`` SDK 2.x (``lifecycle``,
``retires_at``, ``max_input_tokens``, ``max_tokens`` and a ``capabilities`` object whose
``thinking.types`` and ``effort`` levels come from the table). A retired model stays in the list
(``lifecycle: "retired"``) but a request naming it fails with 404, as on the real API. An id outside
the table is a 404.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models import EFFORT_LEVELS, THINKING_TYPES, ModelCaps, table

__all__ = ["MODELS", "ModelInfo", "resolve"]

_LINES = ("haiku", "sonnet", "opus", "fable", "mythos")


@dataclass(frozen=True)
class ModelInfo:
    """One served model: its table entry and the figures validation reads."""

    caps: ModelCaps

    @property
    def id(self) -> str:
        return self.caps.id

    @property
    def aliases(self) -> tuple[str, ...]:
        return self.caps.aliases

    @property
    def max_tokens(self) -> int:
        return self.caps.max_output_tokens

    @property
    def prefill(self) -> bool:
        """Whether a conversation may end with an assistant turn (removed on Claude 4.6)."""
        return self.caps.prefill

    def to_json(self) -> dict[str, object]:
        """The ``/v1/models`` entry (``lifecycle`` is required by the SDK's ``ModelInfo``)."""
        caps = self.caps
        lifecycle = caps.status if caps.status in ("deprecated", "retired") else "active"
        line = next((name for name in _LINES if f"-{name}-" in f"-{caps.id}-"), None)
        supported = {"supported": True}
        thinking_types = {
            kind: {"supported": caps.thinking.accepts(kind)} for kind in THINKING_TYPES
        }
        # A model that cannot think still "accepts" disabled (the SDK's ThinkingTypes note).
        return {
            "type": "model",
            "id": caps.id,
            "display_name": caps.display_name,
            "created_at": f"{caps.created.isoformat()}T00:00:00Z",
            "lifecycle": lifecycle,
            "retires_at": f"{caps.retires.isoformat()}T00:00:00Z" if caps.retires else None,
            "line": line,
            "max_input_tokens": caps.context_window,
            "max_tokens": caps.max_output_tokens,
            "capabilities": {
                "batch": supported,
                "citations": supported,
                "code_execution": supported,
                "context_management": {"supported": False},
                "effort": {
                    "supported": bool(caps.effort),
                    **{level: {"supported": level in caps.effort} for level in EFFORT_LEVELS},
                },
                "image_input": supported,
                "pdf_input": supported,
                "server_tools": {
                    "supported": True,
                    "code_execution": supported,
                    "web_search": supported,
                },
                "structured_outputs": {"supported": caps.structured_outputs},
                "thinking": {
                    "supported": any(
                        caps.thinking.accepts(k) for k in ("adaptive", "enabled", "between_tools")
                    ),
                    "types": thinking_types,
                },
            },
        }


# Newest first, the order the real /v1/models lists them in.
MODELS: tuple[ModelInfo, ...] = tuple(ModelInfo(caps) for caps in table().models)

_BY_NAME: dict[str, ModelInfo] = {
    name: model for model in MODELS for name in (model.id, *model.aliases)
}


def resolve(name: str) -> ModelInfo | None:
    """The model an id or alias names, or None (the caller answers 404)."""
    return _BY_NAME.get(name)
