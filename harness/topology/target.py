"""Targets: a deployment described as data (issue 13, the seam between the harness and the system under test).

A target file (YAML, ``targets/reference.yaml`` describes the reference topology) names the deployment's compose
files per profile, every service with its role and logical node (active/passive pairs), the parties each logical
participant hosts, each role's endpoints by container port and protocol, the fault-proxy links, the replication
mode a run starts with, and which evidence sources exist. The topology model (plan validation, selectors, the
Hypothesis strategies), the workload's parties and the balancer's frontends are taken from it.

Errors name file, line and field like plan errors (``harness/yamlfile.py``); ``ha-chaos target schema`` prints the
JSON Schema and ``ha-chaos target check FILE`` validates a file.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import InputError
from harness.topology.model import Link, Service, TopologyModel
from harness.yamlfile import FileProblems, Problem, compose, line_of, locate, merge, read_text

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGETS_DIR = REPO_ROOT / "targets"
REFERENCE_TARGET = TARGETS_DIR / "reference.yaml"

RoleName = Literal["etcd", "postgres", "pg-lb", "faultproxy", "sequencer", "mediator", "participant", "ledger-lb"]
#: roles whose replicas form one logical node named after the role (every sequencer is "sequencer")
ROLE_NODES = ("etcd", "postgres", "sequencer")
#: roles that run as active/passive pairs: each service names its logical node
PAIR_ROLES = ("mediator", "participant")
#: the database tier: what a profile other than ``full`` models
DB_TIER = ("etcd", "postgres", "pg-lb")
NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


class TargetError(FileProblems):
    """A target file that cannot be used; every problem names its line."""

    what = "target"
    hint = "edit the lines above; `ha-chaos target schema` prints the format"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Strict):
    port: int = Field(ge=1, le=65535, description="container port")
    protocol: str = Field(min_length=1, description="what it speaks, e.g. ha-chaos-json, postgres, patroni")


class ServiceSpec(_Strict):
    name: str = Field(pattern=NAME, description="the compose service name")
    role: RoleName
    node: str | None = Field(default=None, pattern=NAME,
                             description="logical node of a pair replica (mediator, participant): required there")


class ParticipantSpec(_Strict):
    parties: list[str] = Field(min_length=1, description="the parties this logical participant hosts")


class DbLinks(_Strict):
    clients: list[str] = Field(min_length=1, description="services whose database connection goes through a link")
    upstream: str = Field(description="the service they reach (the PostgreSQL balancer)")
    port: int = Field(ge=1, le=65535)


class SequencerLinks(_Strict):
    clients: list[str] = Field(min_length=1, description="services with one link to every sequencer")
    port: int = Field(ge=1, le=65535, description="the sequencers' API port")


class LinkRules(_Strict):
    port_base: int = Field(ge=1024, le=60000, description="first listen port inside the fault-proxy container")
    db: DbLinks | None = None
    sequencer: SequencerLinks | None = None


class ClockControl(_Strict):
    file: str = Field(pattern=r"^/\S+$", description="absolute path, inside each container of these roles, of the "
                      "file the node's wall clock reads its skew from: JSON {offset_s, drift, since} (see "
                      "harness/sut/common/clock.py); the harness writes it through the Docker API")
    roles: list[RoleName] = Field(min_length=1, description="roles whose nodes read it")


class Target(_Strict):
    version: Literal[1]
    name: str = Field(pattern=NAME)
    description: str = ""
    compose_dir: str = Field(default=".", description="directory of the compose files, relative to the target file")
    compose: dict[str, list[str]] = Field(description="profile -> compose files; `full` is required")
    replication: Literal["synchronous", "asynchronous"] = "synchronous"
    services: list[ServiceSpec] = Field(min_length=1)
    participants: dict[str, ParticipantSpec] = Field(default_factory=dict)
    endpoints: dict[RoleName, dict[str, Endpoint]] = Field(default_factory=dict)
    links: LinkRules | None = None
    evidence: list[Literal["node", "pg", "pglog"]] = Field(default_factory=lambda: ["node"])
    clock: ClockControl | None = Field(default=None, description="how the harness skews a node's clock (the `clock` "
                                       "fault kind); none: clock faults do not apply to this target")

    @model_validator(mode="after")
    def _cross_check(self) -> Target:
        problems: list[str] = []
        names = [s.name for s in self.services]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(f"services: duplicate service names {dup}")
        if "full" not in self.compose:
            problems.append("compose: the `full` profile is required")
        for s in self.services:
            if s.role in PAIR_ROLES and not s.node:
                problems.append(f"services: {s.name} ({s.role}) needs `node` (its active/passive pair)")
        nodes = {s.node for s in self.services if s.role == "participant" and s.node}
        if set(self.participants) != nodes:
            problems.append(f"participants: must name exactly the participant nodes {sorted(nodes)}, "
                            f"got {sorted(self.participants)}")
        roles = {s.name: s.role for s in self.services}
        if self.links is not None:
            for rule, clients in (("db", self.links.db.clients if self.links.db else []),
                                  ("sequencer", self.links.sequencer.clients if self.links.sequencer else [])):
                unknown = [c for c in clients if c not in roles]
                if unknown:
                    problems.append(f"links.{rule}.clients: no such services {unknown}")
            if self.links.db and self.links.db.upstream not in roles:
                problems.append(f"links.db.upstream: no such service {self.links.db.upstream!r}")
            if "faultproxy" not in roles.values():
                problems.append("links: links need a service with role faultproxy")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- what the harness takes from it ----------------------------------------------------------------
    def model(self, profile: str = "full") -> TopologyModel:
        """The topology model of a profile: ``full`` is every service and link; any other profile models the
        database tier only (etcd, PostgreSQL, its balancer)."""
        services = tuple(Service(s.name, s.role, s.node or (s.role if s.role in ROLE_NODES else None))
                         for s in self.services if profile == "full" or s.role in DB_TIER)
        clock_roles = tuple(self.clock.roles) if self.clock is not None and profile == "full" else ()
        return TopologyModel(services, self._links() if profile == "full" else (), clock_roles)

    def _links(self) -> tuple[Link, ...]:
        if self.links is None:
            return ()
        out: list[Link] = []
        port = self.links.port_base
        if self.links.db:
            for c in self.links.db.clients:
                out.append(Link(f"{c}-db", c, self.links.db.upstream, self.links.db.port, port, "db"))
                port += 1
        if self.links.sequencer:
            sequencers = [s.name for s in self.services if s.role == "sequencer"]
            for c in self.links.sequencer.clients:
                for seq in sequencers:
                    out.append(Link(f"{c}-{seq}", c, seq, self.links.sequencer.port, port, "sequencer"))
                    port += 1
        return tuple(out)

    @property
    def parties(self) -> dict[str, list[str]]:
        """Logical participant -> the parties it hosts."""
        return {node: list(p.parties) for node, p in self.participants.items()}

    def port(self, role: str, endpoint: str) -> int:
        """A role's endpoint container port (KeyError naming what is missing)."""
        try:
            return self.endpoints[role][endpoint].port  # type: ignore[index]
        except KeyError:
            raise KeyError(f"target {self.name!r} has no endpoint {endpoint!r} for role {role!r}") from None

    def summary(self) -> dict[str, Any]:
        """What a run records of its target (history and topology.json): enough to re-judge offline."""
        full = self.model("full")
        return {"name": self.name, "roles": {s.name: s.role for s in full.services}, "pairs": full.pairs,
                "parties": self.parties, "replication": self.replication, "evidence": list(self.evidence)}


