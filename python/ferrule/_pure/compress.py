"""Prompt compression kernel (pure-Python twin of ``ferrule._native.Compressor``).

One ``Compressor`` per request. ``compress(text, kind, ref)`` is called once per content block, in
request order, and returns the block's new text. The output depends only on the block's own text,
its kind, the mode, and (for deduplication) the blocks compressed before it, so compressing the
first k blocks of a conversation gives the same outputs as compressing all of them: a request is
compressed into a byte-prefix of the compression of the next one (prefix-stable). Compressing an
output again changes nothing (idempotent), and no block ever grows.

Kinds (chosen by the policy layer, ``ferrule.compression``):

- ``tool_result``: tool output. Lossless mode, in this order:
  1. ANSI escape sequences are removed (ECMA-48 CSI, OSC/DCS/SOS/PM/APC strings ended by BEL or
     ``ESC \\`` on the same line, two-character escapes; any other ESC alone);
  2. if what is left is a JSON array or object (strict RFC 8259 grammar), whitespace outside
     strings is removed, so numbers, escapes and key order stay exactly as they were spelled;
  3. otherwise each line keeps only what a terminal would finally show after carriage returns
     (the last non-empty ``\\r``-separated segment, so ``\\r\\n`` becomes ``\\n``), loses trailing
     spaces and tabs, runs of blank lines become one, and leading and trailing blank lines go
     (the result is minified if it turned into JSON that way).
  Aggressive mode then also collapses a run of 3 or more identical lines into the line and a
  count, and cuts an output of more than ``cut_at`` characters to a head and a tail with markers
  saying how many lines were cut, keeping error and traceback lines from the middle.
- ``file``: file contents (from a read/view/edit tool). Kept byte for byte: edit tools match
  exact strings, so even trailing spaces matter.
- ``text``: user-written text. Only ANSI escape sequences are removed.

A ``tool_result`` or ``text`` block that looks like a line-numbered file listing (three
consecutive lines numbered n, n+1, n+2, as ``cat -n``, SWE-agent's ``n:`` and Claude Code's
``n→`` print them) is treated as ``file``.

Deduplication (all kinds, both modes): a block whose compressed text has at least
``DEDUP_MIN_CHARS`` characters and equals the compressed text of an earlier block is replaced by
``[ferrule: same as <ref> above]``, ``<ref>`` naming the earlier block's position as the caller
gave it. Only backwards, and a pointer is never itself a dedup target.

A block that would become empty is kept as it was (the API rejects empty text blocks). Sizes are
counted in characters (code points) in both twins.

NOTE: escape sequences are removed, not interpreted: a line erased with ``ESC [K`` after its last
carriage return still shows its last non-empty part, and cursor movement is ignored. Carriage
returns are read as a terminal's: ``\r\n`` line ends become ``\n`` in tool output, and old Mac
``\r``-only line ends would lose all but the last line (no terminal output uses them).
NOTE: the native twin takes the text as UTF-8, so a ``str`` with lone surrogates (which orjson
never produces) raises ``UnicodeEncodeError`` there and not here.
"""

from __future__ import annotations

import re

__all__ = ["Compressor"]

MODES = ("off", "lossless", "aggressive")
KINDS = ("tool_result", "file", "text")

DEDUP_MIN_CHARS = 200
DEFAULT_CUT_AT = 24_000
MIN_CUT_AT = 1_000
# Room kept for one "[ferrule: N lines cut]" marker line in the cut budget (N < 10**12).
MARKER_RESERVE = 48

POINTER_HEAD = "[ferrule: same as "
POINTER_TAIL = " above]"

# ESC then: a CSI (params 0x30-0x3F, intermediates 0x20-0x2F, final 0x40-0x7E); or an OSC, DCS,
# SOS, PM or APC string up to BEL or ST (ESC \) with no ESC or LF inside; or intermediates and a
# final byte 0x30-0x7E. An ESC that starts none of these is removed alone, so no ESC survives.
_ANSI = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[\]PX^_][^\x07\x1b\n]*(?:\x07|\x1b\\)|[ -/]*[0-~])?"
)

# One JSON token after optional whitespace: a string, a structural character, or a scalar.
# The string is the "unrolled loop" form, so a long unterminated string fails in linear time.
_JSON_TOKEN = re.compile(
    r'[ \t\n\r]*(?:("[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*")'
    r"|([{}\[\],:])"
    r"|(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null))"
)
_JSON_WS = " \t\n\r"

# A numbered listing line: spaces, 1-9 digits, then ":", TAB, "→", "|" or " |".
_NUMBERED = re.compile(r"^ *([0-9]{1,9})(?::|\t|\u2192| ?\|)", re.M)

_BLANK_RUNS = re.compile(r"\n{3,}")

