"""Incremental Server-Sent Events decoder (pure-Python twin of ``ferrule._native.SseDecoder``).

Implements the WHATWG "event stream interpretation" rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):

- lines end with ``\\r\\n``, ``\\r`` or ``\\n``, and a ``\\r\\n`` may be split across two chunks;
- the stream is UTF-8; a multi-byte character may be split across chunks, and invalid sequences
  are replaced with U+FFFD (we decode whole lines, so a split character is never seen half-way);
- one leading byte-order mark is dropped;
- ``:`` starts a comment, ``field: value`` loses exactly one space after the colon;
- ``data`` lines accumulate with ``\\n`` between them; a blank line dispatches the event;
- an event with an empty data buffer is not dispatched; an unterminated event at end of stream is
  discarded (so there is nothing to flush at the end).

NOTE: unlike httpx's ``aiter_lines()``, only CR and LF end a line; ``\\x0b``, ``\\x0c`` and
``\\u2028`` are ordinary characters here, as the spec requires.
"""

from __future__ import annotations

__all__ = ["SseDecoder", "SseError"]

_BOM = b"\xef\xbb\xbf"


class SseError(ValueError):
    """The stream broke a limit the decoder was asked to enforce (never raised for bad syntax).

    ``events`` holds the events the chunk completed before the limit broke, so a reader can still
    act on them: whether they arrive in the same chunk as the breach is the network's choice.
    """

    def __init__(self, message: str, events: list[tuple[str, str, str]] | None = None) -> None:
        super().__init__(message)
        self.events: list[tuple[str, str, str]] = events if events is not None else []


class SseDecoder:
    """Feed raw bytes, get back complete events as ``(event, data, id)`` tuples.

    ``event`` is ``"message"`` when the stream named none; ``id`` is the last event id seen so far
    (the spec's "last event ID buffer"), ``""`` when none. ``retry`` holds the last valid
    ``retry:`` value in milliseconds, or ``None``.

    ``max_line_bytes`` bounds the bytes held for one unterminated line and ``max_event_bytes`` the
    bytes of the ``data`` lines (as received) buffered for one event; exceeding either raises ``SseError`` so a hostile or broken
    upstream cannot make the proxy buffer without limit. ``0`` means unlimited.
    """

    __slots__ = (
        "_bom_checked",
        "_buf",
        "_data",
        "_data_bytes",
        "_event",
        "_last_id",
        "_max_event",
        "_max_line",
        "_skip_lf",
        "retry",
    )

    def __init__(self, *, max_line_bytes: int = 0, max_event_bytes: int = 0) -> None:
        self._buf = bytearray()
        self._skip_lf = False  # the previous chunk ended on "\r": a leading "\n" belongs to it
        self._bom_checked = False
        self._event = ""
        self._data: list[str] = []
        self._data_bytes = 0
        self._last_id = ""
        self._max_line = max_line_bytes
        self._max_event = max_event_bytes
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[tuple[str, str, str]]:
        buf = self._buf
        buf += chunk
        if not self._bom_checked:
            if len(buf) < 3 and _BOM.startswith(bytes(buf)):
                return []  # could still be a BOM: wait for more bytes
            if buf.startswith(_BOM):
                del buf[:3]
            self._bom_checked = True
        events: list[tuple[str, str, str]] = []
        pos = 0
        end = len(buf)
        if self._skip_lf and pos < end:
            if buf[0] == 0x0A:
                pos = 1
            self._skip_lf = False
        cr = buf.find(b"\r", pos)
        lf = buf.find(b"\n", pos)
        while cr != -1 or lf != -1:
            if cr == -1 or (lf != -1 and lf < cr):
                line_end, next_pos = lf, lf + 1
            else:
                line_end, next_pos = cr, cr + 1
                if next_pos < end:
                    if buf[next_pos] == 0x0A:
                        next_pos += 1
                else:
                    self._skip_lf = True
            try:
                self._line(bytes(buf[pos:line_end]), events)
            except SseError as exc:
                exc.events = events
                raise
            pos = next_pos
            # NOTE: search again only past a line end already used, so that a chunk with no "\r"
            # is not rescanned to its end for every line (quadratic in the chunk size).
            if cr != -1 and cr < pos:
                cr = buf.find(b"\r", pos)
            if lf != -1 and lf < pos:
                lf = buf.find(b"\n", pos)
        del buf[:pos]
        if self._max_line and len(buf) > self._max_line:
            raise SseError(f"SSE line longer than {self._max_line} bytes", events)
        return events

    def _line(self, raw: bytes, events: list[tuple[str, str, str]]) -> None:
        if not raw:
            # Blank line: dispatch. "If the data buffer is an empty string, set the data buffer
            # and the event type buffer to the empty string and return."
            if self._data:
                data = "\n".join(self._data)
                events.append((self._event or "message", data, self._last_id))
            self._data = []
            self._data_bytes = 0
            self._event = ""
            return
        line = raw.decode("utf-8", "replace")
        colon = line.find(":")
        if colon == 0:
            return  # comment
        if colon == -1:
            field, value = line, ""
        else:
            field = line[:colon]
            value = line[colon + 1 :]
            if value.startswith(" "):
                value = value[1:]
        if field == "data":
            self._data.append(value)
            self._data_bytes += len(raw)
            if self._max_event and self._data_bytes > self._max_event:
                raise SseError(f"SSE event larger than {self._max_event} bytes")
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\x00" not in value:
                self._last_id = value
        elif field == "retry":
            # NOTE: leading zeros go before int(), which refuses strings over 4300 digits; the
            # native twin holds a u64, so larger values are ignored.
            digits = value.lstrip("0")
            if value and value.isascii() and value.isdigit() and len(digits) <= 20:
                retry = int(digits or "0")
                if retry < 1 << 64:
                    self.retry = retry
        # any other field is ignored
