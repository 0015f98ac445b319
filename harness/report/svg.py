"""Inline SVG drawing: the timeline and the per-second plots. No plotting library, no external resource.

Why hand-drawn SVG: the report must be one file that opens offline years later; inline SVG needs nothing but a
browser, scales, and keeps text selectable. Operations are aggregated per pixel column so the size of the file
does not grow with the history (a column shows its worst outcome: info over fail over ok).
"""

from __future__ import annotations

from html import escape

from harness.report.data import ReportData

COLORS = {"ok": "#2e7d32", "fail": "#c62828", "info": "#ef6c00", "none": "#bdbdbd", "fault": "#ffcdd2",
          "fault_edge": "#c62828", "failed_fault": "#9e9e9e", "violation": "#6a1b9a"}
_ROLE_PALETTE = ("#1565c0", "#00838f", "#6d4c41", "#5e35b1")
_RANK = {"ok": 0, "fail": 1, "info": 2}


def _e(s: object) -> str:
    return escape(str(s), quote=True)


class _Axis:
    def __init__(self, t_end: float, x0: float, width: float) -> None:
        self.t_end, self.x0, self.w = max(t_end, 1e-9), x0, width

    def x(self, t: float) -> float:
        return self.x0 + max(0.0, min(1.0, t / self.t_end)) * self.w

    def ticks(self, y_top: float, y_bot: float) -> list[str]:
        step = _nice_step(self.t_end / 10)
        out, t = [], 0.0
        while t <= self.t_end + 1e-9:
            x = self.x(t)
            out.append(f'<line x1="{x:.1f}" y1="{y_top}" x2="{x:.1f}" y2="{y_bot}" class="grid"/>'
                       f'<text x="{x:.1f}" y="{y_bot + 14}" class="tick" text-anchor="middle">{t:g}s</text>')
            t += step
        return out


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    for m in (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600):
        if m >= raw:
            return float(m)
    return float(int(raw / 3600 + 1) * 3600)


