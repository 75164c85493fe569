"""Settings of one simulated upstream, and how they travel to Granian's worker processes.

Granian imports the application in each worker by name (``ferrule.mock.app:factory``), so options
cannot be passed as Python objects: :meth:`MockOptions.to_env` writes them to environment
variables and :meth:`MockOptions.from_env` reads them back in the worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

__all__ = ["ENV_PREFIX", "MockOptions"]

ENV_PREFIX = "FERRULE_MOCK_"


@dataclass(frozen=True)
class MockOptions:
    """What the simulated Anthropic upstream does when a request does not say otherwise."""

    answer_words: int = 40
    """Words in the default text answer (``[mock:words=N]`` overrides it per request)."""

    token_delay_ms: float = 0.0
    """Pause before each streamed delta (``[mock:delay=MS]`` overrides it per request)."""

    api_key: str | None = None
    """When set, only this key is accepted (401 otherwise); when None any non-empty key is."""

    cache_min_tokens: int = 1024
    """Shortest prefix the prompt-cache simulation stores, like the API's minimum cacheable length.
    NOTE: the real minimum depends on the model (1024-4096); one number keeps tests predictable."""

    max_body_bytes: int = 32 * 1024 * 1024
    """Largest accepted request body; the real Messages API limit is 32 MB (then 413)."""

    max_hang_s: float = 60.0
    """Upper bound of ``[mock:hang]`` / ``[mock:stall]`` so a forgotten test cannot wedge a run."""

    def to_env(self) -> dict[str, str]:
        """Environment variables that make :meth:`from_env` rebuild these options."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                env[ENV_PREFIX + f.name.upper()] = str(value)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MockOptions:
        """Options from ``FERRULE_MOCK_*`` variables; anything unset keeps its default."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            default = getattr(cls, f.name)
            if f.name == "api_key":
                values[f.name] = raw
            elif isinstance(default, float):
                values[f.name] = float(raw)
            else:
                values[f.name] = int(raw)
        return cls(**values)  # type: ignore[arg-type]
