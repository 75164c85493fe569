"""Charts drawn on the server as SVG text: no charting library in the page, nothing fetched from
elsewhere, and a chart is readable by a screen reader (a title, and each bar's value)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape

__all__ = ["bars"]

# A narrow canvas: shown about 350 px wide, its 14-unit text stays readable.
_W, _H = 480, 200
_LEFT, _BOTTOM, _TOP = 70, 26, 22
_COLOURS = ("#2b6cb0", "#2f855a", "#b7791f")


def _num(v: float, money: bool) -> str:
    if money:
        return f"${v:,.4f}" if abs(v) < 1 else f"${v:,.2f}"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.1f}{unit}"
    return f"{v:g}"


def _when(ts: float, bucket: int) -> str:
    t = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    return t.strftime("%m-%d" if bucket >= 86400 else "%H:%M")


def bars(
    times: Sequence[float],
    series: Sequence[Sequence[float]],
    names: Sequence[str],
    title: str,
    bucket: int,
    *,
    money: bool = False,
) -> str:
    """Grouped bars, one group per time bucket (UTC), one bar per series."""
    top = max([0.0, *(v for s in series for v in s)])
    scale = (_H - _BOTTOM - _TOP) / top if top > 0 else 0.0
    n = max(1, len(times))
    slot = (_W - _LEFT - 4) / n
    width = max(1.0, slot * 0.8 / max(1, len(series)))
    parts = [
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-label="{escape(title)}"'
        f' xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<line x1="{_LEFT}" y1="{_H - _BOTTOM}" x2="{_W}" y2="{_H - _BOTTOM}" stroke="#888"/>',
        f'<text x="{_LEFT - 4}" y="{_TOP + 5}" text-anchor="end" font-size="14"'
        f' fill="#333">{escape(_num(top, money))}</text>',
        f'<text x="{_LEFT - 4}" y="{_H - _BOTTOM}" text-anchor="end" font-size="14"'
        ' fill="#333">0</text>',
    ]
    for k, values in enumerate(series):
        colour = _COLOURS[k % len(_COLOURS)]
        for i, v in enumerate(values):
            if v <= 0:
                continue
            h = max(1.0, v * scale)
            x = _LEFT + i * slot + slot * 0.1 + k * width
            y = _H - _BOTTOM - h
            label = f"{names[k]} {_when(times[i], bucket)}: {_num(v, money)}"
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{h:.1f}"'
                f' fill="{colour}"><title>{escape(label)}</title></rect>'
            )
    for i in (0, n // 2, n - 1) if n > 2 else range(n):
        x = _LEFT + i * slot + slot / 2
        anchor = "start" if i == 0 and n > 2 else "end" if i == n - 1 and n > 2 else "middle"
        parts.append(
            f'<text x="{x:.1f}" y="{_H - 6}" text-anchor="{anchor}" font-size="14"'
            f' fill="#333">{escape(_when(times[i], bucket))}</text>'
        )
    if len(series) > 1:
        for k, name in enumerate(names):
            x = _W - 160 + k * 80
            parts.append(
                f'<rect x="{x}" y="3" width="12" height="12" fill="{_COLOURS[k]}"/>'
                f'<text x="{x + 16}" y="14" font-size="14" fill="#333">{escape(name)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
