"""Model names and per-model facts, kept as data in ``data/models.toml``.

Clients name models the way TokenPak documents (``tokenpak-anthropic/<id>``), Ferrule's own way
(``ferrule/<id>``), or by an alias from the config; Anthropic gets the bare model id.

:func:`capabilities` answers what a model accepts (thinking modes, effort levels, sampling
parameters, structured outputs, strict tools, prefill, forced tool choice), its limits and its
prompt-cache minimum, from the one dated table that also holds the prices (read by
:mod:`ferrule.pricing`) and the rules the simulated upstream enforces (:mod:`ferrule.mock`). An id
the table does not list has no capabilities (None): callers pass it through unchanged and price it
as unknown, never guess."""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from . import pricing

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "EFFORT_LEVELS",
    "FALLBACK_MAX_TOKENS",
    "KNOWN_MODELS",
    "SAMPLING_DEFAULTS",
    "THINKING_TYPES",
    "ModelCaps",
    "ModelTable",
    "Sampling",
    "Thinking",
    "capabilities",
    "default_max_tokens",
    "effort_rank",
    "resolve_model",
    "table",
]

PREFIXES = ("tokenpak-anthropic/", "ferrule/", "anthropic/")

EFFORT_LEVELS: tuple[str, ...] = ("low", "medium", "high", "xhigh", "max")
"""Every ``output_config.effort`` value the Messages API knows, lowest first."""
THINKING_TYPES: tuple[str, ...] = ("adaptive", "enabled", "disabled", "between_tools")
"""Every ``thinking.type`` value the Messages API knows."""
SAMPLING_DEFAULTS: Mapping[str, float | None] = {"temperature": 1.0, "top_p": 1.0, "top_k": None}
"""The values a model without sampling parameters still accepts (None: only when unset)."""

FALLBACK_MAX_TOKENS = 4096
"""``max_tokens`` for a model the table does not know: safe on every Claude model."""

Status = Literal["active", "legacy", "deprecated", "retired"]
_STATUSES = ("active", "legacy", "deprecated", "retired")
_SUFFIX = re.compile(r"-(?:\d{8}|latest)$")


def effort_rank(level: str) -> int:
    """``low`` = 0 … ``max`` = 4; -1 for a value the API does not know."""
    return EFFORT_LEVELS.index(level) if level in EFFORT_LEVELS else -1


@dataclass(frozen=True, slots=True)
class Thinking:
    """What a model accepts in ``thinking`` (see the field notes in ``data/models.toml``)."""

    types: frozenset[str]
    """Accepted ``thinking.type`` values; any other is a 400."""
    default: Literal["off", "adaptive"]
    """What runs when the request sends no ``thinking``."""
    display: Literal["summarized", "omitted"]
    """The default ``thinking.display``."""
    enabled_deprecated: bool
    disabled_max_effort: str | None
    """``disabled`` only up to this effort (None: at any effort)."""
    between_tools_effort: frozenset[str]
    preserved: bool
    """Thinking blocks sent back are checked against the prompt prefix they were made with."""

    def accepts(self, kind: str) -> bool:
        return kind in self.types

    def on(self, kind: str | None) -> bool:
        """Whether the model thinks up front under ``thinking.type`` ``kind`` (None: absent)."""
        if kind is None:
            return self.default == "adaptive"
        return kind in ("adaptive", "enabled")


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling parameters: ``accepted`` at any valid value; the others only at their default
    (:data:`SAMPLING_DEFAULTS`); ``exclusive``: ``temperature`` and ``top_p`` not together."""

    accepted: frozenset[str]
    exclusive: bool

    def rejects(self, name: str, value: Any) -> bool:
        """Whether ``name`` = ``value`` (a value the schema accepts) is refused by this model."""
        if value is None or name in self.accepted:
            return False
        default = SAMPLING_DEFAULTS.get(name)
        return default is None or value != default


@dataclass(frozen=True, slots=True)
class ModelCaps:
    """One model of the table: names, limits and what its Messages API accepts."""

    id: str
    aliases: tuple[str, ...]
    display_name: str
    created: dt.date
    status: Status
    retires: dt.date | None
    limited: bool
    """Invitation-only (Anthropic's verification programs)."""
    context_window: int
    max_output_tokens: int
    default_max_tokens: int
    cache_min_tokens: int
    prefill: bool
    forced_tool_choice: bool
    """``tool_choice`` ``any``/``tool`` accepted (manual ``enabled`` thinking still forbids it)."""
    structured_outputs: bool
    strict_tools: bool
    sampling: Sampling
    thinking: Thinking
    effort: tuple[str, ...]
    """Accepted ``output_config.effort`` levels, lowest first; empty: effort is rejected."""
    effort_default: str | None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)

    @property
    def created_unix(self) -> int:
        return int(dt.datetime.combine(self.created, dt.time(), dt.timezone.utc).timestamp())

    @property
    def retired(self) -> bool:
        return self.status == "retired"

    def accepts_effort(self, level: str) -> bool:
        return level in self.effort

    def price(self, when: dt.date | float | None = None) -> pricing.Price | None:
        """The list price on ``when`` (today by default); None when the table has none."""
        return pricing.price_for(self.id, when)


