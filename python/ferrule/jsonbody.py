"""Large request bodies without long stalls: a JSON parser and a serializer whose every step is
bounded, and a nesting-depth check.

Why: orjson parses and serializes in one C call that holds the GIL from start to end. Run in a
worker thread, that call still stops the event loop (health checks, every other request's bytes)
for as long as it runs: measured on a 31 MiB body, ~0.5 s for 950,000 small messages and up to
6 s for ten million empty lists (garbage collection included). :func:`loads` cuts a large
document into pieces of at most :data:`MAX_PIECE` bytes that orjson parses one at a time, so
another thread (the event loop) gets the GIL between two pieces; :func:`dumps` writes long lists
in slices the same way.

How :func:`loads` cuts, and why the result is exactly ``orjson.loads(raw)``: it walks the
document's containers itself, and inside an array (or object) it guesses where a run of whole
elements (members) ends: the first ``,`` at least ``piece`` bytes ahead that looks like a
separator between two elements of the same kind (``}, {"role"`` when the first element starts
``{"role"``). It then asks orjson to parse ``[`` + the bytes up to that comma + ``]``. The walk
starts each run at an element boundary, so the bytes are read in the state they have in the whole
document: if orjson accepts them as an array, they are whole elements and the comma is this
array's separator (a comma inside a string or inside a nested container would leave the piece
unterminated or unbalanced, and a guess past the array's end would close it early and leave a
trailing character: both are refused). A refused guess costs one failed piece; the walk then
steps over one element (descending into it if it is a container) and guesses again with a
smaller piece. Strings, numbers and literals the walk meets itself are parsed by orjson too,
so every value, error and limit is orjson's.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import orjson

__all__ = [
    "MAX_DEPTH",
    "MAX_PIECE",
    "JsonError",
    "TooDeep",
    "dismantle",
    "dumps",
    "loads",
    "too_deep",
]

MAX_DEPTH = 128
"""Nesting Ferrule accepts in what it forwards or re-encodes. orjson parses 1,024 levels but
serializes only 254, and no real request comes near either (JSON schemas of tools: ~10-20)."""

MAX_PIECE = 256 * 1024
"""Largest piece orjson parses in one call: ~15 ms for the densest JSON (empty lists) on a
slow core, ~1 ms for text."""
_FIRST_PIECE = 64 * 1024
_MIN_PIECE = 4 * 1024
_SLICE = 512  # list elements serialized per orjson call by dumps

_WS = re.compile(rb"[ \t\n\r]*")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_SCALAR = re.compile(rb"-?[0-9][0-9.eE+-]*|true|false|null")
_SEP = rb"[ \t\n\r]*,[ \t\n\r]*"
# where a run of array elements may end, by the kind of element (its first byte)
_CUT_LIST = re.compile(rb"\]" + _SEP + rb"\[")
_CUT_STRING = re.compile(rb'"' + _SEP + rb'"')
_CUT_SCALAR = re.compile(rb"[0-9el]" + _SEP + rb"[-0-9tfn]")
_CUT_OBJECT = re.compile(rb"\}" + _SEP + rb"\{")
_CUT_MEMBER = re.compile(rb"," + rb"[ \t\n\r]*" + rb'"')


class JsonError(ValueError):
    """The body is not valid JSON (the message says where)."""


class TooDeep(ValueError):
    """The body nests containers deeper than allowed."""


@lru_cache(maxsize=64)
def _cut_objects(first_key: bytes) -> re.Pattern[bytes]:
    """Separators between objects that start with the same key, e.g. ``}, {"role"``: a nested
    object (a content block starting ``{"type"``) does not match, so guesses are rarely wrong."""
    return re.compile(rb"\}" + _SEP + rb"\{[ \t\n\r]*" + re.escape(first_key))


class _Walk:
    """The bounded-step parser (see the module docstring)."""

    __slots__ = ("max_depth", "piece", "raw", "view")

    def __init__(self, raw: bytes, max_depth: int) -> None:
        self.raw = raw
        self.view = memoryview(raw)
        self.piece = _FIRST_PIECE
        self.max_depth = max_depth

    def ws(self, p: int) -> int:
        m = _WS.match(self.raw, p)
        assert m is not None  # the pattern matches the empty string
        return m.end()

    def byte(self, p: int) -> int:
        if p >= len(self.raw):
            raise JsonError(f"unexpected end of data at byte {p}")
        return self.raw[p]

    def value(self, p: int, depth: int) -> tuple[Any, int]:
        c = self.byte(p)
        if c == 0x7B:  # {
            return self.object(p, depth + 1)
        if c == 0x5B:  # [
            return self.array(p, depth + 1)
        m = (_STRING if c == 0x22 else _SCALAR).match(self.raw, p)
        if m is None:
            raise JsonError(f"unexpected character at byte {p}")
        return self.orjson(p, m.end()), m.end()

    def orjson(self, start: int, end: int, before: bytes = b"") -> Any:
        data = before + self.raw[start:end] if before else self.view[start:end]
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise JsonError(f"{exc.msg} (near byte {start})") from None

    def attempt(self, start: int, cut: re.Pattern[bytes], wrap: bytes) -> tuple[Any, int, bool]:
        """Parse whole elements (members) of the container being walked, from the element
        boundary ``start``: up to a guessed separator ``piece`` bytes ahead, or to the end of the
        container when it ends first (or when the rest of the document is short). Returns
        (elements, position, finished): position is the separator's comma, or just past the
        container's closing bracket when finished. ``(None, start, False)`` when there is no
        guess or orjson refuses it: the caller then steps over one element."""
        raw = self.raw
        rest = len(raw) - start
        m = cut.search(raw, start + self.piece) if rest > self.piece else None
        if m is not None and m.start() - start <= 4 * self.piece:
            end = raw.index(b",", m.start())
            data = wrap[:1] + raw[start:end] + wrap[1:]
        elif rest <= 4 * self.piece:
            end = len(raw)  # the container must close before the document does
            data = wrap[:1] + raw[start:]
        else:
            return None, start, False
        try:
            run = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            closed = self.closed_at(data, exc, wrap[1:])
            if closed is None:
                self.piece = max(self.piece // 8, _MIN_PIECE)
                return None, start, False
            # The container closed before the guess: parse exactly up to its closing bracket.
            return self.orjson(start, start + closed - 1, wrap[:1]), start + closed - 1, True
        self.piece = min(self.piece * 2, MAX_PIECE)
        return run, end, end == len(raw)

    @staticmethod
    def closed_at(data: bytes, exc: ValueError, close: bytes) -> int | None:
        """Where in ``data`` the content after the container's own closing bracket starts, when
        that is why orjson refused ``data``; else None."""
        msg, pos = getattr(exc, "msg", ""), getattr(exc, "pos", None)
        if not isinstance(pos, int) or not isinstance(msg, str):
            return None
        if not msg.startswith(("unexpected content after document", "trailing characters")):
            return None
        # pos counts characters
        if not data.isascii():
            pos = len(data.decode("utf-8", "replace")[:pos].encode("utf-8", "surrogatepass"))
        if data[:pos].rstrip(b" \t\n\r")[-1:] != close:
            return None  # not what we expected: step over one element instead
        return pos

    def depth_ok(self, depth: int, p: int) -> None:
        if depth > self.max_depth:
            raise TooDeep(f"more than {self.max_depth} levels deep (at byte {p})")

    def array(self, p: int, depth: int) -> tuple[list[Any], int]:
        self.depth_ok(depth, p)
        items: list[Any] = []
        q = self.ws(p + 1)
        if self.byte(q) == 0x5D:  # ]
            return items, q + 1
        while True:
            run, end, finished = self.attempt(q, self.array_cut(q), b"[]")
            if run is not None:
                items.extend(run)
                if finished:
                    return items, end
                q = self.ws(end + 1)
                continue
            item, q = self.value(q, depth)
            items.append(item)
            q = self.ws(q)
            c = self.byte(q)
            if c == 0x5D:
                return items, q + 1
            if c != 0x2C:  # ,
                raise JsonError(f"expected ',' or ']' at byte {q}")
            q = self.ws(q + 1)
            if self.byte(q) == 0x5D:
                raise JsonError(f"trailing comma at byte {q}")

    def array_cut(self, q: int) -> re.Pattern[bytes]:
        c = self.raw[q]
        if c == 0x7B:
            k = self.ws(q + 1)
            m = _STRING.match(self.raw, k)
            if m is not None and m.end() - k <= 64:
                return _cut_objects(m.group())
            return _CUT_OBJECT
        if c == 0x5B:
            return _CUT_LIST
        if c == 0x22:
            return _CUT_STRING
        return _CUT_SCALAR

    def object(self, p: int, depth: int) -> tuple[dict[str, Any], int]:
        self.depth_ok(depth, p)
        out: dict[str, Any] = {}
        q = self.ws(p + 1)
        if self.byte(q) == 0x7D:  # }
            return out, q + 1
        while True:
            run, end, finished = self.attempt(q, _CUT_MEMBER, b"{}")
            if run is not None:
                out.update(run)  # a repeated key keeps its first place and last value, as orjson
                if finished:
                    return out, end
                q = self.ws(end + 1)
                continue
            if self.byte(q) != 0x22:
                raise JsonError(f"expected a key at byte {q}")
            m = _STRING.match(self.raw, q)
            if m is None:
                raise JsonError(f"unterminated key at byte {q}")
            key = self.orjson(q, m.end())
            q = self.ws(m.end())
            if self.byte(q) != 0x3A:  # :
                raise JsonError(f"expected ':' at byte {q}")
            value, q = self.value(self.ws(q + 1), depth)
            out[key] = value
            q = self.ws(q)
            c = self.byte(q)
            if c == 0x7D:
                return out, q + 1
            if c != 0x2C:
                raise JsonError(f"expected ',' or '}}' at byte {q}")
            q = self.ws(q + 1)
            if self.byte(q) != 0x22:
                raise JsonError(f"expected a key at byte {q}")


def loads(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """``orjson.loads(raw)`` in steps of at most :data:`MAX_PIECE` bytes (module docstring).

    For large bodies, off the event loop (``asyncio.to_thread``). Raises :class:`JsonError` for
    invalid JSON and :class:`TooDeep` when a container the walk itself enters (one larger than
    a piece) is nested deeper than ``max_depth``; smaller ones are for :func:`too_deep`."""
    if len(raw) <= MAX_PIECE:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise JsonError(str(exc)) from None
    return _walk(raw, max_depth)


def _walk(raw: bytes, max_depth: int) -> Any:
    walk = _Walk(raw, max_depth)
    try:
        value, end = walk.value(walk.ws(0), 0)
    except RecursionError:
        raise TooDeep(f"more than {max_depth} levels deep") from None
    if walk.ws(end) != len(raw):
        raise JsonError(f"trailing characters at byte {walk.ws(end)}")
    return value


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests lists and dicts more than ``limit`` levels deep (the value itself
    is level 1). Level by level, no recursion; about 25 ns per container."""
    level = [value]
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        add = below.append
        for item in level:
            if item.__class__ is dict:
                children: Any = item.values()
            elif item.__class__ is list:
                children = item
            else:
                continue
            for child in children:
                if child.__class__ is dict or child.__class__ is list:
                    add(child)
        level = below
    return False


def dumps(value: Any) -> bytes:
    """``orjson.dumps(value)``, byte for byte, with long lists and dicts (and those holding one,
    two levels down: a message with a long content list) written ``_SLICE`` elements per call,
    so that no single call serializes a whole large body."""
    parts: list[bytes] = []
    _dump(value, parts)
    return b"".join(parts)


def _long(value: Any) -> bool:
    return (value.__class__ is list or value.__class__ is dict) and len(value) > _SLICE


def _holds_long(values: Any) -> bool:
    """Whether one of ``values`` is long, or is a dict with a long value."""
    for v in values:
        cls = v.__class__
        if cls is list:
            if len(v) > _SLICE:
                return True
        elif cls is dict:
            if len(v) > _SLICE:
                return True
            for w in v.values():
                if (w.__class__ is list or w.__class__ is dict) and len(w) > _SLICE:
                    return True
    return False


def _dump(value: Any, parts: list[bytes]) -> None:
    cls = value.__class__
    if cls is dict and (len(value) > _SLICE or _holds_long(value.values())):
        if not all(k.__class__ is str for k in value):
            parts.append(orjson.dumps(value))
            return
        parts.append(b"{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                parts.append(b",")
            parts.append(orjson.dumps(key))
            parts.append(b":")
            _dump(item, parts)
        parts.append(b"}")
    elif cls is list and (len(value) > _SLICE or _holds_long(value)):
        parts.append(b"[")
        for start in range(0, len(value), _SLICE):
            if start:
                parts.append(b",")
            chunk = value[start : start + _SLICE]
            if _holds_long(chunk):
                for i, item in enumerate(chunk):
                    if i:
                        parts.append(b",")
                    _dump(item, parts)
            else:
                parts.append(orjson.dumps(chunk)[1:-1])
        parts.append(b"]")
    else:
        parts.append(orjson.dumps(value))


def dismantle(value: Any) -> None:
    """Empty ``value``, a parsed request no longer used, a slice at a time (run it in a thread).

    Freeing a request of a million objects is one C call: dropping its last reference frees
    them all in a row, holding the GIL for ~100 ms. Emptied here :data:`_SLICE` elements at a
    time (long lists and dicts, and those holding one, first), each step is short, and the
    request is an empty shell when its last reference goes."""
    cls = value.__class__
    if cls is dict:
        for item in value.values():
            if _long(item) or (item.__class__ is dict and _holds_long(item.values())):
                dismantle(item)
        value.clear()
    elif cls is list:
        while value:
            tail = value[-_SLICE:]
            del value[-_SLICE:]
            if _holds_long(tail):
                for item in tail:
                    if item.__class__ is list or item.__class__ is dict:
                        dismantle(item)
            del tail