def parse_target(text: str, source: str = "<target>", base_dir: Path | None = None) -> Target:
    """Validate target text; raise TargetError listing every problem with its line."""
    data, root = compose(text, source, TargetError, "a target needs version, name, compose, services, ...")
    if not isinstance(data, dict):
        raise TargetError([Problem(source, line_of(root), "", "a target is a mapping (version, name, compose, "
                                   f"services, ...), not a {type(data).__name__}")])
    try:
        target = Target.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(err.get("loc", ()))
            typ = err.get("type", "")
            node, path = locate(root, loc, name_missing=typ in ("missing", "extra_forbidden"))
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            msg = {"missing": "required field is missing", "extra_forbidden": "unknown field"}.get(typ, msg)
            problems.append(Problem(source, line_of(node), path, msg))
        raise TargetError(merge(problems)) from None
    except (ValueError, TypeError, RecursionError) as exc:  # defensive: a validator choking on odd input
        raise TargetError([Problem(source, 1, "", f"cannot validate: {exc}")]) from None
    if base_dir is not None:
        missing = [f for files in target.compose.values() for f in files
                   if not (base_dir / target.compose_dir / f).is_file()]
        if missing:
            node, path = locate(root, ("compose",))
            raise TargetError([Problem(source, line_of(node), path,
                                       f"compose files not found under {base_dir / target.compose_dir}: "
                                       f"{sorted(set(missing))}")])
    return target


def load_target(path: str | Path) -> Target:
    """Read and validate a target file."""
    p = Path(path)
    return parse_target(read_text(p, "target", TargetError), str(p), p.resolve().parent)


def compose_paths(target: Target, path: str | Path, profile: str) -> tuple[Path, list[str]]:
    """(compose directory, compose file names) of a profile of the target read from ``path``."""
    if profile not in target.compose:
        raise InputError(f"target {target.name!r} has no profile {profile!r}",
                         f"its profiles: {', '.join(target.compose)}")
    return (Path(path).resolve().parent / target.compose_dir).resolve(), list(target.compose[profile])


@functools.lru_cache(maxsize=8)
def _cached(path: str) -> Target:
    return load_target(path)


def reference_target() -> Target:
    """The reference topology's target (targets/reference.yaml), read once per process."""
    return _cached(str(REFERENCE_TARGET))


def target_schema() -> dict[str, Any]:
    return Target.model_json_schema()
