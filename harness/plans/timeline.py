"""A plan's nominal timeline: when each step would start and end if conditions held at their estimated times.

Why "nominal": ``after: failover(p1)`` depends on how fast the real system fails over, which only a run can
tell. The timeline estimates such waits (``CONDITION_ESTIMATE_S``) and marks them approximate, so ``plan show``
can still draw the plan and CI can bound a plan's length before starting any container.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.plans.conditions import Condition
from harness.plans.schema import Plan

#: assumed time for an external condition (failover, primary change) to hold after its wait begins
CONDITION_ESTIMATE_S = 5.0


@dataclass(frozen=True)
class Row:
    index: int
    kind: str
    target: str
    start: float  # seconds since run start (warmup included)
    end: float
    approximate: bool
    instant: bool


@dataclass(frozen=True)
class Timeline:
    rows: list[Row]
    warmup_s: float
    faults_end: float
    total: float


def _cond_time(cond: Condition, wait_from: float, starts: list[float | None], ends: list[float | None],
               max_wait: float) -> tuple[float, bool]:
    if cond.name in ("step_applied", "step_healed"):
        ref = (starts if cond.name == "step_applied" else ends)[int(cond.arg)]  # type: ignore[arg-type]
        if ref is not None:
            return max(ref, wait_from), False
        return wait_from + max_wait, True
    return wait_from + min(CONDITION_ESTIMATE_S, max_wait), True


def nominal_timeline(plan: Plan) -> Timeline:
    n = len(plan.steps)
    starts: list[float | None] = [None] * n
    ends: list[float | None] = [None] * n
    approx = [False] * n
    for _ in range(n + 1):  # later passes resolve references to later steps ('until: step_healed(N)')
        before = (list(starts), list(ends))
        for i, step in enumerate(plan.steps):
            if step.at is not None:
                start, a = plan.warmup_s + step.at, False
            else:
                prev = starts[i - 1] if i > 0 else plan.warmup_s
                wait_from = plan.warmup_s if prev is None else prev
                start, a = _cond_time(step.after_condition(), wait_from, starts, ends, step.max_wait)  # type: ignore[arg-type]
                start += step.delay
            for ref in step.step_references():  # a step aiming at step(N) fires once step N has fired
                ref_start = starts[ref.index]  # N < i: set in this pass
                if ref_start is not None and ref_start > start:
                    start, a = ref_start, a or approx[ref.index]
            if step.is_instant:
                end = start
            elif step.duration is not None:
                end = start + step.duration
            else:
                end, a2 = _cond_time(step.until_condition(), start, starts, ends, step.max_wait)  # type: ignore[arg-type]
                end = min(max(end, start), start + step.max_wait)
                a = a or a2
            starts[i], ends[i], approx[i] = start, end, a
        if (starts, ends) == before:
            break
    rows = [Row(i, s.kind_name, ", ".join(s.targets) or _partition_text(s), float(starts[i] or 0),
                float(ends[i] or 0), approx[i], s.is_instant) for i, s in enumerate(plan.steps)]
    faults_end = max([plan.warmup_s, *(r.end for r in rows)])
    return Timeline(rows, plan.warmup_s, faults_end, faults_end + plan.quiet_period)


def _partition_text(step: object) -> str:
    groups = getattr(getattr(step, "params", None), "groups", None)
    return " | ".join("+".join(g) for g in groups) if groups else "-"


def _bar(start: float, end: float, total: float, width: int, *, instant: bool, approx: bool) -> Text:
    scale = width / total if total > 0 else 0
    a = min(width - 1, int(start * scale))
    b = max(a + 1, min(width, round(end * scale)))
    text = Text("·" * a)
    text.append("│" if instant else ("▒" if approx else "█") * (b - a), style="bold red")
    text.append("·" * (width - len(text.plain)))
    return text


def render(plan: Plan, console: Console | None = None, width: int = 48) -> None:
    """Print the plan as a table, one row per step, with a bar from its start to its end."""
    console = console or Console()
    tl = nominal_timeline(plan)
    cells = [["#", "kind", "target", "start", "end"], ["", "warmup", "", "0", f"{tl.warmup_s:g}"],
             ["", "quiet", "all healed", f"{tl.faults_end:g}", f"{tl.total:g}"]]
    cells += [[str(r.index), r.kind, r.target, f"~{r.start:g}", f"~{r.end:g}"] for r in tl.rows]
    text_width = sum(max(len(row[i]) for row in cells) + 3 for i in range(5)) + 4
    # the text columns never wrap; on a narrow terminal the bar gives way (down to 12 characters)
    width = max(12, min(width, console.width - text_width))
    table = Table(title=f"{plan.name}  (seed {plan.seed}, ~{tl.total:.0f} s)", title_justify="left")
    for col in ("#", "kind", "target", "start", "end"):
        table.add_column(col, justify="right" if col in ("#", "start", "end") else "left", no_wrap=True)
    table.add_column(f"0 s{' ' * (width - 5 - len(f'{tl.total:.0f}'))}{tl.total:.0f} s", no_wrap=True)
    table.add_row("", "warmup", "", "0", f"{tl.warmup_s:g}", _phase_bar(0, tl.warmup_s, tl.total, width, "dim"))
    for r in tl.rows:
        mark = "~" if r.approximate else ""
        table.add_row(str(r.index), r.kind, r.target, f"{mark}{r.start:g}", f"{mark}{r.end:g}",
                      _bar(r.start, r.end, tl.total, width, instant=r.instant, approx=r.approximate))
    table.add_row("", "quiet", "all healed", f"{tl.faults_end:g}", f"{tl.total:g}",
                  _phase_bar(tl.faults_end, tl.total, tl.total, width, "green"))
    console.print(table)
    console.print(Text(plan.description.strip(), style="italic"))
    if any(r.approximate for r in tl.rows):
        console.print(f"~ = waits on a condition; drawn as if it held after {CONDITION_ESTIMATE_S:g} s")


def _phase_bar(start: float, end: float, total: float, width: int, style: str) -> Text:
    scale = width / total if total > 0 else 0
    a, b = int(start * scale), max(int(start * scale), min(width, round(end * scale)))
    text = Text(" " * a)
    text.append("─" * (b - a), style=style)
    return text
