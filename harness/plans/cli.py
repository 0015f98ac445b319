"""``ha-chaos plan validate|show|schema``: the plan layer's front door (no Docker needed).

Why validate every file before reporting: in CI a person fixes all broken plans in one pass, so each file's
problems are listed and the exit code is 4 if any file was invalid.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from harness.errors import InputError
from harness.plans.loader import PLANS_DIR, PlanError, load_plan, plan_files
from harness.plans.schema import json_schema
from harness.plans.timeline import nominal_timeline, render
from harness.topology.model import TopologyModel, model_for_profile

#: the project's schema file, wherever the command is run from
DEFAULT_SCHEMA_PATH = PLANS_DIR / "schema.json"


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def _expand(path: str) -> list[str]:
    """A file stands for itself (a missing one is reported by ``load_plan``, like any unreadable plan); a directory
    for the plans it holds, by the loader's one rule for directories (``plan_files``)."""
    return [str(f) for f in plan_files([path])] if Path(path).is_dir() else [path]


def _model(args: argparse.Namespace) -> TopologyModel:
    """The model plans are checked against: the --target file's profile, else the reference's."""
    if getattr(args, "target", None):
        from harness.topology.target import load_target

        return load_target(args.target).model(getattr(args, "profile", "full"))
    return model_for_profile(getattr(args, "profile", "full"))


def cmd_validate(args: argparse.Namespace) -> int:
    model = _model(args)
    bad, files, bad_paths = 0, 0, 0
    for arg in args.files:
        try:
            paths = _expand(arg)
        except InputError as exc:  # a directory without a plan file
            bad_paths += 1
            print(exc.render(), file=sys.stderr)
            continue
        for f in paths:
            files += 1
            bad += not _validate_one(f, model)
    if bad or bad_paths:
        parts = [f"{bad} of {files} plan(s) invalid"] if bad else []
        parts += [f"{bad_paths} path(s) held no plan file"] if bad_paths else []
        print("; ".join(parts), file=sys.stderr)
        return InputError.exit_code
    return 0


def _validate_one(f: str, model: TopologyModel) -> bool:
    try:
        plan = load_plan(f, model)
    except PlanError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return False
    except InputError as exc:
        print(f"{f}: {exc.what}", file=sys.stderr)
        return False
    tl = nominal_timeline(plan)
    print(f"ok {f}: {plan.name}, {len(plan.steps)} step(s), ~{tl.total:.0f} s")
    return True


def cmd_show(args: argparse.Namespace) -> int:
    plan = load_plan(args.file, _model(args))
    render(plan, Console(width=args.width) if args.width else Console())
    return 0


def _read_schema_file(path: Path) -> str:
    """The text of a schema file to compare, ``""`` if it does not exist; unreadable input is an InputError."""
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a schema file", f"pass a file, e.g. {DEFAULT_SCHEMA_PATH}")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text: not a JSON Schema file",
                         f"pass the plan schema file, e.g. {DEFAULT_SCHEMA_PATH}") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}", "check the path") from None


def _write_schema_file(path: Path, text: str) -> None:
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: directory {path.parent} does not exist",
                         "create the directory first, or pass a path in an existing one")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}", "pass a writable file path") from None


def cmd_schema(args: argparse.Namespace) -> int:
    text = schema_text()
    if args.check:
        if _read_schema_file(Path(args.check)) != text:
            raise InputError(f"{args.check} is out of date", "run: ha-chaos plan schema --write " + args.check)
        print(f"{args.check} is current")
    elif args.write:
        _write_schema_file(Path(args.write), text)
        print(f"wrote {args.write}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_dry_run(args: argparse.Namespace) -> int:
    """Execute the plan against the in-memory fakes on a virtual clock: the event sequence, without Docker."""
    import tempfile

    from harness.history import HistoryWriter, read_history
    from harness.plans.executor import Executor
    from harness.plans.fakes import FakeClock, FakeInjector
    from harness.plans.targets import FakeView

    model = _model(args)
    plan = load_plan(args.file, model)
    view = FakeView.initial(model)
    injector = FakeInjector(view)
    with tempfile.TemporaryDirectory() as d:
        with HistoryWriter(Path(d) / "history.jsonl") as hist:
            result = Executor(plan, injector, view, hist, d, clock=FakeClock(), stop_on_fail=False).run()
        events = read_history(Path(d) / "history.jsonl")
    for ev in events:
        v = ev.value
        what = v.get("phase") or ", ".join(v.get("resolved") or []) or v.get("skipped") or v.get("error") or ""
        step = f"#{v['step']}" if "step" in v and ev.f != "phase" else ""
        print(f"{ev.t:8.2f}  {ev.process:8} {ev.type:6} {ev.f:20} {step:4} {what}")
    states = ", ".join(f"#{s.index} {s.state}" for s in result.steps)
    print(f"steps: {states}; faults left in effect on the fake: {len(injector.in_effect)}")
    return 0


TARGET_HELP = "target file to check against (default: the reference, targets/reference.yaml)"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    plan = sub.add_parser("plan", help="validate, show and describe fault plans")
    psub = plan.add_subparsers(dest="plan_command", metavar="ACTION", required=True)
    v = psub.add_parser("validate", help="check plan files against the schema (exit 4 if any is invalid)")
    v.add_argument("files", nargs="+", metavar="FILE", help="plan files or directories of plans")
    v.add_argument("--profile", choices=["full", "postgres"], default="full", help="topology to check against")
    v.add_argument("--target", metavar="TARGET", help=TARGET_HELP)
    v.set_defaults(func=cmd_validate)
    s = psub.add_parser("show", help="print a plan's timeline")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--width", type=int, default=0, help="terminal width (default: detect)")
    s.add_argument("--profile", choices=["full", "postgres"], default="full", help="topology to check against")
    s.add_argument("--target", metavar="TARGET", help=TARGET_HELP)
    s.set_defaults(func=cmd_show)
    d = psub.add_parser("dry-run", help="run the plan on in-memory fakes (virtual clock) and print the events")
    d.add_argument("file", metavar="FILE")
    d.add_argument("--target", metavar="TARGET", help=TARGET_HELP)
    d.set_defaults(func=cmd_dry_run)
    j = psub.add_parser("schema", help="print the plan JSON Schema (or --write / --check a file)")
    g = j.add_mutually_exclusive_group()
    g.add_argument("--write", metavar="PATH", nargs="?", const=str(DEFAULT_SCHEMA_PATH))
    g.add_argument("--check", metavar="PATH", nargs="?", const=str(DEFAULT_SCHEMA_PATH))
    j.set_defaults(func=cmd_schema)
