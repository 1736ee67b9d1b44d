"""Grouped horizontal bar charts as plain SVG (no plotting library: nothing to install, and
the output is small, diffable text)."""

from __future__ import annotations

from html import escape

PALETTE = {"ps-agent": "#2b7bb9", "ps-webhook": "#2b7bb9", "go-library": "#8c6bb1",
           "python-library": "#e6862b", "vault-k8s": "#5c5c5c", "curl": "#7fbf7b"}
FALLBACK = ["#2b7bb9", "#8c6bb1", "#e6862b", "#5c5c5c", "#7fbf7b"]


def bars(title: str, unit: str, groups: list[tuple[str, list[tuple[str, float, str]]]],
         note: str = "", log: bool = False) -> str:
    """groups: [(group label, [(series name, value, value label), ...]), ...].

    One bar per series within each group, all against one scale (logarithmic when `log`, for
    figures a hundred times apart)."""
    import math
    width, left, right = 760, 150, 110
    bar_h, gap, group_gap, top = 16, 3, 14, 46
    series = []
    for _, items in groups:
        for name, _, _ in items:
            if name not in series:
                series.append(name)
    n_rows = sum(len(items) for _, items in groups)
    height = top + n_rows * (bar_h + gap) + len(groups) * group_gap + 40 + (16 if note else 0)
    values = [v for _, items in groups for _, v, _ in items if v > 0]
    vmax = max(values) if values else 1.0
    vmin = min(values) if values else 1.0
    span = width - left - right

    def scale(v: float) -> float:
        if v <= 0:
            return 0.0
        if log:
            lo = math.floor(math.log10(vmin))
            hi = math.log10(vmax)
            return max(2.0, span * (math.log10(v) - lo + 0.15) / (hi - lo + 0.15))
        return span * v / vmax

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="20" font-size="15" font-weight="bold">{escape(title)}</text>',
           f'<text x="10" y="36" fill="#555">{escape(unit)}{" (log scale)" if log else ""}</text>']
    y = top
    for label, items in groups:
        gh = len(items) * (bar_h + gap)
        out.append(f'<text x="{left - 8}" y="{y + gh / 2 + 4}" text-anchor="end" font-weight="bold">{escape(label)}</text>')
        for name, v, vlabel in items:
            color = PALETTE.get(name, FALLBACK[series.index(name) % len(FALLBACK)])
            w = scale(v)
            out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"><title>{escape(name)}: {escape(vlabel)}</title></rect>')
            out.append(f'<text x="{left + w + 4:.1f}" y="{y + bar_h - 4}" fill="#222">{escape(vlabel)}</text>')
            y += bar_h + gap
        y += group_gap
    # legend
    x = left
    for name in series:
        color = PALETTE.get(name, FALLBACK[series.index(name) % len(FALLBACK)])
        out.append(f'<rect x="{x}" y="{y}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{x + 16}" y="{y + 10}">{escape(name)}</text>')
        x += 30 + 7 * len(name)
    if note:
        out.append(f'<text x="10" y="{y + 30}" fill="#555" font-size="11">{escape(note)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