class ModelTable:
    """The models of one table file, by id and alias."""

    def __init__(self, models: list[ModelCaps], checked: dt.date | None) -> None:
        self.checked = checked
        # Newest first, the order Anthropic's /v1/models lists them in.
        # (A stable sort: models released the same day keep the file's order.)
        self.models: tuple[ModelCaps, ...] = tuple(
            sorted(models, key=lambda m: m.created, reverse=True)
        )
        self._by_name: dict[str, ModelCaps] = {}
        for model in self.models:
            for name in model.names:
                if name.lower() in self._by_name:
                    raise ValueError(f"model table: {name} is listed twice")
                self._by_name[name.lower()] = model

    @classmethod
    def load(cls, path: str | Path | None = None) -> ModelTable:
        if path is None:
            text = resources.files("ferrule").joinpath(pricing.DATA_FILE).read_text("utf-8")
            where = f"ferrule/{pricing.DATA_FILE}"
        else:
            text = Path(path).read_text(encoding="utf-8")
            where = str(path)
        return cls.parse(text, where)

    @classmethod
    def parse(cls, text: str, where: str = "<models>") -> ModelTable:
        data = tomllib.loads(text)
        models = []
        for i, entry in enumerate(data.get("model", [])):
            try:
                models.append(_caps(entry))
            except (KeyError, TypeError, ValueError) as exc:
                name = entry.get("id", f"entry {i + 1}") if isinstance(entry, dict) else i + 1
                raise ValueError(f"{where}: model {name} is invalid: {exc}") from None
        checked = data.get("checked")
        return cls(models, checked if isinstance(checked, dt.date) else None)

    def get(self, model: str) -> ModelCaps | None:
        """The model named by an id or alias, also with a ``-YYYYMMDD`` or ``-latest`` suffix.

        NOTE: deliberately not a longest-prefix match: ``claude-opus-5-7`` must not resolve to
        ``claude-opus-5``. Only a date or ``-latest`` is stripped, never a version number."""
        name = model.strip().lower()
        found = self._by_name.get(name)
        if found is None:
            stripped = _SUFFIX.sub("", name)
            if stripped != name:
                found = self._by_name.get(stripped)
        return found


