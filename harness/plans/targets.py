"""Fault targets: literal names or role-relative selectors, parsed into a small AST and resolved at fire time.

Why an AST and not string matching at run time: a plan must be rejected *before* a run if it names a service
that does not exist, asks for a service where a link is needed, or misspells a function; and the same
expression must resolve differently as roles move ("the active replica of p1" is p1a before a failover and
p1b after). So a target is parsed and type-checked against the static ``TopologyModel`` when the plan is
validated, and resolved against a live ``TopologyView`` (who is active now, which PG node is primary) at the
moment the step fires.

Grammar (whitespace ignored)::

    selector := NAME                            literal service or link, e.g. p1a, p1a-db, seq1
              | active(PAIR) | passive(PAIR)    a pair's current active / passive replica(s)
              | primary(postgres) | replica(postgres) the PostgreSQL leader / every standby (all of them)
              | any(GROUP) | all(GROUP) | k_of(GROUP, K)
              | db_link(selector) | seq_links(selector) | seq_link(selector, selector) | links(selector)
              | step(N) | step(N, G)               what earlier step N of the plan hit (its group G)
    GROUP   := role (sequencer, participant, mediator, postgres, etcd) | pair (p1, med1) | selector
    PAIR    := pair name (p1, p2, med1) or a role with exactly one pair (mediator)

``replica(postgres)`` is every standby, as ``passive(P)`` is every passive replica: with three PostgreSQL nodes
that is two services. ``any(replica(postgres))`` picks one (a healthy one), ``k_of(etcd, 2)`` two etcd members.

``step(N)`` is not re-resolved: it stands for the services step N *resolved to when it fired*, as recorded in
the history (``resolved``; a partition: every member of its groups, ``step(N, G)`` group G alone). So "partition
the active replica of p1, then pause that same replica" stays one replica even if the partition starts a
failover, where a second ``active(p1)`` would find the new active, or none mid-failover. N must be an earlier
step of the same plan whose target is services (every kind but the link kinds); the check needs the whole plan
(``check(..., steps=...)``), the resolution the executor's record (``resolve(..., steps=...)``).

Random choices (``any``, ``k_of``) draw from a ``random.Random`` seeded from the plan seed, over candidates
in sorted order, so the same seed and the same observed state give the same choice. Real containers still
decide the observed state; that part is not deterministic and nobody pretends it is.
"""

from __future__ import annotations

import difflib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from harness.topology.model import TopologyModel

GROUP_ROLES = ("sequencer", "participant", "mediator", "postgres", "etcd")
FUNCTIONS = ("active", "passive", "primary", "replica", "any", "all", "k_of", "db_link", "seq_links",
             "seq_link", "links", "step")


class SelectorError(ValueError):
    """A target that cannot be parsed or does not fit the topology (raised at validation time)."""


class ResolutionError(RuntimeError):
    """A valid selector that matches nothing in the current state (e.g. no active replica right now)."""


