"""Each target's node compose file (reference.yml, small.yml) agrees with its target's links and ports, and with
the project conventions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.topology import links as links_module
from harness.topology.target import TARGETS_DIR, load_target

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose" / "reference.yml"
#: target -> (its node compose file, its fault-proxy links file)
TARGET_FILES = {"reference": ("reference.yml", "proxies.json"), "small": ("small.yml", "small.json")}


def services(compose: Path = COMPOSE) -> dict:
    return yaml.safe_load(compose.read_text())["services"]


@pytest.mark.parametrize("target", sorted(TARGET_FILES))
def test_every_node_talks_through_its_own_fault_proxy_links(target: str) -> None:
    compose_file, links_file = TARGET_FILES[target]
    model = load_target(TARGETS_DIR / f"{target}.yaml").model("full")
    svcs = services(ROOT / "compose" / compose_file)
    assert links_module.render(model) == (ROOT / "compose/config/faultproxy" / links_file).read_text()
    for name in [*model.replicas("sequencer"), *(r for reps in model.pairs.values() for r in reps)]:
        env = svcs[name]["environment"]
        db = model.link(f"{name}-db")
        assert f"@faultproxy:{db.listen_port}/" in env["DB_DSN"], name
        db_name, _, query = env["DB_DSN"].rsplit("/", 1)[1].partition("?")
        assert db_name == model.database(name), name
        # PostgreSQL sees every session of the replica under its name (the partition fault and the PostgreSQL
        # sampler, single-writer evidence from outside the nodes, find them by it)
        assert query == f"application_name={name}", name
        seq_links = model.links_of(name, "sequencer")
        expected = ",".join(f"faultproxy:{lk.listen_port}" for lk in seq_links)
        assert env.get("SEQUENCER_ENDPOINTS", "") == expected, name
        assert env["NODE_REPLICA"] == name and env["DB_STARTUP"] == "wait"


@pytest.mark.parametrize("compose_file", sorted(f for f, _ in TARGET_FILES.values()))
def test_conventions(compose_file: str) -> None:
    for name, svc in services(ROOT / "compose" / compose_file).items():
        if name == "faultproxy-init":  # small.yml only re-points faultproxy.yml's one-shot at its links file
            assert set(svc) == {"volumes"}
            continue
        assert svc["pull_policy"] == "never" and svc["init"] is True and svc["stop_grace_period"] == "2s", name
        assert svc["labels"] == {"ha-chaos.run": "${HA_CHAOS_RUN_ID}"}, name
        assert svc["cap_add"] == ["NET_ADMIN"], name
        assert svc["depends_on"] == {"faultproxy-init": {"condition": "service_completed_successfully"}}, name
        assert all(str(p).startswith("127.0.0.1:") for p in svc["ports"]), name
        test = " ".join(svc["healthcheck"]["test"])
        assert ("/health/live" in test) or (name == "ledger-lb" and "/healthz" in test), name


def test_ledger_lb_routes_by_readiness() -> None:
    cfg = (COMPOSE.parent / "config" / "ledger-lb" / "haproxy.cfg").read_text()
    assert cfg.count("http-check send meth GET uri /health") == 2
    assert "inter 1s rise 1 fall 1" in cfg and "init-addr libc,none" in cfg and "127.0.0.11:53" in cfg
    for rep in ("p1a", "p1b", "p2a", "p2b"):
        assert f"server {rep} {rep}:7500 check port 8080" in cfg


def test_ledger_lb_never_replays_a_request_a_replica_may_have_processed() -> None:
    """Seen live (repeated-kills, correct nodes, invariant 3): the active p1 replica was killed while it handled a
    submit; it had recorded and sent the request but died before answering, and ledger-lb (``retry-on
    empty-response``) replayed the POST on the new active. The request was executed (OK) and the replay, a second
    submission with the same submission id, was answered DUPLICATE_COMMAND: two completions for one acknowledged
    submission. A load balancer may retry only what never reached a server (``conn-failure``); a request that
    did must come back to the client as a failure it retries itself (with a new submission id: dedup decides)."""
    cfg = (COMPOSE.parent / "config" / "ledger-lb" / "haproxy.cfg").read_text()
    retry_on = [ln.split()[1:] for ln in cfg.splitlines() if ln.strip().startswith("retry-on")]
    replaying = {"empty-response", "response-timeout", "junk-response", "all-retryable-errors",
                 "0rtt-rejected"} | {str(c) for c in range(500, 600)}
    assert all(not (set(conds) & replaying) for conds in retry_on), retry_on
