"""Selectors: parsing, static checks against the model, resolution on a fake view, seeded determinism."""

from __future__ import annotations

import random

import pytest

from harness.plans.targets import FakeView, ResolutionError, SelectorError, check, parse, resolve
from harness.topology.model import TopologyModel

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text", [
    "p1a", "active(p1)", "passive(med1)", "primary(postgres)", "replica(postgres)", "any(sequencer)",
    "k_of(sequencer, 2)", "db_link(active(p1))", "seq_links(p1a)", "seq_link(p1a, seq2)",
    "seq_link(active(p2), any(sequencer))", "all(participant)", "links(passive(p1))", "any(seq_links(p1a))",
    "any(etcd)", "all(etcd)", "k_of(etcd, 2)", "etcd2", "any(replica(postgres))", "k_of(replica(postgres), 2)",
])
def test_valid_selectors_print_back_the_same(text: str, model: TopologyModel) -> None:
    sel = parse(text)
    assert str(sel) == text
    check(sel, model)


@pytest.mark.parametrize("text, needle", [
    ("activ(p1)", "did you mean 'active'"),
    ("active(p1", "expected ')'"),
    ("active(p1))", "unexpected ')'"),
    ("active(p9)", "unknown pair 'p9'"),
    ("active(participant)", "several pairs"),
    ("primary(p1)", "only applies to postgres"),
    ("k_of(sequencer, 4)", "has only 3 members"),
    ("k_of(sequencer)", "integer K"),
    ("seq_link(p1a, p2a)", "is not a sequencer"),
    ("db_link(p1a-db)", "denotes links"),
    ("db_link(primary(postgres))", "has no such links"),
    ("sequencer", "is a group"),
    ("etcd", "is a group, not one service; write all(etcd) or any(etcd)"),
    ("k_of(etcd, 4)", "has only 3 members"),
    ("any(etc)", "did you mean 'etcd'"),
    ("db_link(any(etcd))", "has no such links"),
    ("p1aa", "did you mean 'p1a'"),
    ("any(sequencr)", "did you mean 'sequencer'"),
    ("a$b", "unexpected character"),
    ("", "empty target"),
    ("any(" * 12 + "p1a" + ")" * 12, "nested too deeply"),
])
def test_bad_selectors(text: str, needle: str, model: TopologyModel) -> None:
    with pytest.raises(SelectorError, match=None) as err:
        check(parse(text), model)
    assert needle in str(err.value)


def test_mediator_role_names_its_only_pair(model: TopologyModel) -> None:
    view = FakeView.initial(model)
    assert resolve("passive(mediator)", view, random.Random(0)) == ["med1b"]


def test_resolution_follows_the_current_roles(model: TopologyModel) -> None:
    view = FakeView.initial(model)
    rng = random.Random(1)
    assert resolve("active(p1)", view, rng) == ["p1a"]
    assert resolve("db_link(active(p1))", view, rng) == ["p1a-db"]
    assert resolve("primary(postgres)", view, rng) == ["pg1"]
    view.actives["p1"], view.primary = "p1b", "pg2"
    assert resolve("db_link(active(p1))", view, rng) == ["p1b-db"]
    assert resolve("passive(p1)", view, rng) == ["p1a"]
    assert resolve("replica(postgres)", view, rng) == ["pg1", "pg3"]
    assert resolve("seq_links(p2a)", view, rng) == ["p2a-seq1", "p2a-seq2", "p2a-seq3"]
    assert resolve("seq_link(active(p1), seq3)", view, rng) == ["p1b-seq3"]
    assert resolve("db_link(all(mediator))", view, rng) == ["med1a-db", "med1b-db"]


def test_no_active_or_no_primary_is_a_resolution_error(model: TopologyModel) -> None:
    view = FakeView.initial(model)
    view.actives["p2"] = None
    view.primary = None
    with pytest.raises(ResolutionError, match="no active replica"):
        resolve("db_link(active(p2))", view, random.Random(0))
    with pytest.raises(ResolutionError, match="no primary"):
        resolve("replica(postgres)", view, random.Random(0))


def test_random_choice_skips_unhealthy_and_is_seeded(model: TopologyModel) -> None:
    view = FakeView.initial(model)
    view.unhealthy = {"seq2"}
    picks = [resolve("any(sequencer)", view, random.Random(seed))[0] for seed in range(60)]
    assert set(picks) == {"seq1", "seq3"}
    again = [resolve("any(sequencer)", view, random.Random(seed))[0] for seed in range(60)]
    assert picks == again
    two = resolve("k_of(sequencer, 2)", view, random.Random(5))
    assert sorted(two) == ["seq1", "seq3"]
    with pytest.raises(ResolutionError, match="healthy"):
        view.unhealthy = {"seq1", "seq2", "seq3"}
        resolve("any(sequencer)", view, random.Random(0))


def test_one_rng_draws_in_sequence(model: TopologyModel) -> None:
    """The executor shares one seeded Random across steps: the sequence of choices depends only on the seed."""
    view = FakeView.initial(model)
    seq = [resolve("any(sequencer)", view, rng)[0] for rng in [random.Random(42)] for _ in range(20)]
    rng = random.Random(42)
    assert seq == [resolve("any(sequencer)", view, rng)[0] for _ in range(20)]
    assert len(set(seq)) > 1


def test_etcd_is_a_group_role(model: TopologyModel) -> None:
    view = FakeView.initial(model)
    assert resolve("all(etcd)", view, random.Random(0)) == ["etcd1", "etcd2", "etcd3"]
    assert resolve("any(etcd)", view, random.Random(0))[0] in {"etcd1", "etcd2", "etcd3"}
    view.unhealthy = {"etcd1", "etcd3"}
    assert resolve("any(etcd)", view, random.Random(3)) == ["etcd2"]
    assert len(resolve("k_of(etcd, 1)", view, random.Random(3))) == 1
    with pytest.raises(ResolutionError, match="healthy"):
        resolve("k_of(etcd, 2)", view, random.Random(0))


def test_replica_postgres_is_every_standby_and_any_of_it_one(model: TopologyModel) -> None:
    """Like passive(P): every standby (two of three nodes), whichever node leads; any() picks one of them."""
    view = FakeView.initial(model)
    assert resolve("replica(postgres)", view, random.Random(0)) == ["pg2", "pg3"]
    picks = {resolve("any(replica(postgres))", view, random.Random(seed))[0] for seed in range(40)}
    assert picks == {"pg2", "pg3"}
    view.primary = "pg3"
    assert resolve("replica(postgres)", view, random.Random(0)) == ["pg1", "pg2"]
    view.unhealthy = {"pg1"}
    assert resolve("any(replica(postgres))", view, random.Random(0)) == ["pg2"]
    assert check(parse("replica(postgres)"), model).many and not check(parse("any(replica(postgres))"), model).many
