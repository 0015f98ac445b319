"""Joining the results of campaign shards (``ha-chaos merge DIR... [--out DIR]``) and a campaign's own index page.

Each CI shard writes its runs (``<plan>/<timestamp>/`` with results.json, report.html, coverage.json) and its
campaign summary (``campaigns/<id>/campaign.json``) into its own runs dir; the merge job downloads them side by
side and joins them into one place:

- ``index.html``: every run with its verdict, failed invariants, shard and a link to its report (relative links, so
  the tree can be moved or attached as one artifact), the campaigns (seed, shard, budget, how many ran, what did not
  fit), and the merged coverage table (kind x target role x phase, cells never covered marked);
- ``coverage.json``: the merged coverage, every run's cells (``harness.coverage.Tally``; merging it again, or
  next to the runs it came from, counts each run once: the nightly workflow keeps it to steer the next night);
- ``junit.xml``: one test case per run (a testsuite per campaign), ``fail`` -> failure, harness error -> error,
  ``unknown`` -> skipped, with the failed invariants, the first witness, the report and the replay command.

Why the index is hand-written HTML and not the run report's template: it is a table of links; the run report's
template is about one history. Like report.html it is self-contained (inline CSS, no script, no URL).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.coverage import Tally, html_table, render_table
from harness.errors import InputError

CAMPAIGN_FILE = "campaign.json"
RESULTS = "results.json"
VERDICT_CODES = (("fail", 1), ("error", 3), ("unknown", 2))


@dataclass
class Entry:
    run_dir: Path
    plan: str
    timestamp: str
    verdict: str = "unknown"
    failed: list[str] = field(default_factory=list)
    explanation: str = ""
    witness: str = ""
    duration_s: float | None = None
    source: str = ""
    campaign: str = ""
    shard: str = ""
    replay: str = ""
    error: str = ""

    @property
    def report(self) -> Path:
        return self.run_dir / "report.html"


@dataclass
class Collected:
    entries: list[Entry]
    campaigns: list[tuple[Path, dict[str, Any]]]

    def exit_code(self) -> int:
        verdicts = {e.verdict for e in self.entries}
        return next((code for v, code in VERDICT_CODES if v in verdicts), 0)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _witness_line(w: dict[str, Any]) -> str:
    note = f" <- {w['note']}" if w.get("note") else ""
    return f"t={w.get('t')} {w.get('process')} {w.get('type')} {w.get('f')}{note}"


def entry_of(run_dir: Path) -> Entry:
    """A run as its results.json tells it (verdict, failed invariants, first explanation and witness, replay)."""
    e = Entry(run_dir, run_dir.parent.name, run_dir.name)
    doc = _read(run_dir / RESULTS)
    if doc is None:
        e.error = "no results.json (the run did not finish)"
        return e
    e.verdict = str(doc.get("verdict", "unknown"))
    e.replay = str(doc.get("replay", ""))
    t_end = (doc.get("history") or {}).get("t_end")
    e.duration_s = float(t_end) if isinstance(t_end, int | float) else None
    for r in doc.get("results") or []:
        if isinstance(r, dict) and r.get("verdict") == "fail":
            e.failed.append(str(r.get("invariant")))
            if not e.explanation:
                e.explanation = f"invariant {r.get('invariant')} {r.get('name', '')}: {r.get('explanation', '')}"
                ws = r.get("witnesses") or []
                e.witness = _witness_line(ws[0]) if ws and isinstance(ws[0], dict) else ""
    return e


def collect(dirs: Sequence[Path | str], campaign_files: Sequence[Path] | None = None) -> Collected:
    """Every run under ``dirs`` (directories holding results.json) and every campaign summary, a run listed by a
    campaign taking its source, shard and verdict (a harness error is only in the campaign's record) from it.
    With ``campaign_files``, only the runs those campaigns list."""
    files = list(campaign_files or [])
    if campaign_files is None:
        for d in map(Path, dirs):
            files += sorted(d.rglob(CAMPAIGN_FILE)) if d.is_dir() else [d] if d.name == CAMPAIGN_FILE else []
    by_dir: dict[Path, Entry] = {}
    campaigns: list[tuple[Path, dict[str, Any]]] = []
    for cf in files:
        doc = _read(cf)
        if doc is None:
            continue
        campaigns.append((cf, doc))
        for r in doc.get("runs") or []:
            if not isinstance(r, dict) or not r.get("run_dir"):
                continue
            rd = (cf.parent / str(r["run_dir"])).resolve()
            e = by_dir.get(rd) or entry_of(rd)
            e.source, e.campaign, e.shard = str(r.get("source", "")), str(doc.get("campaign", "")), \
                str(doc.get("shard", ""))
            e.verdict = str(r.get("verdict") or e.verdict)
            e.error = str(r.get("error") or e.error or "")
            if isinstance(r.get("duration_s"), int | float):
                e.duration_s = float(r["duration_s"])
            by_dir[rd] = e
    if campaign_files is None:
        for d in map(Path, dirs):
            for res in sorted(d.rglob(RESULTS)) if d.is_dir() else []:
                rd = res.parent.resolve()
                if rd not in by_dir:
                    by_dir[rd] = entry_of(rd)
    entries = sorted(by_dir.values(), key=lambda e: (e.timestamp, e.plan))
    return Collected(entries, campaigns)


# --- JUnit ------------------------------------------------------------------------------------------------------
def junit_xml(collected: Collected, out_dir: Path) -> str:
    """One testsuite per campaign (runs found outside any campaign: one suite ``runs``), one test case per run."""
    groups: dict[str, list[Entry]] = {}
    for e in collected.entries:
        groups.setdefault(e.campaign or "runs", []).append(e)
    root = ET.Element("testsuites", name="ha-chaos", tests=str(len(collected.entries)),
                      failures=str(sum(e.verdict == "fail" for e in collected.entries)),
                      errors=str(sum(e.verdict == "error" for e in collected.entries)),
                      skipped=str(sum(e.verdict == "unknown" for e in collected.entries)))
    for name, entries in groups.items():
        suite = ET.SubElement(root, "testsuite", name=f"ha-chaos.{name}", tests=str(len(entries)),
                              failures=str(sum(e.verdict == "fail" for e in entries)),
                              errors=str(sum(e.verdict == "error" for e in entries)),
                              skipped=str(sum(e.verdict == "unknown" for e in entries)),
                              time=f"{sum(e.duration_s or 0 for e in entries):.1f}")
        for e in entries:
            case = ET.SubElement(suite, "testcase", classname=f"ha-chaos.{e.source or 'run'}",
                                 name=f"{e.plan} [{e.timestamp}]", time=f"{e.duration_s or 0:.1f}")
            detail = "\n".join(x for x in (e.explanation, e.witness and f"witness: {e.witness}",
                                            f"report: {os.path.relpath(e.report, out_dir)}",
                                            e.replay and f"replay: {e.replay}") if x)
            if e.verdict == "fail":
                el = ET.SubElement(case, "failure", type="InvariantViolated",
                                   message=f"invariant(s) {', '.join(e.failed)} failed")
                el.text = detail
            elif e.verdict == "error":
                ET.SubElement(case, "error", type="HarnessError", message=e.error or "harness error").text = detail
            elif e.verdict == "unknown":
                ET.SubElement(case, "skipped", message=f"unknown: {e.error or 'an expected effect was not seen'}")
            else:
                ET.SubElement(case, "system-out").text = detail
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --- HTML index -----------------------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}
td.n{text-align:right}
.pass{background:#e8f5e9}.fail{background:#ffebee}.unknown{background:#fff8e1}.error{background:#f3e5f5}
td.never{background:#fff3e0;color:#bf360c;text-align:center}
.muted{color:#777}
"""


def _link(target: Path, out_dir: Path, text: str) -> str:
    if not target.exists():
        return f'<span class="muted">{html.escape(text)}</span>'
    return f'<a href="{html.escape(Path(os.path.relpath(target, out_dir)).as_posix())}">{html.escape(text)}</a>'


def render_index(collected: Collected, tally: Tally | None, out_dir: Path, title: str) -> str:
    n = len(collected.entries)
    by_verdict: dict[str, int] = {}
    for e in collected.entries:
        by_verdict[e.verdict] = by_verdict.get(e.verdict, 0) + 1
    counts = ", ".join(f"{k} {v}" for k, v in sorted(by_verdict.items())) or "none"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p>{n} run(s): {html.escape(counts)}. Generated {datetime.now(UTC).isoformat(timespec='seconds')}.</p>"]
    if collected.campaigns:
        parts.append("<h2>Campaigns</h2><table><tr><th>campaign</th><th>seed</th><th>shard</th><th>budget</th>"
                     "<th>summary</th><th>not started</th><th>kept in fault_plans/found/</th></tr>")
        for cf, doc in collected.campaigns:
            budget = doc.get("budget_s")
            not_started = ", ".join(str(x.get("plan")) for x in doc.get("not_started") or [] if isinstance(x, dict))
            parts.append(
                f"<tr><td>{_link(cf, out_dir, str(doc.get('campaign', cf.parent.name)))}</td>"
                f"<td>{html.escape(str(doc.get('seed', '')))}</td><td>{html.escape(str(doc.get('shard', '')))}</td>"
                f"<td>{html.escape(f'{budget:g} s' if isinstance(budget, int | float) else '-')}</td>"
                f"<td>{html.escape(str(doc.get('summary', '')))}</td><td>{html.escape(not_started or '-')}</td>"
                f"<td>{html.escape(', '.join(map(str, doc.get('kept') or [])) or '-')}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Runs</h2><table><tr><th>#</th><th>verdict</th><th>plan</th><th>source</th><th>shard</th>"
                 "<th>failed invariants</th><th>seconds</th><th>report</th><th>plan file</th><th>replay</th></tr>")
    for i, e in enumerate(collected.entries, 1):
        why = " ".join(x for x in (e.explanation, e.witness and f"witness: {e.witness}", e.error) if x)
        failed = ", ".join(e.failed) or "-"
        seconds = f"{e.duration_s:.0f}" if e.duration_s is not None else "-"
        parts.append(
            f'<tr class="{html.escape(e.verdict)}"><td class="n">{i}</td><td>{html.escape(e.verdict.upper())}</td>'
            f"<td>{html.escape(e.plan)}<br><span class='muted'>{html.escape(e.timestamp)}</span></td>"
            f"<td>{html.escape(e.source or '-')}</td><td>{html.escape(e.shard or '-')}</td>"
            f'<td title="{html.escape(why)}">{html.escape(failed)}'
            + (f"<br><span class='muted'>{html.escape(why[:300])}</span>" if why else "") + "</td>"
            f'<td class="n">{seconds}</td><td>{_link(e.report, out_dir, "report")}</td>'
            f"<td>{_link(e.run_dir / 'plan.yaml', out_dir, 'plan.yaml')}</td>"
            f"<td><code>{html.escape(e.replay)}</code></td></tr>")
    parts.append("</table>")
    if tally is not None:
        parts.append("<h2>Fault coverage</h2>" + html_table(tally))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_index(dirs: Sequence[Path | str], out_dir: Path, *, title: str = "ha-chaos runs",
                campaigns: Sequence[Path] | None = None, coverage: Tally | None = None) -> Collected:
    """``index.html`` of the runs under ``dirs`` (or only those ``campaigns`` list) into ``out_dir``."""
    collected = collect(dirs, campaigns)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "index.html").write_text(render_index(collected, coverage, out_dir, title), encoding="utf-8")
    return collected


