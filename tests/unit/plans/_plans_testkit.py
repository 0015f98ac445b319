"""Paths and sample text shared by the plan-layer tests (a module, not conftest, so tests can import it)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PLANS_DIR = REPO / "fault_plans"

MINIMAL = """\
version: 1
name: minimal
description: one kill
steps:
  - kind: kill
    at: 1
    target: active(p1)
    duration: 2
"""


def curated_plans() -> list[Path]:
    return sorted(PLANS_DIR.glob("*.yaml"))


class FileInjector:
    """An injector whose faults are files in a directory: survives the death of the process that applied them,
    which is exactly what the crash test needs (a SIGKILLed harness leaves a 'fault' behind)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def apply(self, step, resolved):  # type: ignore[no-untyped-def]
        from harness.plans.injector import Effects

        (self.dir / resolved.fault_id).write_text(",".join(resolved.targets))
        injector = self

        class _Applied:
            effects = Effects(stops=list(resolved.targets))
            record = {"file": resolved.fault_id}

            def verify(self) -> bool:
                return (injector.dir / resolved.fault_id).exists()

            def undo(self) -> None:
                (injector.dir / resolved.fault_id).unlink(missing_ok=True)

        return _Applied()

    def heal(self, entry) -> None:  # type: ignore[no-untyped-def]
        (self.dir / str(entry["id"])).unlink(missing_ok=True)

    def in_effect(self) -> list[str]:
        return sorted(p.name for p in self.dir.iterdir())