# Lines kept from the middle of a cut output (ASCII case-insensitive substring match).
# NOTE: re.ASCII keeps IGNORECASE from folding U+212A KELVIN SIGN or U+017F LONG S to ASCII.
_IMPORTANT = re.compile(
    r"error|exception|traceback|fail|fatal|panic|critical|assert|abort|segmentation fault|denied",
    re.I | re.A,
)
_TRACEBACK = "Traceback (most recent call last)"


class Compressor:
    """Compress the content blocks of one request, in order (see the module docstring).

    ``mode`` is ``"off"``, ``"lossless"`` or ``"aggressive"``; ``cut_at`` (aggressive only) is the
    size in characters above which a tool output is cut to a head and a tail. Unknown modes and
    kinds, and ``cut_at < 1000``, raise ``ValueError``.
    """

    __slots__ = ("_aggressive", "_cut_at", "_off", "_seen")

    def __init__(self, mode: str, *, cut_at: int = DEFAULT_CUT_AT) -> None:
        if mode not in MODES:
            raise ValueError(f"compression mode must be off, lossless or aggressive, not {mode!r}")
        if cut_at < MIN_CUT_AT:
            raise ValueError(f"cut_at must be at least {MIN_CUT_AT}, not {cut_at}")
        self._off = mode == "off"
        self._aggressive = mode == "aggressive"
        self._cut_at = cut_at
        self._seen: dict[str, str] = {}  # compressed text -> ref of its first block

    def compress(self, text: str, kind: str, ref: str) -> str:
        """The compressed text of the next block; ``ref`` names this block in later pointers."""
        if kind not in KINDS:
            raise ValueError(f"block kind must be tool_result, file or text, not {kind!r}")
        if self._off:
            return text
        if _is_pointer(text):
            return text
        out = text
        if kind != "file" and not _is_listing(text):
            out = _strip_ansi(text)
            if kind == "tool_result":
                out = _clean_tool_output(out)
                if self._aggressive:
                    out = _aggressive(out, self._cut_at)
            if not out:
                return text  # never leave an empty block
        if len(out) >= DEDUP_MIN_CHARS:
            first = self._seen.get(out)
            if first is None:
                self._seen[out] = ref
            else:
                pointer = POINTER_HEAD + first + POINTER_TAIL
                if len(pointer) < len(out):
                    return pointer
        return out


def _is_pointer(text: str) -> bool:
    return text.startswith(POINTER_HEAD) and text.endswith(POINTER_TAIL) and "\n" not in text


# -- recognising file listings ---------------------------------------------------------------------


def _is_listing(text: str) -> bool:
    """Three consecutive lines numbered n, n+1, n+2."""
    run = 0
    prev_line = prev_num = -2
    line = 0
    pos = 0
    for m in _NUMBERED.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        num = int(m.group(1))
        run = run + 1 if line == prev_line + 1 and num == prev_num + 1 else 1
        if run >= 3:
            return True
        prev_line, prev_num = line, num
    return False


# -- lossless ----------------------------------------------------------------------------------


def _strip_ansi(text: str) -> str:
    return _ANSI.sub("", text) if "\x1b" in text else text


def _clean_tool_output(text: str) -> str:
    minified = _minify_json(text)
    if minified is not None:
        return minified
    lines = text.split("\n")
    if "\r" in text:
        lines = [_final_segment(line) if "\r" in line else line for line in lines]
    out = "\n".join([line.rstrip(" \t") for line in lines])
    out = _BLANK_RUNS.sub("\n\n", out).strip("\n")
    if out == text:
        return text
    minified = _minify_json(out)
    return out if minified is None else minified


def _final_segment(line: str) -> str:
    """What a terminal shows of a line redrawn with carriage returns: the last non-empty part."""
    for segment in reversed(line.split("\r")):
        if segment:
            return segment
    return ""


# Parser states of the JSON grammar check: what the next token may be.
_VALUE, _VALUE_OR_CLOSE, _KEY, _KEY_OR_CLOSE, _COLON, _COMMA_OR_CLOSE, _END = range(7)


