"""The ``ha-chaos`` command: a thin front door. Each feature package registers its own sub-commands.

Why a registry of modules instead of one big parser: the packages (platform, faultproxy, plans, report, ...)
are developed independently; each owns a ``cli.py`` with ``register(subparsers)`` and handlers that return an
exit code. Exit codes: 0 pass, 1 an invariant failed, 2 unknown, 3+ harness error (see ``harness.errors``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from harness import __version__
from harness.errors import HarnessError
from harness.topology.signals import Terminated

#: Modules that contribute sub-commands, in the order they appear in ``--help``.
COMMAND_MODULES = [
    "harness.campaign_cli",
    "harness.platform.cli",
    "harness.topology.cli",
    "harness.plans.cli",
    "harness.report.cli",
    "harness.coverage",
    "harness.merge",
]

#: ``bench`` sub-commands are contributed the same way: module path -> registers under ``ha-chaos bench``.
BENCH_MODULES = [
    "harness.bench.fault_effects",
    "harness.bench.proxy",
    "harness.bench.db_failover",
    "harness.bench.checkers",
    "harness.bench.ledger",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ha-chaos",
        description="Chaos-testing harness for HA deployments of a Canton-style ledger network.",
    )
    parser.add_argument("--version", action="version", version=f"ha-chaos {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the harness does")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    bench = sub.add_parser("bench", help="benchmarks that print measured figures")
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for mod in BENCH_MODULES:
        importlib.import_module(mod).register(bench_sub)
    return parser


def _validate_common(args: argparse.Namespace) -> None:
    """Options several commands share, checked before any command sets up anything: ``--bugs`` (run, replay,
    shrink, up) must name known switches, or every node would crash-loop into a health timeout minutes later."""
    if getattr(args, "bugs", None):
        from harness.campaign import check_bugs

        args.bugs = check_bugs(args.bugs)


def line_buffered() -> None:
    """Line-buffer stdout and stderr when they are not a terminal (a pipe, a CI log, ``| tee``).

    Why: Python block-buffers a non-terminal stdout, so ``ha-chaos run | cat`` on a fresh machine showed nothing for
    minutes (set-up, image builds) and then every line at once at exit. Progress must arrive as it happens.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and not stream.isatty() and hasattr(stream, "reconfigure"):
                stream.reconfigure(line_buffering=True)
        except (ValueError, OSError):  # a closed or detached stream: nothing to configure
            continue


def main(argv: list[str] | None = None) -> int:
    line_buffered()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        _validate_common(args)
        return int(args.func(args) or 0)
    except HarnessError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except Terminated as exc:  # before KeyboardInterrupt, of which it is a subclass (SIGTERM exits 143)
        print(f"{exc}: cleaned up", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("interrupted: cleaned up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
