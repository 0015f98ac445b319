"""Node configuration from environment variables, with the model's production defaults.

Why env only: compose sets per-service env; a YAML file would be one more thing to mount. Every timer of the
model is a variable here (production defaults, short values in tests/compose); API.md lists them all.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Literal

from harness.sut.common.bugs import parse_bugs

NodeRole = Literal["sequencer", "mediator", "participant"]

DEFAULT_PARTY_MAP = "alice:p1,bob:p1,carol:p2,dave:p2"


@dataclass(frozen=True)
class Timers:
    """All periods in seconds. Defaults are Canton's; tests shorten them."""

    lock_check: float = 5.0            # active re-checks it holds the main lock (+0..20 % jitter)
    lock_check_jitter: float = 0.2
    lock_check_timeout: float = 2.0     # a lock check that takes longer counts as failed
    passive_check: float = 15.0         # passive tries to take the main lock
    role_reeval: float = 5.0            # reconcile desired role with running services
    writers_retry: float = 0.5          # retry of the exclusive writers lock during handover
    reconnect_min: float = 0.1          # lock connection reconnect backoff
    reconnect_max: float = 10.0
    db_retry_min: float = 0.05          # transient DB error retry backoff
    db_retry_max: float = 10.0
    db_connect_timeout: float = 3.0
    db_command_timeout: float = 10.0
    failed_to_fatal: float = 300.0      # storage failing this long -> liveness fails
    seq_keepalive: float = 0.05         # idle sequencer advances its watermark
    seq_offline_check: float = 5.0      # how often each sequencer marks stale peers offline
    seq_offline_after: float = 8.0      # watermark older than this -> peer marked offline
    seq_poll: float = 0.02              # reader polls the safe watermark (while its NOTIFY listener is down)
    seq_poll_listening: float = 0.25    # fallback poll while NOTIFY signals new events and watermarks
    seq_heartbeat: float = 1.0          # idle subscription heartbeat line
    seq_client_timeout: float = 3.0     # subscriber: no line for this long -> re-subscribe elsewhere
    seq_send_timeout: float = 2.0       # one send attempt
    max_sequencing: float = 20.0        # submission's max-sequencing-time = now + this
    decision_timeout: float = 30.0      # request ts + this -> LOCAL_VERDICT_TIMEOUT at participants
    tick: float = 0.5                   # participant asks for a time proof when a deadline passed
    transition_timeout: float = 30.0    # a passive transition not done by then has failed: the process exits


_TIMER_ENV = {f: "HA_" + f.upper() for f in Timers.__dataclass_fields__}


def timers_from_env(env: dict[str, str]) -> Timers:
    kwargs = {f: float(env[name]) for f, name in _TIMER_ENV.items() if env.get(name)}
    return Timers(**kwargs)


def parse_party_map(value: str) -> dict[str, str]:
    """``alice:p1,bob:p1`` -> ``{alice: p1, bob: p1}`` (which participant hosts which party)."""
    out: dict[str, str] = {}
    for item in value.split(","):
        if item.strip():
            party, _, participant = item.strip().partition(":")
            out[party] = participant
    return out


@dataclass(frozen=True)
class NodeConfig:
    role: NodeRole
    node: str                       # logical node: p1, med1, sequencer
    replica: str                    # service name: p1a, med1b, seq2
    db_dsn: str
    db_startup: Literal["wait", "fail"] = "fail"
    sequencer_endpoints: tuple[str, ...] = ()
    health_port: int = 8080
    api_port: int = 7500
    api_host: str = "0.0.0.0"
    mediator: str = "med1"
    party_map: dict[str, str] = field(default_factory=lambda: parse_party_map(DEFAULT_PARTY_MAP))
    seq_max_writers: int = 10
    bugs: frozenset[str] = frozenset()
    timers: Timers = field(default_factory=Timers)

    @property
    def hosted_parties(self) -> set[str]:
        return {p for p, n in self.party_map.items() if n == self.node}


def config_from_env(env: dict[str, str] | None = None) -> NodeConfig:
    env = dict(os.environ if env is None else env)
    role = env.get("NODE_ROLE", "")
    if role not in ("sequencer", "mediator", "participant"):
        raise ValueError(f"NODE_ROLE must be sequencer, mediator or participant, not {role!r}")
    replica = env.get("NODE_REPLICA") or socket.gethostname()
    default_node = "sequencer" if role == "sequencer" else replica.rstrip("abcdefgh") or replica
    startup = env.get("DB_STARTUP", "fail")
    if startup not in ("wait", "fail"):
        raise ValueError(f"DB_STARTUP must be wait or fail, not {startup!r}")
    default_api = 7000 if role == "sequencer" else 7500
    return NodeConfig(
        role=role,  # type: ignore[arg-type]
        node=env.get("NODE_NAME") or default_node,
        replica=replica,
        db_dsn=env["DB_DSN"],
        db_startup=startup,  # type: ignore[arg-type]
        sequencer_endpoints=tuple(e.strip() for e in env.get("SEQUENCER_ENDPOINTS", "").split(",") if e.strip()),
        health_port=int(env.get("HEALTH_PORT", "8080")),
        api_port=int(env.get("API_PORT", str(default_api))),
        api_host=env.get("API_HOST", "0.0.0.0"),
        mediator=env.get("MEDIATOR_MEMBER", "med1"),
        party_map=parse_party_map(env.get("PARTY_MAP", DEFAULT_PARTY_MAP)),
        seq_max_writers=int(env.get("SEQ_MAX_WRITERS", "10")),
        bugs=parse_bugs(env.get("HA_CHAOS_SUT_BUGS")),
        timers=timers_from_env(env),
    )