def _minify_json(text: str) -> str | None:
    """``text`` without whitespace outside strings when it is a JSON array or object, else None.

    A strict RFC 8259 check (no trailing commas, no comments, no leading zeros, control
    characters only as escapes, any nesting depth) over the source text: tokens are copied as
    they are spelled, never parsed and re-serialized.
    """
    start = len(text) - len(text.lstrip(_JSON_WS))
    if start == len(text) or text[start] not in "{[":
        return None
    tokens: list[str] = []
    stack: list[str] = []
    state = _VALUE
    pos = 0
    end = len(text)
    match = _JSON_TOKEN.match
    while True:
        m = match(text, pos)
        if m is None:
            break
        pos = m.end()
        string, punct, scalar = m.groups()
        if string is not None:
            if state in (_VALUE, _VALUE_OR_CLOSE):
                state = _COMMA_OR_CLOSE if stack else _END
            elif state in (_KEY, _KEY_OR_CLOSE):
                state = _COLON
            else:
                return None
            tokens.append(string)
            continue
        if scalar is not None:
            if state not in (_VALUE, _VALUE_OR_CLOSE):
                return None
            state = _COMMA_OR_CLOSE if stack else _END
            tokens.append(scalar)
            continue
        if punct == "{" or punct == "[":
            if state not in (_VALUE, _VALUE_OR_CLOSE):
                return None
            stack.append(punct)
            state = _KEY_OR_CLOSE if punct == "{" else _VALUE_OR_CLOSE
        elif punct == "}":
            if (state != _KEY_OR_CLOSE and state != _COMMA_OR_CLOSE) or stack[-1] != "{":
                return None
            stack.pop()
            state = _COMMA_OR_CLOSE if stack else _END
        elif punct == "]":
            if (state != _VALUE_OR_CLOSE and state != _COMMA_OR_CLOSE) or stack[-1] != "[":
                return None
            stack.pop()
            state = _COMMA_OR_CLOSE if stack else _END
        elif punct == ",":
            if state != _COMMA_OR_CLOSE:
                return None
            state = _KEY if stack[-1] == "{" else _VALUE
        else:  # ":"
            if state != _COLON:
                return None
            state = _VALUE
        tokens.append(punct)
    if state != _END:
        return None
    # Only whitespace may follow the document.
    if len(text) - len(text.rstrip(_JSON_WS)) != end - pos:
        return None
    out = "".join(tokens)
    return text if len(out) == len(text) else out


# -- aggressive ----------------------------------------------------------------------------------


def _aggressive(text: str, cut_at: int) -> str:
    lines = text.split("\n")
    if len(text) > cut_at:
        lines = [_cap_line(line, cut_at) for line in lines]
    lines = _collapse_runs(lines)
    out = "\n".join(lines)
    if len(out) > cut_at:
        out = "\n".join(_cut(lines, cut_at))
    if out == text:
        return text
    minified = _minify_json(out)  # a cut inside a long JSON string can leave valid JSON
    return out if minified is None else minified


def _cap_line(line: str, cut_at: int) -> str:
    """A line longer than cut_at/6 keeps its first cut_at/10 and last cut_at/24 characters."""
    if len(line) <= cut_at // 6:
        return line
    head, tail = cut_at // 10, cut_at // 24
    return f"{line[:head]} [ferrule: {len(line) - head - tail} chars cut] {line[-tail:]}"


def _collapse_runs(lines: list[str]) -> list[str]:
    """Runs of 3+ identical non-empty lines become the line and a count, while that is shorter.

    Repeated until nothing changes, so the result has no such run left (idempotence).
    """
    while True:
        out: list[str] = []
        changed = False
        i, n = 0, len(lines)
        while i < n:
            line = lines[i]
            j = i + 1
            while j < n and lines[j] == line:
                j += 1
            count = j - i
            if count >= 3 and line:
                marker = f"[ferrule: previous line repeated {count - 1} more times]"
                if len(line) + 1 + len(marker) < count * (len(line) + 1) - 1:
                    out.append(line)
                    out.append(marker)
                    changed = True
                    i = j
                    continue
            out.extend(lines[i:j])
            i = j
        if not changed:
            return out
        lines = out


def _important(lines: list[str]) -> list[bool]:
    """Error lines, and every line of a Python traceback up to its exception line."""
    flags = []
    in_traceback = False
    for line in lines:
        flags.append(in_traceback or _IMPORTANT.search(line) is not None)
        if _TRACEBACK in line:
            in_traceback = True
        elif in_traceback and not line.startswith((" ", "\t")):
            in_traceback = False
    return flags


def _cut(lines: list[str], cut_at: int) -> list[str]:
    """A head of cut_at/4 and a tail of cut_at/4 characters, with up to cut_at/3 characters of
    important lines (markers included) from between them; a marker counts each cut run of lines.
    """
    n = len(lines)
    budget = cut_at // 4
    head = 0
    while head < n and len(lines[head]) + 1 <= budget:
        budget -= len(lines[head]) + 1
        head += 1
    budget = cut_at // 4
    tail = n
    while tail > head and len(lines[tail - 1]) + 1 <= budget:
        budget -= len(lines[tail - 1]) + 1
        tail -= 1
    if tail <= head:
        return lines
    flags = _important(lines)
    out = lines[:head]
    budget = cut_at // 3 - MARKER_RESERVE  # the last gap's marker is paid for up front
    last = head - 1  # index of the last line kept
    for i in range(head, tail):
        if not flags[i]:
            continue
        gap = i - last - 1
        cost = len(lines[i]) + 1 + (MARKER_RESERVE if gap else 0)
        if cost > budget:
            continue
        budget -= cost
        if gap:
            out.append(f"[ferrule: {gap} lines cut]")
        out.append(lines[i])
        last = i
    gap = tail - last - 1
    if gap:
        out.append(f"[ferrule: {gap} lines cut]")
    out.extend(lines[tail:])
    return out