def _str_list(
    entry: Mapping[str, Any], key: str, allowed: tuple[str, ...] | None = None
) -> list[str]:
    value = entry[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{key} must be a list of strings")
    if allowed is not None:
        unknown = [v for v in value if v not in allowed]
        if unknown:
            raise ValueError(f"{key}: unknown value(s) {unknown}")
    return list(value)


def _int(entry: Mapping[str, Any], key: str) -> int:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TypeError(f"{key} must be a positive integer")
    return value


def _bool(entry: Mapping[str, Any], key: str) -> bool:
    value = entry[key]
    if not isinstance(value, bool):
        raise TypeError(f"{key} must be true or false")
    return value


def _choice(entry: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = entry[key]
    if value not in allowed:
        raise ValueError(f"{key} must be one of {allowed}, not {value!r}")
    return str(value)


def _date(entry: Mapping[str, Any], key: str) -> dt.date | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, dt.date):
        raise TypeError(f"{key} must be a TOML date")
    return value


def _caps(entry: Mapping[str, Any]) -> ModelCaps:
    effort = _str_list(entry, "effort", EFFORT_LEVELS)
    effort_default = str(entry["effort_default"]) or None
    if effort and effort_default not in effort:
        raise ValueError("effort_default must be one of effort")
    disabled_max = entry.get("disabled_max_effort")
    if disabled_max is not None and disabled_max not in EFFORT_LEVELS:
        raise ValueError("disabled_max_effort must be an effort level")
    created = _date(entry, "created")
    if created is None:
        raise KeyError("created")
    max_output = _int(entry, "max_output_tokens")
    default_max = _int(entry, "default_max_tokens")
    if default_max > max_output:
        raise ValueError("default_max_tokens is above max_output_tokens")
    thinking = Thinking(
        types=frozenset(_str_list(entry, "thinking", THINKING_TYPES)),
        default="adaptive"
        if _choice(entry, "thinking_default", ("off", "adaptive")) != "off"
        else "off",
        display="omitted"
        if _choice(entry, "thinking_display", ("summarized", "omitted")) == "omitted"
        else "summarized",
        enabled_deprecated=_bool(entry, "enabled_deprecated"),
        disabled_max_effort=disabled_max,
        between_tools_effort=frozenset(_str_list(entry, "between_tools_effort", EFFORT_LEVELS)),
        preserved=_bool(entry, "preserved_thinking"),
    )
    status = _choice(entry, "status", _STATUSES)
    return ModelCaps(
        id=str(entry["id"]),
        aliases=tuple(_str_list(entry, "aliases")),
        display_name=str(entry["display_name"]),
        created=created,
        status=status,  # type: ignore[arg-type]  # checked by _choice
        retires=_date(entry, "retires"),
        limited=bool(entry.get("limited", False)),
        context_window=_int(entry, "context_window"),
        max_output_tokens=max_output,
        default_max_tokens=default_max,
        cache_min_tokens=_int(entry, "cache_min_tokens"),
        prefill=_bool(entry, "prefill"),
        forced_tool_choice=_bool(entry, "forced_tool_choice"),
        structured_outputs=_bool(entry, "structured_outputs"),
        strict_tools=_bool(entry, "strict_tools"),
        sampling=Sampling(
            accepted=frozenset(_str_list(entry, "sampling", tuple(SAMPLING_DEFAULTS))),
            exclusive=_bool(entry, "sampling_exclusive"),
        ),
        thinking=thinking,
        effort=tuple(level for level in EFFORT_LEVELS if level in effort),
        effort_default=effort_default if effort else None,
    )


@lru_cache(maxsize=1)
def table() -> ModelTable:
    """The packaged table, read once per process."""
    return ModelTable.load()


def capabilities(model_id: str) -> ModelCaps | None:
    """The table's entry for a model id or alias (dated ids and ``-latest`` too), or None."""
    return table().get(model_id)


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
    """``max_tokens`` to send when the client sent none: the table's per-model default, or
    :data:`FALLBACK_MAX_TOKENS` for a model it does not know."""
    caps = capabilities(model)
    return caps.default_max_tokens if caps is not None else FALLBACK_MAX_TOKENS


def _known_models() -> tuple[tuple[str, str, int], ...]:
    return tuple((m.id, m.display_name, m.created_unix) for m in table().models if not m.retired)


KNOWN_MODELS: tuple[tuple[str, str, int], ...] = _known_models()
"""``(id, display name, created unix time)`` of every model GET /v1/models lists: the table's
models that are not retired, newest first."""