# --- AST --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Name:
    """A literal service or link name (at top level), or a role/pair group inside any/all/k_of."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Call:
    """A function application: ``fn(args...)``; ``k`` is the integer argument of ``k_of``."""

    fn: str
    args: tuple[Selector, ...]
    k: int | None = None

    def __str__(self) -> str:
        parts = [str(a) for a in self.args]
        if self.k is not None:
            parts.append(str(self.k))
        return f"{self.fn}({', '.join(parts)})"


@dataclass(frozen=True)
class StepRef:
    """``step(N)``: the services step N of the same plan resolved to when it fired; ``step(N, G)``: group G of
    that (partition) step."""

    index: int
    group: int | None = None

    def __str__(self) -> str:
        return f"step({self.index})" if self.group is None else f"step({self.index}, {self.group})"


Selector = Name | Call | StepRef
#: the static sort of a ``step(N)`` reference (raises SelectorError for a reference the plan cannot satisfy)
StepSorts = Callable[[StepRef], "Sort"]
#: what a ``step(N)`` reference resolved to (raises ResolutionError when the step has hit nothing)
StepTargets = Callable[[StepRef], list[str]]

_TOKEN = re.compile(r"\s*(?:(?P<num>\d+)(?![A-Za-z_.-])|(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)|(?P<p>[(),]))")


def parse(text: str) -> Selector:
    """Parse a target expression; raise SelectorError naming the position of the first problem."""
    if not isinstance(text, str) or not text.strip():
        raise SelectorError("empty target")
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise SelectorError(f"unexpected character {text[pos:].lstrip()[:1]!r} at column {pos + 1}")
        kind = m.lastgroup or "p"
        tokens.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    parser = _Parser(text, tokens)
    sel = parser.selector(depth=0)
    if parser.i != len(tokens):
        raise SelectorError(f"unexpected {tokens[parser.i][1]!r} at column {tokens[parser.i][2] + 1}")
    return sel


@dataclass
class _Parser:
    text: str
    tokens: list[tuple[str, str, int]]
    i: int = 0

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _expect(self, value: str) -> None:
        tok = self._peek()
        if tok is None or tok[1] != value:
            where = f"{tok[1]!r} at column {tok[2] + 1}" if tok else "end of target"
            # YAML splits a flow list or mapping at every comma: [k_of(sequencer, 2)] is two strings
            hint = ("; inside a YAML [...] or {...}, quote a target that holds a comma: 'step(0, 1)'"
                    if tok is None and value == ")" else "")
            raise SelectorError(f"expected {value!r}, found {where}{hint}")
        self.i += 1

    def selector(self, depth: int) -> Selector:
        if depth > 8:
            raise SelectorError("target nested too deeply")
        tok = self._peek()
        if tok is None or tok[0] != "name":
            where = f"{tok[1]!r} at column {tok[2] + 1}" if tok else "end of target"
            raise SelectorError(f"expected a name or a function, found {where}")
        self.i += 1
        nxt = self._peek()
        if nxt is None or nxt[1] != "(":
            return Name(tok[1])
        fn = tok[1]
        if fn not in FUNCTIONS:
            raise SelectorError(f"unknown function {fn!r}{_suggest(fn, FUNCTIONS)}")
        self.i += 1
        if fn == "step":
            return self._step_ref()
        args: list[Selector] = [self.selector(depth + 1)]
        k: int | None = None
        while (t := self._peek()) is not None and t[1] == ",":
            self.i += 1
            t = self._peek()
            if fn == "k_of" and t is not None and t[0] == "num":
                k = int(t[1])
                self.i += 1
            else:
                args.append(self.selector(depth + 1))
        self._expect(")")
        want = {"seq_link": 2}.get(fn, 1)
        if len(args) != want:
            raise SelectorError(f"{fn}() takes {want} target argument(s), got {len(args)}")
        if fn == "k_of" and (k is None or k < 1):
            raise SelectorError("k_of(GROUP, K) needs an integer K >= 1")
        return Call(fn, tuple(args), k)


    def _number(self, what: str) -> int:
        tok = self._peek()
        if tok is None or tok[0] != "num":
            where = f"{tok[1]!r} at column {tok[2] + 1}" if tok else "end of target"
            raise SelectorError(f"step(N) takes {what}, e.g. step(0) or step(0, 1) (a partition's group 1); "
                                f"found {where}")
        self.i += 1
        return int(tok[1])

    def _step_ref(self) -> StepRef:
        index = self._number("the index of an earlier step of this plan")
        group = None
        if (t := self._peek()) is not None and t[1] == ",":
            self.i += 1
            group = self._number("a group index as its second argument")
        self._expect(")")
        return StepRef(index, group)


def step_refs(sel: Selector) -> list[StepRef]:
    """Every ``step(N)`` inside ``sel``, outermost first."""
    if isinstance(sel, StepRef):
        return [sel]
    if isinstance(sel, Call):
        return [r for a in sel.args for r in step_refs(a)]
    return []


def substitute_steps(sel: Selector, replace: Callable[[StepRef], list[Selector]]) -> list[Selector]:
    """``sel`` with every ``step(N)`` replaced by ``replace(ref)`` (a renumbered reference, or the selectors step N
    was written with). A reference that is the whole selector may become several; inside a function it must stay
    one (SelectorError otherwise: ``db_link(step(0))`` has no single equivalent when step 0 named two targets)."""
    if isinstance(sel, StepRef):
        return replace(sel)
    if isinstance(sel, Name):
        return [sel]
    args = []
    for a in sel.args:
        sub = substitute_steps(a, replace)
        if len(sub) != 1:
            raise SelectorError(f"{a} stands for {len(sub)} selectors inside {sel.fn}()")
        args.append(sub[0])
    return [Call(sel.fn, tuple(args), sel.k)]


def _suggest(word: str, options: object) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)  # type: ignore[call-overload]
    return f"; did you mean {close[0]!r}?" if close else ""


# --- static checking --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sort:
    """What a selector denotes: services (with their possible roles) or links (with their possible kinds)."""

    what: Literal["service", "link"]
    tags: frozenset[str] = field(default_factory=frozenset)
    many: bool = False  # may resolve to more than one name


def pair_of(model: TopologyModel, name: str) -> str:
    """Map a PAIR argument to a pair name; a role name is accepted when that role has exactly one pair."""
    pairs = model.pairs
    if name in pairs:
        return name
    by_role = sorted({model.service(r).node for reps in pairs.values() for r in reps
                      if model.service(r).role == name} - {None})  # type: ignore[arg-type]
    if len(by_role) == 1:
        return str(by_role[0])
    if by_role:
        raise SelectorError(f"{name!r} has several pairs ({', '.join(by_role)}); name one of them")
    raise SelectorError(f"unknown pair {name!r}{_suggest(name, pairs)} (pairs: {', '.join(sorted(pairs))})")


def _group_members(model: TopologyModel, name: str) -> list[str] | None:
    if name in GROUP_ROLES or name in model.pairs:
        members = model.replicas(name)
        return members or None
    return None


def check(sel: Selector, model: TopologyModel, *, top: bool = True, steps: StepSorts | None = None) -> Sort:
    """Type-check ``sel`` against the static model; raise SelectorError with a suggestion on a bad name.

    ``steps`` gives the sort of a ``step(N)`` reference (the schema builds it from the plan); without it a
    selector holding one cannot be checked.
    """
    if isinstance(sel, StepRef):
        if steps is None:
            raise SelectorError(f"{sel} refers to another step of the plan: check it with the whole plan")
        return steps(sel)
    if isinstance(sel, Name):
        n = sel.name
        if not top and (members := _group_members(model, n)):
            return Sort("service", frozenset(model.service(m).role for m in members), len(members) > 1)
        if n in model.service_names:
            return Sort("service", frozenset({model.service(n).role}))
        if any(lk.name == n for lk in model.links):
            return Sort("link", frozenset({model.link(n).kind}))
        if top and _group_members(model, n):
            raise SelectorError(f"{n!r} is a group, not one service; write all({n}) or any({n})")
        known = model.service_names + [lk.name for lk in model.links]
        if not top:
            known += [*GROUP_ROLES, *model.pairs]
        raise SelectorError(f"unknown service or link {n!r}{_suggest(n, known)}")
    fn, args = sel.fn, sel.args
    if fn in ("active", "passive"):
        if not isinstance(args[0], Name):
            raise SelectorError(f"{fn}() takes a pair name such as p1 or med1")
        pair = pair_of(model, args[0].name)
        roles = frozenset(model.service(r).role for r in model.pairs[pair])
        return Sort("service", roles, fn == "passive")
    if fn in ("primary", "replica"):
        if args[0] != Name("postgres"):
            raise SelectorError(f"{fn}() only applies to postgres: write {fn}(postgres)")
        if not model.by_role("postgres"):
            raise SelectorError("this topology has no postgres nodes")
        return Sort("service", frozenset({"postgres"}), fn == "replica")
    if fn in ("any", "all", "k_of"):
        inner = check(args[0], model, top=False, steps=steps)
        if fn == "k_of" and isinstance(args[0], Name) and (members := _group_members(model, args[0].name)) \
                and sel.k is not None and sel.k > len(members):
            raise SelectorError(f"k_of({args[0]}, {sel.k}): {args[0]} has only {len(members)} members")
        return Sort(inner.what, inner.tags, fn != "any" and (fn == "all" or (sel.k or 1) > 1))
    # link functions: the inner selector must denote services that own such links
    inner = check(args[0], model, top=False, steps=steps)
    if inner.what != "service":
        raise SelectorError(f"{fn}() takes services, but {args[0]} denotes links")
    owners = {model.service(lk.client).role for lk in model.links
              if fn in ("links", "seq_links", "seq_link") or lk.kind == "db"}
    if fn in ("seq_links", "seq_link"):
        owners = {model.service(lk.client).role for lk in model.links if lk.kind == "sequencer"}
    if not inner.tags & owners:
        raise SelectorError(f"{fn}(): {args[0]} ({', '.join(sorted(inner.tags))}) has no such links")
    if fn == "db_link":
        return Sort("link", frozenset({"db"}), inner.many)
    if fn == "seq_link":
        seq = check(args[1], model, top=False, steps=steps)
        if seq.what != "service" or seq.tags != frozenset({"sequencer"}):
            raise SelectorError(f"seq_link(NODE, SEQUENCER): {args[1]} is not a sequencer")
        return Sort("link", frozenset({"sequencer"}), inner.many or seq.many)
    if fn == "seq_links":
        return Sort("link", frozenset({"sequencer"}), True)
    return Sort("link", frozenset({"db", "sequencer"}), True)  # links()


def parse_and_check(text: str, model: TopologyModel, steps: StepSorts | None = None) -> tuple[Selector, Sort]:
    sel = parse(text)
    return sel, check(sel, model, steps=steps)


def union_sort(sorts: list[Sort]) -> Sort:
    """The sort of several targets taken together (a step's target list, a partition group)."""
    whats = {s.what for s in sorts}
    what: Literal["service", "link"] = "link" if whats == {"link"} else "service"
    return Sort(what, frozenset().union(*(s.tags for s in sorts)), len(sorts) > 1 or any(s.many for s in sorts))


# --- resolution -------------------------------------------------------------------------------------------
class TopologyView(Protocol):
    """The current state of a running topology, as far as target resolution needs it.

    The live implementation (probing health endpoints and Patroni) belongs to harness/topology; ``FakeView``
    below serves unit tests and Hypothesis.
    """

    @property
    def model(self) -> TopologyModel: ...

    def active(self, pair: str) -> str | None:
        """The replica of ``pair`` that is active (ready) now, or None during a failover."""
        ...

    def pg_primary(self) -> str | None:
        """The current PostgreSQL leader, or None when there is none."""
        ...

    def healthy(self, service: str) -> bool:
        """Whether the service is up (used so that ``any(sequencer)`` does not pick an already dead one)."""
        ...


@dataclass
class FakeView:
    """An in-memory TopologyView: tests set who is active / primary / unhealthy, and change it as they go."""

    model: TopologyModel
    actives: dict[str, str | None] = field(default_factory=dict)
    primary: str | None = None
    unhealthy: set[str] = field(default_factory=set)

    @classmethod
    def initial(cls, model: TopologyModel) -> FakeView:
        """First replica of every pair active, first postgres node primary: the state after a clean start."""
        pg = [s.name for s in model.by_role("postgres")]
        return cls(model, {p: reps[0] for p, reps in model.pairs.items()}, pg[0] if pg else None)

    def active(self, pair: str) -> str | None:
        return self.actives.get(pair)

    def pg_primary(self) -> str | None:
        return self.primary

    def healthy(self, service: str) -> bool:
        return service not in self.unhealthy


def _dedup(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def resolve(sel: Selector | str, view: TopologyView, rng: random.Random, *,
            steps: StepTargets | None = None) -> list[str]:
    """Concrete service or link names for ``sel`` now; ResolutionError if it matches nothing.

    ``steps`` answers ``step(N)`` references from the executor's record of what each step hit.
    """
    if isinstance(sel, str):
        sel = parse(sel)
    out = _resolve(sel, view, rng, top=True, steps=steps)
    if not out:
        raise ResolutionError(f"{sel} matches nothing right now")
    return out


def _resolve(sel: Selector, view: TopologyView, rng: random.Random, *, top: bool,
             steps: StepTargets | None = None) -> list[str]:
    model = view.model
    if isinstance(sel, StepRef):
        if steps is None:
            raise ResolutionError(f"{sel}: no record of the plan's earlier steps to resolve it against")
        return list(steps(sel))
    if isinstance(sel, Name):
        if not top and (members := _group_members(model, sel.name)):
            return members
        return [sel.name]
    fn, args = sel.fn, sel.args
    if fn in ("active", "passive"):
        pair = pair_of(model, args[0].name)  # type: ignore[union-attr]
        act = view.active(pair)
        if act is None:
            raise ResolutionError(f"{sel}: pair {pair} has no active replica right now")
        if fn == "active":
            return [act]
        return [r for r in model.pairs[pair] if r != act]
    if fn in ("primary", "replica"):
        prim = view.pg_primary()
        if prim is None:
            raise ResolutionError(f"{sel}: postgres has no primary right now")
        if fn == "primary":
            return [prim]
        return [s.name for s in model.by_role("postgres") if s.name != prim]
    if fn in ("any", "all", "k_of"):
        cands = _resolve(args[0], view, rng, top=False, steps=steps)
        if fn == "all":
            return cands
        is_service = set(cands) <= set(model.service_names)
        pool = sorted(c for c in cands if not is_service or view.healthy(c))
        k = 1 if fn == "any" else int(sel.k or 1)
        if len(pool) < k:
            raise ResolutionError(f"{sel}: only {len(pool)} healthy candidate(s) of {len(cands)}")
        return sorted(rng.sample(pool, k))
    nodes = _resolve(args[0], view, rng, top=False, steps=steps)
    if fn == "db_link":
        return _dedup([lk.name for n in nodes for lk in model.links_of(n, "db")])
    if fn == "seq_links":
        return _dedup([lk.name for n in nodes for lk in model.links_of(n, "sequencer")])
    if fn == "links":
        return _dedup([lk.name for n in nodes for lk in model.links_of(n)])
    seqs = set(_resolve(args[1], view, rng, top=False, steps=steps))  # seq_link
    return _dedup([lk.name for n in nodes for lk in model.links_of(n, "sequencer")
                   if lk.upstream_service in seqs])