def timeline(d: ReportData, violations: list[tuple[float, str]], width: int = 1240) -> str:
    """Rows: one per fault (+target), one per pair's ready replica, one per client; violations as markers."""
    label_w, row_h, gap = 230, 16, 4
    ax = _Axis(d.t_end, label_w, width - label_w - 20)
    rows: list[str] = []
    top = 40 if violations else 12
    y = top + 8
    body: list[str] = []

    def label(text: str, yy: float) -> None:
        body.append(f'<text x="{label_w - 8}" y="{yy + row_h - 4}" class="lbl" text-anchor="end">{_e(text)}</text>')

    for f in d.faults:
        label(f.label if len(f.label) <= 34 else f.label[:33] + "\u2026", y)
        if f.took:
            x0, x1 = ax.x(f.start), ax.x(f.end if f.end is not None else d.t_end)
            body.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(2.0, x1 - x0):.1f}" height="{row_h}" '
                        f'fill="{COLORS["fault"]}" stroke="{COLORS["fault_edge"]}"><title>{_e(f.label)}: '
                        f'{f.start:.2f}s - {"never healed" if f.end is None else f"{f.end:.2f}s"}</title></rect>'
                        f'<text x="{x1 + 4:.1f}" y="{y + row_h - 4}" class="tick">{_e(f.target)}'
                        f'{"  (never healed)" if f.end is None else ""}</text>')
        else:
            x0 = ax.x(f.start)
            body.append(f'<rect x="{x0 - 3:.1f}" y="{y}" width="6" height="{row_h}" fill="{COLORS["failed_fault"]}">'
                        f'<title>{_e(f.label)}: did not take effect: {_e(f.error)}</title></rect>'
                        f'<text x="{x0 + 6:.1f}" y="{y + row_h - 4}" class="tick">{_e(f.target)}: '
                        f'did not take effect ({_e(f.error)})</text>')
        y += row_h + gap
    for node, segs in d.roles.items():
        label(f"{node} ready", y)
        whos = sorted({s.who for s in segs if s.who != "none"})
        for s in segs:
            color = COLORS["none"] if s.who == "none" else (
                COLORS["fail"] if "+" in s.who else _ROLE_PALETTE[whos.index(s.who) % len(_ROLE_PALETTE)])
            x0, x1 = ax.x(s.start), ax.x(s.end)
            text = f'<text x="{x0 + 3:.1f}" y="{y + row_h - 4}" class="inbar">{_e(s.who)}</text>' \
                if x1 - x0 > 40 else ""
            body.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(1.0, x1 - x0):.1f}" height="{row_h}" '
                        f'fill="{color}"><title>{_e(node)}: {_e(s.who)} ready {s.start:.2f}-{s.end:.2f}s</title>'
                        f'</rect>{text}')
        y += row_h + gap
    y += 6
    cols = int(ax.w / 2)
    for proc, ops in d.clients.items():
        label(proc, y)
        worst: dict[int, str] = {}
        for t0, t1, kind in ops:
            c0, c1 = int(ax.x(t0) - ax.x0) // 2, int(ax.x(t1) - ax.x0) // 2
            for c in range(max(0, c0), min(cols, c1) + 1):
                if _RANK[kind] >= _RANK.get(worst.get(c, "ok"), 0):
                    worst[c] = kind
        for c, kind in sorted(worst.items()):
            body.append(f'<rect x="{ax.x0 + 2 * c:.0f}" y="{y + 3}" width="2" height="{row_h - 6}" '
                        f'fill="{COLORS[kind]}"/>')
        y += row_h - 4
    y_bottom = y + 6
    rows.extend(ax.ticks(top, y_bottom))
    labelled: list[float] = []
    for t, text in violations[:50]:
        x = ax.x(t)
        rows.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{y_bottom}" stroke="{COLORS["violation"]}" '
                    f'stroke-width="2" stroke-dasharray="4 2"><title>{_e(text)}</title></line>')
        # short labels ("inv 11"), staggered over three lines so neighbouring markers stay legible
        if all(abs(x - p) > 8 for p in labelled):
            line = len(labelled) % 3
            labelled.append(x)
            rows.append(f'<text x="{x + 3:.1f}" y="{12 + 12 * line}" class="vtxt">{_e(text.split(" ")[0])}'
                        f'<title>{_e(text)}</title></text>')
    height = y_bottom + 24
    return (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="timeline">' + "".join(rows) + "".join(body) + "</svg>")


def line_plot(title: str, series: dict[str, list[float | None]], colors: dict[str, str], t_end: float,
              shaded: list[tuple[float, float]], y_unit: str, width: int = 1240, height: int = 220) -> str:
    """One value per second per series, fault periods shaded behind."""
    left, top, bottom = 70, 26, 30
    ax = _Axis(t_end, left, width - left - 140)
    ph = height - top - bottom
    ymax = max([v for vs in series.values() for v in vs if v is not None] + [1.0]) * 1.1
    parts: list[str] = [f'<text x="{left}" y="16" class="ptitle">{_e(title)}</text>']
    for a, b in shaded:
        x0, x1 = ax.x(a), ax.x(b)
        parts.append(f'<rect x="{x0:.1f}" y="{top}" width="{max(1.0, x1 - x0):.1f}" height="{ph}" '
                     f'fill="{COLORS["fault"]}" opacity="0.6"/>')
    parts.extend(ax.ticks(top, top + ph))
    for i in range(5):
        v = ymax * i / 4
        yy = top + ph - ph * i / 4
        parts.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" class="tick" text-anchor="end">{v:.4g}</text>'
                     f'<line x1="{left}" y1="{yy:.1f}" x2="{left + ax.w}" y2="{yy:.1f}" class="grid"/>')
    parts.append(f'<text x="12" y="{top + ph / 2}" class="tick" transform="rotate(-90 12 {top + ph / 2})" '
                 f'text-anchor="middle">{_e(y_unit)}</text>')
    for k, (name, vals) in enumerate(series.items()):
        pts: list[str] = []
        segs: list[str] = []
        for sec, v in enumerate(vals):
            if v is None:
                if len(pts) > 1:
                    segs.append(" ".join(pts))
                pts = []
                continue
            pts.append(f"{ax.x(sec + 0.5):.1f},{top + ph - ph * v / ymax:.1f}")
        if len(pts) > 1:
            segs.append(" ".join(pts))
        elif len(pts) == 1:
            x, yv = pts[0].split(",")
            parts.append(f'<circle cx="{x}" cy="{yv}" r="2" fill="{colors[name]}"/>')
        for s in segs:
            parts.append(f'<polyline points="{s}" fill="none" stroke="{colors[name]}" stroke-width="1.5"/>')
        ly = top + 14 + 18 * k
        parts.append(f'<rect x="{left + ax.w + 14}" y="{ly - 9}" width="12" height="4" fill="{colors[name]}"/>'
                     f'<text x="{left + ax.w + 30}" y="{ly - 4}" class="tick">{_e(name)}</text>')
    return (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{_e(title)}">' + "".join(parts) + "</svg>")
