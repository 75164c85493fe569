"""The one place that chooses between the native kernels and their pure-Python twins.

``FERRULE_BACKEND=auto`` (the default) uses the Rust extension when it imports and otherwise falls
back to Python with one warning; ``rust`` insists on the extension (an ImportError is an error);
``python`` forces the twins. Nothing else in Ferrule imports ``ferrule._native``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from . import _pure

if TYPE_CHECKING:
    from . import _native

BackendName = Literal["rust", "python"]

__all__ = [
    "NAME",
    "AllowanceMeter",
    "ChatRequests",
    "Compressor",
    "ResponsesStreamEncoder",
    "SseDecoder",
    "SseError",
    "StreamTranslator",
    "UpstreamEngine",
    "answer_to_openai",
    "answer_usage",
    "load",
    "rate_headers",
]


class BackendError(RuntimeError):
    """FERRULE_BACKEND asks for something that cannot be had."""


def load(choice: str | None = None) -> tuple[BackendName, ModuleType]:
    """Return ``(name, module)`` for a backend choice (default: ``$FERRULE_BACKEND`` or auto)."""
    choice = (choice or os.environ.get("FERRULE_BACKEND") or "auto").strip().lower()
    if choice == "python":
        return "python", _pure
    if choice not in ("auto", "rust"):
        raise BackendError(f"FERRULE_BACKEND must be auto, rust or python, not {choice!r}")
    try:
        from . import _native
    except ImportError as exc:
        if choice == "rust":
            raise BackendError(
                f"FERRULE_BACKEND=rust but the native extension is missing: {exc}"
            ) from exc
        warnings.warn(
            f"ferrule: native extension not available ({exc}); using the pure-Python backend",
            RuntimeWarning,
            stacklevel=2,
        )
        return "python", _pure
    return "rust", _native


NAME, _module = load()

Compressor: type[_pure.Compressor] = _module.Compressor
SseDecoder: type[_pure.SseDecoder] = _module.SseDecoder
SseError: type[_pure.SseError] = _module.SseError
StreamTranslator: type[_pure.StreamTranslator] = _module.StreamTranslator
ResponsesStreamEncoder: type[_pure.ResponsesStreamEncoder] = _module.ResponsesStreamEncoder
answer_to_openai: Callable[
    [bytes, str, int, str | None], tuple[bytes, tuple[int, int, int, int, int, int]] | None
] = _module.answer_to_openai
answer_usage: Callable[[bytes], tuple[int, int, int, int, int, int] | None] = _module.answer_usage
AllowanceMeter: type[_pure.AllowanceMeter] = _module.AllowanceMeter
ChatRequests: type[_pure.ChatRequests] = _module.ChatRequests
rate_headers: Callable[
    [bool, int | None, int | None, float, int, float, int, float], list[tuple[bytes, bytes]]
] = _module.rate_headers
# Not a kernel: the native backend's upstream HTTP engine (ferrule.upstream_native). The pure
# backend has none; its engine is aiohttp (ferrule.upstream), which is the native one's twin.
UpstreamEngine: type[_native.UpstreamEngine] | None = getattr(_module, "UpstreamEngine", None)