def merge(dirs: Sequence[Path | str], out_dir: Path) -> tuple[Collected, Tally]:
    """index.html, coverage.json and junit.xml of every run and campaign under ``dirs`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tally = Tally.load(dirs, compute_missing=True)
    collected = write_index(dirs, out_dir, title="ha-chaos: merged campaign", coverage=tally)
    (out_dir / "coverage.json").write_text(json.dumps(tally.document(), indent=1), encoding="utf-8")
    (out_dir / "junit.xml").write_text(junit_xml(collected, out_dir), encoding="utf-8")
    return collected, tally


# --- CLI ----------------------------------------------------------------------------------------------------------
def _merge(args: argparse.Namespace) -> int:
    from harness.campaign import console

    dirs = [Path(d) for d in args.dirs]
    missing = [str(d) for d in dirs if not d.exists()]
    if missing:
        raise InputError(f"no such directory: {', '.join(missing)}", "pass the runs directories of the shards")
    out = Path(args.out)
    collected, tally = merge(dirs, out)
    if not collected.entries and not tally.runs:
        raise InputError(f"no run found under {', '.join(map(str, dirs))}",
                         "pass runs directories written by `ha-chaos run` or `pytest -m chaos` (their --runs-dir)")
    console.print(render_table(tally, title="merged fault coverage"))
    by_verdict: dict[str, int] = {}
    for e in collected.entries:
        by_verdict[e.verdict] = by_verdict.get(e.verdict, 0) + 1
    console.print(f"merged {len(collected.entries)} run(s) of {len(collected.campaigns)} campaign(s): "
                  + (", ".join(f"{k} {v}" for k, v in sorted(by_verdict.items())) or "none"))
    for e in collected.entries:
        if e.verdict != "pass":
            console.print(f"  {e.verdict.upper():7} {e.plan} ({e.shard or '-'}) {', '.join(e.failed)} {e.report}")
    console.print(f"index: {out / 'index.html'}\njunit: {out / 'junit.xml'}\ncoverage: {out / 'coverage.json'}")
    return collected.exit_code()


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("merge", help="join the runs of campaign shards: HTML index, coverage table, one JUnit XML",
                       description="Collects every run (results.json) and campaign summary (campaign.json) under "
                                   "the given directories and writes, into --out, index.html (each run's verdict "
                                   "and a link to its report), coverage.json (merged coverage) and junit.xml (a test "
                                   "case per run). Exit 0 all passed, 1 a run failed, 2 unknown, 3 a harness error.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="runs directories of the shards (searched recursively)")
    p.add_argument("--out", default="merged", metavar="DIR", help="where the merged files go (default: merged/)")
    p.set_defaults(func=_merge)
