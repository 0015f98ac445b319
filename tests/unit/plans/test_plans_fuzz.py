"""1,000 malformed plans (mutated valid ones and garbage): always a PlanError with file and line, nothing else."""

from __future__ import annotations

import random
import re
import string

import pytest
import yaml
from _plans_testkit import curated_plans

from harness.plans.loader import PlanError, parse_plan

pytestmark = pytest.mark.unit

GARBAGE_VALUES = [
    None, -1, 0, 1e308, "", "x" * 300, [], {}, [[]], {"a": {"b": []}}, True, "active(", "k_of(p1, 0)",
    "db_link(seq1-db)", "2024-01-01", float("nan"), 2**70, "any(" * 10 + "a" + ")" * 10, "step_healed(99)",
    "failover(p1", "primary(p1)",
]


def _mutate(data: object, rng: random.Random) -> object:
    """Change one random place of a plan: drop, retype, rename or inject a key / value."""
    if isinstance(data, dict) and data:
        key = rng.choice(list(data))
        op = rng.randrange(5)
        if op == 0:
            return {k: v for k, v in data.items() if k != key}
        if op == 1:
            return {**data, key: rng.choice(GARBAGE_VALUES)}
        if op == 2:
            return {(k + rng.choice("sx_") if k == key else k): v for k, v in data.items()}
        if op == 3:
            return {**data, rng.choice(["extra", "kind", "type", "until", "after"]): rng.choice(GARBAGE_VALUES)}
        return {**data, key: _mutate(data[key], rng)}
    if isinstance(data, list) and data:
        i = rng.randrange(len(data))
        op = rng.randrange(3)
        if op == 0:
            return data[:i] + data[i + 1:]
        if op == 1:
            return [*data, rng.choice(GARBAGE_VALUES)]
        return [*data[:i], _mutate(data[i], rng), *data[i + 1:]]
    return rng.choice(GARBAGE_VALUES)


def _garbage_text(rng: random.Random, base: str) -> str:
    op = rng.randrange(5)
    if op == 0:
        return base[: rng.randrange(len(base))]  # truncated
    if op == 1:
        i = rng.randrange(len(base))
        return base[:i] + rng.choice([":", "[", "{", "&x", "*y", "- ", "\t", '"', "!!python/object", "%"]) + base[i:]
    if op == 2:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(1, 200)))
    if op == 3:
        return "[" * rng.randrange(50, 3000)  # deep nesting
    lines = base.splitlines()
    rng.shuffle(lines)
    return "\n".join(lines)


def test_thousand_malformed_plans_give_located_errors() -> None:
    rng = random.Random(20261122)
    bases = [p.read_text(encoding="utf-8") for p in curated_plans()]
    located = re.compile(r"^fuzz-\d+\.yaml:\d+: ")
    rejected = 0
    for n in range(1000):
        base = rng.choice(bases)
        if n % 2 == 0:
            data = yaml.safe_load(base)
            for _ in range(rng.randint(1, 3)):
                data = _mutate(data, rng)
            try:
                text = yaml.safe_dump(data, sort_keys=False)
            except (yaml.YAMLError, ValueError):
                text = base[: len(base) // 2]
        else:
            text = _garbage_text(rng, base)
        source = f"fuzz-{n}.yaml"
        try:
            parse_plan(text, source)
        except PlanError as exc:
            rejected += 1
            assert exc.problems, text
            for prob in exc.problems:
                assert located.match(str(prob)), str(prob)
                assert prob.line >= 1
            assert exc.exit_code == 4
        # any other exception type fails the test with its traceback: that is the point
    assert rejected > 900, "mutations should almost always break a plan; the fuzzer lost its teeth"
