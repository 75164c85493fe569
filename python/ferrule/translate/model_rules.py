"""What the model capability table (``data/models.toml``) changes in a translated request.

One place decides, per model, how the OpenAI knobs reach Anthropic, following the docs the table
cites:

- ``reasoning_effort`` (platform.claude.com/docs/en/build-with-claude/thinking-troubleshooting,
  /adaptive-thinking, /effort): adaptive thinking with ``output_config.effort`` wherever the model
  accepts it; a ``budget_tokens`` budget only on models whose only thinking mode is ``enabled``;
  ``none`` turns thinking off where the model allows it (``disabled``, within its effort cap; or
  ``between_tools`` on the model that has that instead), else the lowest effort, with a warning.
- Sampling parameters a model refuses (a 400 "`<param>` is deprecated for this model") are
  dropped with a warning, or refused here with a clear 400 in strict mode; with thinking on, the
  API wants default sampling, so they are dropped too.
- ``response_format`` JSON schema: ``output_config.format`` (structured outputs) where supported,
  else the forced-tool emulation; ``strict`` tools: ``tools[].strict`` where supported.
- A forced ``tool_choice`` becomes ``auto`` where the model or its thinking mode refuses it.

A model the table does not know gets the modern path (adaptive thinking, effort) and keeps the
client's sampling fields: it is passed through, never guessed about beyond that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ProxyError
from ..models import EFFORT_LEVELS, ModelCaps, effort_rank

__all__ = ["OPENAI_EFFORTS", "Notes", "apply_reasoning", "apply_sampling", "effort_level"]

OPENAI_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
# Manual thinking budgets (Anthropic requires >= 1024 and < max_tokens), and the headroom added
# to the client's max_tokens under adaptive thinking, whose thinking also counts toward it.
_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
_LEVEL = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh"}


@dataclass(slots=True)
class Notes:
    """Warnings for ``x-ferrule-warning``; in strict mode a dropped field is a 400 instead."""

    strict: bool = False
    warnings: list[str] = field(default_factory=list)

    def drop(self, param: str, why: str) -> None:
        if self.strict:
            raise ProxyError(400, f"'{param}' {why}", type="invalid_request_error", param=param)
        self.warnings.append(f"{param} dropped: {why}")

    def note(self, text: str) -> None:
        self.warnings.append(text)


def effort_level(asked: str, accepted: tuple[str, ...]) -> str | None:
    """The model's effort level for an OpenAI ``reasoning_effort``: the highest accepted level
    not above the asked one (``minimal`` is ``low``), else the lowest accepted; None when the
    model takes no effort parameter."""
    if not accepted:
        return None
    want = effort_rank(_LEVEL[asked])
    below = [level for level in accepted if effort_rank(level) <= want]
    return below[-1] if below else accepted[0]


def _config(out: dict[str, Any]) -> dict[str, Any]:
    cfg = out.get("output_config")
    if not isinstance(cfg, dict):
        cfg = out["output_config"] = {}
    return cfg


def _headroom(out: dict[str, Any], budget: int, asked_max: bool, ceiling: int | None) -> None:
    """max_tokens counts thinking too: keep the client's answer budget on top of it."""
    max_tokens = out["max_tokens"]
    wanted = max_tokens + budget if asked_max else max(max_tokens, budget * 2)
    out["max_tokens"] = min(wanted, ceiling) if ceiling else wanted


def apply_reasoning(
    out: dict[str, Any], effort: str, caps: ModelCaps | None, *, asked_max: bool, notes: Notes
) -> bool:
    """Set ``thinking`` / ``output_config.effort`` for ``reasoning_effort``; True when the model
    will think up front on this request."""
    ceiling = caps.max_output_tokens if caps is not None else None
    if effort == "none":
        if caps is None or caps.thinking.default == "off":
            return False
        thinking = caps.thinking
        if thinking.accepts("disabled"):
            out["thinking"] = {"type": "disabled"}
            cap = thinking.disabled_max_effort
            current = caps.effort_default
            if cap is not None and current is not None and effort_rank(current) > effort_rank(cap):
                _config(out)["effort"] = cap
            return False
        if thinking.accepts("between_tools") and thinking.between_tools_effort:
            lowest = min(thinking.between_tools_effort, key=effort_rank)
            out["thinking"] = {"type": "between_tools"}
            _config(out)["effort"] = lowest
            notes.note(f"reasoning_effort none: {caps.id} thinks only between tool calls")
            return False
        level = caps.effort[0] if caps.effort else None
        if level is not None:
            _config(out)["effort"] = level
        notes.note(f"reasoning_effort none: {caps.id} cannot turn thinking off; lowest effort")
        return True
    if caps is None or caps.thinking.accepts("adaptive"):
        out["thinking"] = {"type": "adaptive"}
        level = effort_level(effort, caps.effort if caps is not None else EFFORT_LEVELS[:4])
        if level is not None:
            _config(out)["effort"] = level
        _headroom(out, _BUDGET[effort], asked_max, ceiling)
        return True
    if caps.thinking.accepts("enabled"):
        budget = _BUDGET[effort]
        _headroom(out, budget, asked_max, ceiling)
        budget = min(budget, out["max_tokens"] - 1)
        if budget < 1024:
            notes.drop("reasoning_effort", f"needs max_tokens above 1024 on {caps.id}")
            return False
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
        return True
    notes.drop("reasoning_effort", f"is not supported: {caps.id} has no thinking mode")
    return False


def apply_sampling(
    out: dict[str, Any],
    temperature: float | None,
    top_p: float | None,
    caps: ModelCaps | None,
    *,
    thinking: bool,
    notes: Notes,
) -> None:
    """Put ``temperature``/``top_p`` in ``out`` where this model and request accept them."""
    values = {"temperature": temperature, "top_p": top_p}
    for name, value in values.items():
        if value is None:
            continue
        if thinking:
            notes.drop(name, "thinking needs the default sampling")
            values[name] = None
        elif caps is not None and caps.sampling.rejects(name, value):
            notes.drop(name, f"is not accepted by {caps.id}")
            values[name] = None
    if values["temperature"] is not None and values["top_p"] is not None:
        # an unknown model is passed through: both are sent, as the client asked
        exclusive = caps.sampling.exclusive if caps is not None else False
        if exclusive:
            values["top_p"] = None  # those models reject both: keep temperature
            notes.note("top_p dropped: not accepted together with temperature")
    for name, value in values.items():
        if value is not None:
            out[name] = value
