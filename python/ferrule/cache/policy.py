"""When the response cache may answer a request, and when it may keep the answer.

Rules, in this order (the first that applies wins):

1. ``x-ferrule-cache: off``: BYPASS, the cache is neither read nor written.
2. ``Cache-Control: no-store`` (RFC 9111 request directive): BYPASS. Nothing about this request
   may be kept, and we do not read either: a client that forbids storing is asking for a fresh,
   private answer.
3. Eligibility. ``x-ferrule-cache: on`` makes any request eligible. Otherwise only deterministic
   requests are, and only when ``default_on_deterministic`` is set: ``temperature`` present and
   equal to 0 in the translated Anthropic body. A request without ``temperature`` samples at the
   API's default (1.0), so two calls legitimately differ and replaying one would change what the
   client asked for. A request that is not eligible is a BYPASS.
4. ``Cache-Control: no-cache`` on an eligible request: do not read, but store the fresh answer
   (a forced refresh: the new answer replaces the old one). x-cache reports MISS.
5. Otherwise read, and store on a miss.

Extended thinking: a request with ``thinking`` enabled is never cached by default. It cannot be
deterministic (the API requires temperature 1 while thinking, and the translator drops
temperature), and the answer carries signed thinking blocks whose reuse the client did not ask
for. With an explicit ``x-ferrule-cache: on`` it is cached like any other request: the stored
thinking blocks and their signatures are genuine model output and stay valid when replayed.

``x-cache`` values: HIT (answered from the cache), MISS (went upstream; the answer is stored when
it completes), BYPASS (the cache took no part, either by policy or because the store is down).
An unknown ``x-ferrule-cache`` value is ignored (the default rules apply) and named in ``reason``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["HEADER", "Decision", "XCache", "decide", "is_deterministic"]

HEADER = b"x-ferrule-cache"
XCache = Literal["HIT", "MISS", "BYPASS"]


@dataclass(frozen=True)
class Decision:
    """What the route may do with the cache for one request.

    ``read``: look the key up and answer from it on a hit. ``store``: keep a complete 200 answer
    from upstream. ``reason``: a short phrase for logs and the ledger (never sent to clients).
    """

    read: bool
    store: bool
    reason: str

    @property
    def uses_cache(self) -> bool:
        return self.read or self.store

    @property
    def upstream_x_cache(self) -> XCache:
        """``x-cache`` for a request answered from upstream under this decision."""
        return "MISS" if self.uses_cache else "BYPASS"


def is_deterministic(body: Mapping[str, Any]) -> bool:
    """``temperature`` present and exactly 0 (a bool is not a number), and no thinking."""
    if _thinking_on(body):
        return False
    t = body.get("temperature")
    return isinstance(t, (int, float)) and not isinstance(t, bool) and t == 0


def _thinking_on(body: Mapping[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, Mapping) and thinking.get("type") not in (None, "disabled")


def _values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """Every value of a header (ASGI names are lower-case), as lower-case latin-1 text."""
    return [bytes(v).decode("latin-1").strip().lower() for k, v in headers if k.lower() == name]


def _directives(headers: Iterable[tuple[bytes, bytes]]) -> set[str]:
    """Cache-Control directive names, from every Cache-Control header (RFC 9111 5.2)."""
    out: set[str] = set()
    for value in _values(headers, b"cache-control"):
        for part in value.split(","):
            name = part.split("=", 1)[0].strip()
            if name:
                out.add(name)
    return out


def decide(
    headers: Iterable[tuple[bytes, bytes]],
    body: Mapping[str, Any],
    default_on_deterministic: bool = True,
) -> Decision:
    """Apply the rules of the module docstring to ASGI request headers and a translated body."""
    return decide_for(headers, _thinking_on(body), is_deterministic(body), default_on_deterministic)


def decide_for(
    headers: Iterable[tuple[bytes, bytes]],
    thinking: bool,
    deterministic: bool,
    default_on_deterministic: bool = True,
) -> Decision:
    """:func:`decide` from what it reads of the body: whether the request thinks and whether
    it is deterministic (the native request path has no body object to read them from)."""
    headers = list(headers)
    switch = _values(headers, HEADER)
    forced = switch[-1] if switch else None  # NOTE: when repeated, the last value counts
    if forced == "off":
        return Decision(False, False, "x-ferrule-cache: off")
    note = ""
    if forced is not None and forced != "on":
        note = f" (unknown x-ferrule-cache value {forced!r} ignored)"
    directives = _directives(headers)
    if "no-store" in directives:
        return Decision(False, False, "cache-control: no-store" + note)
    if forced == "on":
        why = "x-ferrule-cache: on"
    elif thinking:
        return Decision(False, False, "extended thinking (opt in with x-ferrule-cache: on)" + note)
    elif not default_on_deterministic:
        return Decision(False, False, "cache off by default" + note)
    elif deterministic:
        why = "temperature 0"
    else:
        return Decision(False, False, "not deterministic (temperature is not 0)" + note)
    if "no-cache" in directives:
        return Decision(False, True, f"cache-control: no-cache, {why}{note}")
    return Decision(True, True, why + note)
