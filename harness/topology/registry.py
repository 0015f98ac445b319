"""Which runs are alive: a small registry of run ids with their owner process, and the label sweep.

Why: testcontainers' Ryuk reaper can't be pulled here, so the harness reaps by itself. Every Docker object of a
run carries ``ha-chaos.run=<run id>``. A run is *alive* while its owner process lives (pid + start time, so a
reused pid doesn't count) or while it is *detached* (``ha-chaos up`` leaves it to the user until ``down``). On each
start, everything labelled with a run that is not alive is removed: that is how what a SIGKILL left is swept.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import RUN_LABEL
from harness.platform.setup import CACHE_DIR, docker_client

log = logging.getLogger("ha-chaos.registry")
REGISTRY_DIR = CACHE_DIR / "runs"


def new_run_id() -> str:
    return f"hc-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def _proc_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@dataclass
class RunEntry:
    run_id: str
    pid: int
    pid_start: str | None
    profile: str
    detached: bool = False
    created: float = 0.0
    env_file: str = ""

    def alive(self) -> bool:
        return self.detached or (self.pid_start is not None and _proc_start(self.pid) == self.pid_start)


def register(run_id: str, profile: str, env_file: str, *, detached: bool = False) -> RunEntry:
    REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
    entry = RunEntry(run_id, os.getpid(), _proc_start(os.getpid()), profile, detached, time.time(), env_file)
    (REGISTRY_DIR / f"{run_id}.json").write_text(json.dumps(asdict(entry)))
    return entry


def set_detached(run_id: str, detached: bool) -> None:
    entry = lookup(run_id)
    if entry:
        entry.detached = detached
        (REGISTRY_DIR / f"{run_id}.json").write_text(json.dumps(asdict(entry)))


ENV_DIR = CACHE_DIR / "env"


def unregister(run_id: str) -> None:
    """Forget the run, and its compose env file (which a swept dead run would otherwise leave behind)."""
    entry = lookup(run_id)
    if entry and entry.env_file and Path(entry.env_file).parent == ENV_DIR:
        Path(entry.env_file).unlink(missing_ok=True)
    (REGISTRY_DIR / f"{run_id}.json").unlink(missing_ok=True)


def lookup(run_id: str) -> RunEntry | None:
    p = REGISTRY_DIR / f"{run_id}.json"
    try:
        return RunEntry(**json.loads(p.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def entries() -> list[RunEntry]:
    out = []
    for p in sorted(REGISTRY_DIR.glob("*.json")) if REGISTRY_DIR.exists() else []:
        e = lookup(p.stem)
        if e:
            out.append(e)
    return out


def labelled_runs() -> set[str]:
    """Run ids of every container, network and volume carrying the run label."""
    client = docker_client()
    runs: set[str] = set()
    flt = {"label": RUN_LABEL}
    for c in client.containers.list(all=True, filters=flt, ignore_removed=True):
        runs.add(c.labels.get(RUN_LABEL, ""))
    for n in client.networks.list(filters=flt):
        runs.add((n.attrs.get("Labels") or {}).get(RUN_LABEL, ""))
    for v in client.volumes.list(filters=flt):
        runs.add((v.attrs.get("Labels") or {}).get(RUN_LABEL, ""))
    runs.discard("")
    return runs


def port_owners() -> dict[int, str]:
    """Host port -> run id, for every port a running container of an ha-chaos run publishes."""
    out: dict[int, str] = {}
    for c in docker_client().containers.list(filters={"label": RUN_LABEL}, ignore_removed=True):
        for bindings in ((c.attrs.get("NetworkSettings") or {}).get("Ports") or {}).values():
            for b in bindings or []:
                if str(b.get("HostPort", "")).isdigit():
                    out[int(b["HostPort"])] = c.labels.get(RUN_LABEL, "")
    return out


def remove_run_objects(run_id: str) -> dict[str, int]:
    """Force-remove every container, network and volume labelled with ``run_id``; returns counts."""
    from docker.errors import APIError, NotFound

    client = docker_client()
    flt = {"label": f"{RUN_LABEL}={run_id}"}
    counts = {"containers": 0, "networks": 0, "volumes": 0}
    for c in client.containers.list(all=True, filters=flt, ignore_removed=True):
        try:
            c.remove(force=True, v=True)
            counts["containers"] += 1
        except NotFound:
            pass
    for n in client.networks.list(filters=flt):
        try:
            n.remove()
            counts["networks"] += 1
        except (NotFound, APIError) as exc:
            log.warning("network %s not removed: %s", n.name, exc)
    for v in client.volumes.list(filters=flt):
        try:
            v.remove(force=True)
            counts["volumes"] += 1
        except (NotFound, APIError) as exc:
            log.warning("volume %s not removed: %s", v.name, exc)
    return counts


def sweep_dead(*, include_detached: bool = False, keep: set[str] | None = None) -> list[str]:
    """Remove the objects of every labelled run that is not alive. Returns the swept run ids."""
    keep = keep or set()
    swept = []
    for run_id in sorted(labelled_runs()):
        if run_id in keep:
            continue
        entry = lookup(run_id)
        if entry and entry.alive() and not (include_detached and entry.detached):
            continue
        remove_run_objects(run_id)
        unregister(run_id)
        swept.append(run_id)
    for entry in entries():  # registry entries whose objects are already gone
        if entry.run_id not in keep and not entry.alive():
            unregister(entry.run_id)
    return swept
