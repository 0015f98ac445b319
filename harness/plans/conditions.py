"""Conditions a step can wait for (``after:``) or last until (``until:``).

Why so few: each condition must be observable by the executor without judging the run (that is the checkers'
job): a change of the PostgreSQL primary, a change of a pair's active replica, or another step of the same
plan having been applied / healed. Anything richer belongs in a checker, not in the schedule.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

CONDITION_NAMES = ("primary_changed", "failover", "step_applied", "step_healed")
_COND = re.compile(
    r"^\s*(?:(?P<pc>primary_changed)|failover\(\s*(?P<pair>[A-Za-z0-9_-]+)\s*\)"
    r"|step_(?P<which>applied|healed)\(\s*(?P<n>\d{1,4})\s*\))\s*$"
)


@dataclass(frozen=True)
class Condition:
    """A parsed condition; ``arg`` is the pair of ``failover`` or the step index of ``step_*``."""

    name: Literal["primary_changed", "failover", "step_applied", "step_healed"]
    arg: str | int | None = None

    def __str__(self) -> str:
        return self.name if self.arg is None else f"{self.name}({self.arg})"


def parse_condition(text: object) -> Condition:
    """Parse ``primary_changed``, ``failover(p1)``, ``step_applied(0)`` or ``step_healed(2)``."""
    if not isinstance(text, str):
        raise ValueError(f"a condition is a string such as 'failover(p1)', not {type(text).__name__}")
    m = _COND.match(text)
    if not m:
        head = text.strip().split("(")[0]
        close = difflib.get_close_matches(head, CONDITION_NAMES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close and close[0] != head else ""
        raise ValueError(f"unknown condition {text!r}{hint} (expected primary_changed, failover(PAIR), "
                         "step_applied(N) or step_healed(N))")
    if m.group("pc"):
        return Condition("primary_changed")
    if m.group("pair"):
        return Condition("failover", m.group("pair"))
    name: Literal["step_applied", "step_healed"] = "step_applied" if m.group("which") == "applied" \
        else "step_healed"
    return Condition(name, int(m.group("n")))
