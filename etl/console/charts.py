"""Charts drawn on the server as SVG: no script, no network, nothing to ship but the markup."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT, PAD = 720, 160, 28


@dataclass(frozen=True)
class Bar:
    label: str  # shown on hover (<title>)
    value: float
    failed: bool = False


def bar_chart(title: str, bars: Sequence[Bar], unit: str = "", limit: float | None = None) -> str:
    """One bar a value (oldest left), failures in red; an optional limit as a dashed line."""
    top = max([b.value for b in bars] + [limit or 0.0, 1.0])
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    step = inner_w / max(len(bars), 1)
    parts = [f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{PAD}" y="16" class="chart-title">{escape(title)} (max {top:,.1f}{escape(unit)})</text>',
             f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" class="axis"/>']
    for n, bar in enumerate(bars):
        h = inner_h * bar.value / top
        x, y = PAD + n * step, HEIGHT - PAD - h
        mark = "mark failed" if bar.failed else "mark"
        parts.append(f'<rect class="{mark}" x="{x:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" height="{h:.1f}">'
                     f'<title>{escape(bar.label)}: {bar.value:,.1f}{escape(unit)}</title></rect>')
    if limit is not None:
        y = HEIGHT - PAD - inner_h * limit / top
        parts.append(f'<line class="limit" x1="{PAD}" y1="{y:.1f}" x2="{WIDTH - PAD}" y2="{y:.1f}">'
                     f'<title>limit {limit:,.0f}{escape(unit)}</title></line>')
    parts.append("</svg>")
    return "".join(parts)
