"""Targets (issue 13 item 1): a deployment described as data, validated with file/line/field errors, and the
reference target giving exactly the reference topology (compose files, model, links, parties)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.checkers import check_all
from harness.checkers.common import node_of
from harness.checkers.index import build_index
from harness.checkers.synth import BUGS, generate
from harness.topology import links as links_module
from harness.topology.target import (
    REFERENCE_TARGET,
    TargetError,
    load_target,
    parse_target,
    reference_target,
    target_schema,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _reference_data() -> dict:
    return yaml.safe_load(REFERENCE_TARGET.read_text())


def _parse(data: dict) -> object:
    return parse_target(yaml.safe_dump(data, sort_keys=False), "t.yaml", REFERENCE_TARGET.parent)


def test_the_reference_target_is_the_reference_topology() -> None:
    t = load_target(REFERENCE_TARGET)
    full = t.model("full")
    assert full.pairs == {"med1": ["med1a", "med1b"], "p1": ["p1a", "p1b"], "p2": ["p2a", "p2b"]}
    assert full.replicas("sequencer") == ["seq1", "seq2", "seq3"]
    assert len(full.links) == 9 + 6 * 3 and full.link("p1a-db").upstream == "pg-lb:5432"
    assert full.link("p2b-seq3").upstream == "seq3:7000" and full.links[0].listen_port == 20000
    assert [s.role for s in t.model("postgres").services] == ["etcd"] * 3 + ["postgres"] * 3 + ["pg-lb"]
    assert t.parties == {"p1": ["alice", "bob"], "p2": ["carol", "dave"]}
    assert t.port("ledger-lb", "p2") == 7502 and t.port("postgres", "patroni") == 8008
    # the fault proxy's generated configuration is the target's links (a drift would break every link fault)
    assert json.loads(links_module.render()) == json.loads((ROOT / "compose/config/faultproxy/proxies.json")
                                                           .read_text())


def test_every_compose_file_of_the_reference_exists_and_every_service_is_in_them() -> None:
    t = reference_target()
    services: set[str] = set()
    for f in t.compose["full"]:
        services |= set(yaml.safe_load((REFERENCE_TARGET.parent / t.compose_dir / f).read_text())
                         .get("services") or {})
    assert {s.name for s in t.services} <= services


@pytest.mark.parametrize("edit,where", [
    (lambda d: d["services"].append({"name": "p1a", "role": "participant", "node": "p1"}), "duplicate service"),
    (lambda d: d["services"][13].pop("node"), "needs `node`"),
    (lambda d: d["participants"].pop("p2"), "participants"),
    (lambda d: d["links"]["db"]["clients"].append("p9z"), "no such services ['p9z']"),
    (lambda d: d["compose"].pop("full"), "`full` profile is required"),
    (lambda d: d["compose"].update(full=["nope.yml"]), "compose files not found"),
])
def test_a_broken_target_is_refused_naming_what(edit, where: str) -> None:
    data = _reference_data()
    edit(data)
    with pytest.raises(TargetError) as exc:
        _parse(data)
    assert where in str(exc.value)
    assert "t.yaml:" in str(exc.value)


def test_errors_name_the_line_and_field() -> None:
    text = REFERENCE_TARGET.read_text().replace("{name: seq2, role: sequencer}", "{name: seq2, role: sequenzer}")
    with pytest.raises(TargetError) as exc:
        parse_target(text, "ref.yaml", REFERENCE_TARGET.parent)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "sequenzer" in ln)
    assert f"ref.yaml:{line}: services[9].role:" in str(exc.value)
    with pytest.raises(TargetError) as exc:
        parse_target(text.replace("replication: synchronous", "replication: synchronous\nreplicaton: x"),
                     "ref.yaml")
    assert "replicaton: unknown field" in str(exc.value)
    with pytest.raises(TargetError, match="empty file"):
        parse_target("", "e.yaml")
    with pytest.raises(TargetError, match="YAML"):
        parse_target("services: [", "b.yaml")


def test_the_schema_describes_the_format() -> None:
    schema = target_schema()
    assert {"version", "name", "compose", "services"} <= set(schema["required"])
    assert "participants" in schema["properties"] and "links" in schema["properties"]


def test_a_different_shape_needs_only_a_file(tmp_path: Path) -> None:
    """One participant pair, two sequencers, no mediator pair: a valid target whose model has exactly that."""
    data = _reference_data()
    keep = {"etcd1", "etcd2", "etcd3", "pg1", "pg2", "pg3", "pg-lb", "faultproxy", "seq1", "seq2", "p1a", "p1b",
            "ledger-lb"}
    data["services"] = [s for s in data["services"] if s["name"] in keep]
    data["participants"] = {"p1": {"parties": ["alice", "bob"]}}
    data["links"]["db"]["clients"] = ["seq1", "seq2", "p1a", "p1b"]
    data["links"]["sequencer"]["clients"] = ["p1a", "p1b"]
    t = _parse(data)
    m = t.model("full")
    assert m.pairs == {"p1": ["p1a", "p1b"]} and m.replicas("sequencer") == ["seq1", "seq2"]
    assert [lk.name for lk in m.links] == ["seq1-db", "seq2-db", "p1a-db", "p1b-db", "p1a-seq1", "p1a-seq2",
                                           "p1b-seq1", "p1b-seq2"]


def test_checkers_take_pairs_from_the_recorded_target_not_from_names() -> None:
    events = generate(ops=600, seed=3)
    idx = build_index(events)
    assert idx.target is not None
    assert node_of("p1a", idx) == "p1" and node_of("p1a-db", idx) == "p1" and node_of("seq2", idx) is None
    # a target whose replicas follow no naming pattern: the recorded pairs decide
    idx.target = {"pairs": {"left": ["alpha", "beta"]}, "links": {"alpha-to-db": "alpha"}}
    assert node_of("beta", idx) == "left" and node_of("alpha-to-db", idx) == "left" and node_of("p1a", idx) is None


@pytest.mark.parametrize("bug", [None, *sorted(BUGS)])
def test_recorded_and_legacy_histories_get_the_same_verdicts(bug: str | None) -> None:
    bugs = frozenset({bug}) if bug else frozenset()
    recorded = [(r.invariant, r.verdict) for r in check_all(generate(ops=1500, seed=5, bugs=bugs))]
    legacy = [(r.invariant, r.verdict) for r in check_all(generate(ops=1500, seed=5, bugs=bugs, record_target=False))]
    assert recorded == legacy


def test_the_schema_file_is_current() -> None:
    """targets/schema.json is what `ha-chaos target schema` prints (regenerate it with that command)."""
    assert json.loads((ROOT / "targets/schema.json").read_text()) == target_schema()
