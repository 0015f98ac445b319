"""Plan files in and out: YAML (or JSON, a subset) with every error mapped to ``file:line: field: message``.

Why compose the YAML node tree ourselves instead of ``yaml.safe_load``: pydantic reports *where* in the data a
value is wrong (``steps.2.params.attributes.latency``) but the data has forgotten its line numbers. Composing
keeps the nodes, with marks, so each error can be walked back to the line a person has to edit. Anything a
plan file can contain - broken YAML, alias bombs, a wrong type anywhere - ends as a ``PlanError`` (an
``InputError``, exit 4), never another exception.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import InputError
from harness.plans import schema
from harness.plans.schema import KINDS, Plan, cross_reference_problems, plan_to_data
from harness.topology.model import TopologyModel, reference_model
from harness.yamlfile import FileProblems, Problem, read_text
from harness.yamlfile import compose as _compose
from harness.yamlfile import line_of as _line
from harness.yamlfile import locate as _locate
from harness.yamlfile import merge as _merge

MAX_BYTES = 1 << 20
#: the project's plan directories (not the caller's working directory): curated plans, and failing plans kept
PLANS_DIR = Path(__file__).resolve().parents[2] / "fault_plans"
FOUND_DIR = PLANS_DIR / "found"
PLAN_SUFFIXES = (".yaml", ".yml", ".json")


class PlanError(FileProblems):
    """A plan file that cannot be used; ``problems`` lists every error found, each with file and line."""

    what = "fault plan"
    hint = "edit the lines above; fault_plans/schema.json describes every field"


def _field_vocabulary() -> list[str]:
    """Every field name any plan model knows, for 'did you mean' on an unknown key."""
    names: set[str] = set()
    todo: list[type[BaseModel]] = [Plan]
    seen: set[type[BaseModel]] = set()
    for cls in vars(schema).values():
        if isinstance(cls, type) and issubclass(cls, BaseModel):
            todo.append(cls)
    from harness.plans import toxics
    todo += [c for c in vars(toxics).values() if isinstance(c, type) and issubclass(c, BaseModel)]
    for cls in todo:
        if cls not in seen:
            seen.add(cls)
            names.update(cls.model_fields)
    return sorted(names)


_VOCABULARY: list[str] = []


def _suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _key_node(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def _problem(err: Any, root: yaml.Node | None, source: str) -> Problem:
    loc = tuple(err.get("loc", ()))
    typ, msg = err.get("type", ""), str(err.get("msg", "invalid"))
    node, path = _locate(root, loc, name_missing=typ in ("missing", "extra_forbidden"))
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if typ == "union_tag_invalid":
        ctx = err.get("ctx") or {}
        disc = str(ctx.get("discriminator", "kind")).strip("'\"")
        tag = str(ctx.get("tag", ""))
        options = KINDS if disc == "kind" else schema.TOXIC_TYPES
        tag_node = _key_node(node, disc)
        node = tag_node or node
        path = f"{path}.{disc}" if path else disc
        msg = f"unknown {disc} {tag!r}{_suggest(tag, options)} (one of: {', '.join(options)})"
    elif typ == "union_tag_not_found":
        disc = str((err.get("ctx") or {}).get("discriminator", "kind")).strip("'\"")
        options = KINDS if disc == "kind" else schema.TOXIC_TYPES
        msg = f"missing {disc!r} (one of: {', '.join(options)})"
    elif typ == "extra_forbidden" and loc:
        if not _VOCABULARY:
            _VOCABULARY.extend(_field_vocabulary())
        msg = f"unknown field{_suggest(str(loc[-1]), _VOCABULARY)}"
        parent, _ = _locate(root, loc[:-1])
        for key, _value in getattr(parent, "value", []) if isinstance(parent, yaml.MappingNode) else []:
            if isinstance(key, yaml.ScalarNode) and key.value == str(loc[-1]):
                node = key
    elif typ == "missing":
        msg = "required field is missing"
    return Problem(source, _line(node), path, msg)


# --- public API ------------------------------------------------------------------------------------------
def parse_plan(text: str, source: str = "<plan>", model: TopologyModel | None = None) -> Plan:
    """Validate plan text; raise PlanError listing every problem with its line."""
    model = model or reference_model()
    data, root = _compose(text, source, PlanError, "a plan needs version, name, steps, ...")
    if not isinstance(data, dict):
        raise PlanError([Problem(source, _line(root), "", "a plan is a mapping (version, name, description, "
                                 f"steps, ...), not a {type(data).__name__}")])
    try:
        plan = Plan.model_validate(data, context={"model": model, "skip_cross_references": True})
    except ValidationError as exc:
        raise PlanError(_merge([_problem(e, root, source) for e in exc.errors(include_url=False)])) from None
    except (ValueError, TypeError, RecursionError) as exc:  # defensive: a validator choking on odd input
        raise PlanError([Problem(source, 1, "", f"cannot validate: {exc}")]) from None
    cross = cross_reference_problems(plan, model)
    if cross:
        raise PlanError([_problem({"loc": loc, "msg": msg, "type": "cross"}, root, source)
                         for loc, msg in cross])
    return plan


def load_plan(path: str | Path, model: TopologyModel | None = None) -> Plan:
    """Read and validate a plan file (YAML or JSON)."""
    return parse_plan(read_text(path, "plan", PlanError, MAX_BYTES), str(Path(path)), model)


def dump_plan(plan: Plan) -> str:
    """YAML text that ``parse_plan`` reads back into an equal plan."""
    return yaml.safe_dump(plan_to_data(plan), sort_keys=False, allow_unicode=True, width=110)


def save_plan(plan: Plan, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(dump_plan(plan), encoding="utf-8")
    return p


def save_found(plan: Plan, directory: str | Path = FOUND_DIR) -> Path:
    """Keep a failing plan as run (not minimised: ``ha-chaos shrink`` does that) in the project's
    ``fault_plans/found/<short-hash>.yaml``; the same plan always lands on one file. ``ha-chaos run`` and the
    nightly chaos tier run these first."""
    text = dump_plan(plan)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
    path = Path(directory) / f"{digest}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(text, encoding="utf-8")
    return path


def plans_in(directory: str | Path) -> list[Path]:
    """The plan files a directory holds: ``*.yaml``, ``*.yml``, ``*.json`` except ``schema.json``, sorted, not
    recursive (so ``fault_plans/`` does not include ``fault_plans/found/``). ``[]`` when there is none."""
    d = Path(directory)
    try:
        entries = list(d.iterdir())
    except OSError as exc:
        raise InputError(f"cannot read directory {d}: {exc.strerror or exc}", "check the path") from None
    return sorted(f for f in entries if f.suffix in PLAN_SUFFIXES and f.name != "schema.json" and f.is_file())


def plan_files(paths: Sequence[str | Path]) -> list[Path]:
    """Plan files for the given files and directories - the one rule every command uses for directories. A
    directory without a plan file or a path that does not exist is an ``InputError``."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = plans_in(p)
            if not found:
                kinds = ", ".join("*" + x for x in PLAN_SUFFIXES)
                raise InputError(f"no plan files in {p}", f"pass plan files, or a directory holding {kinds}")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise InputError(f"plan file {p} does not exist", "pass a plan file or a directory of plans")
    return out


def found_plan_files() -> list[Path]:
    """The failing plans kept in ``fault_plans/found/`` (re-run first as regressions); ``[]`` if none."""
    return plans_in(FOUND_DIR) if FOUND_DIR.is_dir() else []
