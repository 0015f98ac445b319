"""``results.json`` and ``junit.xml``: the machine-readable verdicts of a run.

Why JUnit maps ``unknown`` to ``<skipped>``: CI tools have three states (pass, failure, skipped); an undecided
invariant must not turn a build green as a pass would, nor be mistaken for a product bug as a failure would.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

from harness.checkers.model import CheckResult, run_verdict
from harness.errors import HarnessError
from harness.report.rundir import RunDir

SCHEMA = 1
EXIT_CODES = {"pass": 0, "fail": 1, "unknown": 2}


def results_document(rd: RunDir, results: list[CheckResult], *, context: dict[str, Any],
                     history: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "run": rd.name,
        "timestamp": rd.timestamp,
        "verdict": run_verdict(results),
        "replay": rd.replay_command(),
        "context": context,
        "history": history,
        "results": [r.to_dict() for r in results],
    }


def write_results(rd: RunDir, doc: dict[str, Any]) -> None:
    rd.results_path.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")


def read_results(rd: RunDir) -> tuple[dict[str, Any], list[CheckResult]]:
    doc = rd.read_json(rd.results_path)
    if doc is None:
        raise HarnessError(f"{rd.results_path} is missing", f"run `ha-chaos check {rd.path}` first")
    try:
        results = [CheckResult.from_dict(d) for d in doc["results"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise HarnessError(f"{rd.results_path} is not a results file of this harness ({exc})",
                           f"run `ha-chaos check {rd.path}` to rewrite it") from exc
    return doc, results


def _witness_text(w: dict[str, Any]) -> str:
    note = f"  <- {w['note']}" if w.get("note") else ""
    return f"t={w.get('t')} {w.get('process')} {w.get('type')} {w.get('f')} " \
           f"{json.dumps(w.get('value'), sort_keys=True, default=str)}{note}"


def junit_xml(rd: RunDir, results: list[CheckResult], duration_s: float) -> str:
    fails = sum(r.verdict == "fail" for r in results)
    skipped = sum(r.verdict == "unknown" for r in results)
    suite = ET.Element("testsuite", name=f"ha-chaos.{rd.name}", tests=str(len(results)), failures=str(fails),
                       errors="0", skipped=str(skipped), time=f"{duration_s:.3f}", timestamp=rd.timestamp)
    props = ET.SubElement(suite, "properties")
    for k, v in (("run_dir", str(rd.path)), ("replay", rd.replay_command()),
                 ("report", str(rd.report_path)), ("verdict", run_verdict(results))):
        ET.SubElement(props, "property", name=k, value=v)
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"ha-chaos.{rd.name}",
                             name=f"invariant {r.invariant} {r.name}", time="0")
        if r.verdict == "fail":
            el = ET.SubElement(case, "failure", message=r.explanation, type="InvariantViolated")
            el.text = "\n".join([r.explanation, *(_witness_text(w) for w in r.witnesses)])
        elif r.verdict == "unknown":
            ET.SubElement(case, "skipped", message=f"unknown: {r.explanation}")
        else:
            ET.SubElement(case, "system-out").text = r.explanation
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def write_junit(rd: RunDir, results: list[CheckResult], duration_s: float) -> None:
    rd.junit_path.write_text(junit_xml(rd, results, duration_s), encoding="utf-8")
