"""``Topology``: the reference topology on docker compose, through testcontainers' ``DockerCompose``.

One run = one compose project named by the run id, one env file (run id, ports, bug switches, seed), and the
label ``ha-chaos.run=<run id>`` on every object. ``start()`` sweeps dead runs first, checks images and ports,
runs ``compose up -d`` and waits for health with a deadline; on timeout the error names every unhealthy service
with its last log lines. ``stop()`` runs ``compose down -v`` and then removes by label whatever is left.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docker.errors import NotFound
from docker.models.containers import Container
from testcontainers.compose import DockerCompose

from harness import RUN_LABEL
from harness.errors import HarnessError
from harness.platform import images, ports
from harness.platform.setup import compose_v2_version, docker_client
from harness.topology import registry, signals
from harness.topology.model import TopologyModel
from harness.topology.target import REFERENCE_TARGET, Target, compose_paths, load_target, reference_target

if TYPE_CHECKING:
    from harness.topology.live import LiveState

log = logging.getLogger("ha-chaos.topology")

COMPOSE_DIR = images.REPO_ROOT / "compose"
#: the reference target's compose files per profile (targets/reference.yaml; another target names its own)
PROFILE_FILES: dict[str, list[str]] = dict(reference_target().compose)
#: the fixed host ports (compose variables, see harness.platform.ports) each profile publishes
PROFILE_PORTS: dict[str, tuple[str, ...]] = {
    "postgres": ("HA_CHAOS_PORT_PG",),
    "faultproxy": ("HA_CHAOS_PORT_PG", "HA_CHAOS_PORT_FAULTPROXY"),
    "full": tuple(ports.FIXED_PORTS),
}
#: the project images (harness.platform.images.IMAGES names) each profile runs; faultproxy-init uses the node image
PROFILE_IMAGES: dict[str, tuple[str, ...]] = {
    "postgres": ("etcd", "postgres", "haproxy"),
    "faultproxy": ("etcd", "postgres", "haproxy", "faultproxy", "node"),
    "full": tuple(spec.name for spec in images.IMAGES),
}
#: a compose command that takes longer hangs (a wedged daemon): give up with an error instead of waiting forever
COMPOSE_TIMEOUT_S = 300
#: services that run once and exit 0 (not "healthy", but "exited 0")
ONE_SHOT = {"faultproxy-init"}


#: topologies this process started and still owns (not detached), by run id: torn down on SIGTERM and at exit
_OWNED: dict[str, Topology] = {}
_SIGNALS_CHANGED: list[Any] = []


def _own(topo: Topology) -> None:
    """While this process owns a topology, SIGTERM/SIGHUP unwind (``Terminated``) instead of killing it outright,
    so that ``with``/``finally``/fixture teardowns run: pytest, a script. Handlers someone set are kept."""
    if not _OWNED:
        _SIGNALS_CHANGED[:] = signals.install_if_default()
    _OWNED[topo.run_id] = topo


def _disown(topo: Topology) -> None:
    if _OWNED.pop(topo.run_id, None) is not None and not _OWNED:
        signals.restore_default(_SIGNALS_CHANGED)
        _SIGNALS_CHANGED.clear()


@atexit.register
def _stop_owned_at_exit() -> None:
    """A topology still owned when the interpreter exits (no ``stop()``: an uncaught exception, a script that never
    stopped it) is removed; one marked detached meanwhile (``--keep``) is left to ``ha-chaos down``."""
    for topo in list(_OWNED.values()):
        entry = registry.lookup(topo.run_id)
        if entry is not None and entry.detached:
            continue
        try:
            topo.stop()
        except Exception as exc:  # at exit: say it, the next start's sweep removes what is left
            log.warning("teardown of %s at exit failed: %s", topo.run_id, exc)


class _ProjectCompose(DockerCompose):
    """DockerCompose with a project name (-p) - testcontainers passes none, so parallel runs would collide."""

    project: str = ""
    #: the run's settings; they take precedence over the process environment (compose would let a variable set
    #: in the shell, e.g. HA_CHAOS_SUT_BUGS, override the env file's value)
    run_env: dict[str, str] = {}

    @cached_property
    def compose_command_property(self) -> list[str]:
        cmd = list(super().compose_command_property)
        return [*cmd[:2], "-p", self.project, *cmd[2:]]

    def _run_command(self, cmd: str | list[str], context: str | None = None) -> subprocess.CompletedProcess[bytes]:
        # testcontainers' own version logs compose's whole stdout/stderr at ERROR level on failure, which the CLI
        # would print ahead of its one-line error; the caller turns the failure into that line itself.
        try:
            return subprocess.run(cmd, capture_output=True, check=True, cwd=context or str(self.context),
                                  timeout=COMPOSE_TIMEOUT_S, env={**os.environ, **self.run_env})
        except subprocess.TimeoutExpired:
            raise HarnessError(f"`docker compose` ({' '.join(cmd[-3:])}) did not return within "
                               f"{COMPOSE_TIMEOUT_S} s for run {self.project}", "run `ha-chaos doctor`") from None


@dataclass
class ServiceStatus:
    service: str
    state: str
    health: str
    role: str | None = None
    ports: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"service": self.service, "state": self.state, "health": self.health, "role": self.role,
                "ports": self.ports}


class Topology:
    """A running (or startable) reference topology. Use as a context manager for guaranteed teardown."""

    def __init__(self, profile: str = "full", *, run_id: str | None = None, port_base: int = 0,
                 bugs: str = "", seed: int = 0, synchronous_mode: bool | None = None,
                 extra_env: dict[str, str] | None = None, detached: bool = False,
                 target: str | Path | None = None) -> None:
        #: the deployment this topology runs, described as data (targets/reference.yaml unless told otherwise)
        self.target_path = Path(target).resolve() if target else REFERENCE_TARGET
        self.target: Target = load_target(self.target_path) if target else reference_target()
        if profile not in self.target.compose:
            raise HarnessError(f"unknown profile {profile!r}", f"use one of {', '.join(self.target.compose)}")
        self.profile = profile
        self.compose_dir, self.compose_files = compose_paths(self.target, self.target_path, profile)
        if synchronous_mode is None:
            # Synchronous replication, as production runs PostgreSQL HA: no acknowledged commit is lost on a
            # failover. Asynchronous replication (Patroni's own default) is the known-unsafe option: a commit
            # acknowledged by a primary that is then killed or isolated can be missing on the promoted replica
            # (fault_plans/replication-stalled-primary-killed.yaml shows it on purpose).
            synchronous_mode = self.target.replication == "synchronous"
        self.synchronous_mode = synchronous_mode
        self.run_id = run_id or registry.new_run_id()
        ports.validate_base(port_base)
        self.port_base = port_base
        self.model: TopologyModel = self.target.model(profile)
        self.detached = detached
        self.env = {
            "HA_CHAOS_RUN_ID": self.run_id,
            "HA_CHAOS_SUT_BUGS": bugs,
            "HA_CHAOS_SEED": str(seed),
            "HA_CHAOS_PG_SYNCHRONOUS_MODE": "true" if synchronous_mode else "false",
            "HA_CHAOS_IMAGE_PREFIX": images.PREFIX,
            "HA_CHAOS_TARGET": str(self.target_path),
            **ports.port_env(port_base),
            **(extra_env or {}),
        }
        self.env_file = registry.ENV_DIR / f"{self.run_id}.env"
        self._compose = _ProjectCompose(context=str(self.compose_dir), compose_file_name=self.compose_files,
                                        wait=False, env_file=str(self.env_file))
        self._compose.project = self.run_id
        self._compose.run_env = self.env
        self.started = False

    @property
    def replication(self) -> str:
        """The PostgreSQL replication mode this topology was started with: "synchronous" or "asynchronous"."""
        return replication_name(self.env.get("HA_CHAOS_PG_SYNCHRONOUS_MODE", "true") == "true")

    # --- lifecycle ------------------------------------------------------------------------------------
    @classmethod
    def attach(cls, run_id: str) -> Topology:
        """A handle on a run started elsewhere (``ha-chaos up``), from its registry entry."""
        entry = registry.lookup(run_id)
        if entry is None:
            known = [e.run_id for e in registry.entries()]
            raise HarnessError(f"no run {run_id!r} is known here", f"known runs: {', '.join(known) or 'none'}")
        saved: dict[str, str] = {}
        try:  # the settings the run was started with, not this process's defaults
            for line in Path(entry.env_file).read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    saved[key] = value
        except OSError:
            pass
        target = saved.get("HA_CHAOS_TARGET")
        if target and (Path(target).resolve() == REFERENCE_TARGET or not Path(target).is_file()):
            target = None  # a target file gone since: `status`/`down` still work on what the registry knows
        topo = cls(entry.profile, run_id=run_id, target=target)
        topo.env_file = Path(entry.env_file)
        topo._compose.env_file = [entry.env_file]
        topo.env.update(saved)
        topo.started = True
        return topo

    def required_images(self) -> list[str]:
        """The image tags this profile's compose files run, as compose itself resolves them (``config --images``,
        with the environment ``compose up`` will see); the profile's project images when compose cannot tell."""
        files = [arg for f in self.compose_files for arg in ("-f", f)]
        try:
            proc = subprocess.run(["docker", "compose", *files, "config", "--images"], capture_output=True,
                                  text=True, timeout=30, cwd=self.compose_dir, env={**os.environ, **self.env})
            if proc.returncode == 0 and proc.stdout.split():
                return sorted(set(proc.stdout.split()))
        except (OSError, subprocess.TimeoutExpired):
            pass
        return self.project_images()

    def project_images(self) -> list[str]:
        """The project images this profile runs (``harness.platform.images`` tags)."""
        wanted = PROFILE_IMAGES.get(self.profile, PROFILE_IMAGES["full"])
        return [spec.tag for spec in images.IMAGES if spec.name in wanted]

    def _preflight(self) -> None:
        docker_client()
        if not compose_v2_version():
            raise HarnessError("the compose v2 plugin is missing", "run `ha-chaos setup`")
        missing_files = [f for f in self.compose_files if not (self.compose_dir / f).exists()]
        if missing_files:
            raise HarnessError(f"compose file missing: {', '.join(missing_files)}")
        missing = [tag for tag in self.required_images() if not images.image_exists(tag)]
        if missing:
            ours = {spec.tag for spec in images.IMAGES} | {f"ha-chaos/{spec.name}:latest" for spec in images.IMAGES}
            foreign = [t for t in missing if t not in ours]  # e.g. HA_CHAOS_FAULTPROXY_IMAGE naming upstream's
            fix = "run `ha-chaos images build`" if not foreign else (
                f"`docker pull {foreign[0]}` where a registry is reachable (compose never pulls: pull_policy never)"
                + ("; run `ha-chaos images build` for the others" if len(foreign) < len(missing) else ""))
            raise HarnessError(f"image missing: {', '.join(missing)}", fix)
        try:
            ports.check_ports(self.port_base, PROFILE_PORTS.get(self.profile, ()))
        except HarnessError as exc:
            busy = {p for p, _ in ports.busy_ports(self.port_base, PROFILE_PORTS.get(self.profile, ()))}
            holders = sorted({run for p, run in registry.port_owners().items() if p in busy and run})
            if holders:  # the usual case: an earlier `ha-chaos up` still runs on the same port base
                exc.fix = (f"the ha-chaos run {', '.join(holders)} holds it: `ha-chaos down --run {holders[0]}`, "
                           f"or use another --port-base (0 = ephemeral ports)")
            raise

    def start(self, timeout: float = 180) -> Topology:
        swept = registry.sweep_dead(keep={self.run_id})
        if swept:
            log.warning("swept leftovers of dead runs: %s", ", ".join(swept))
        self._preflight()
        self.env_file.parent.mkdir(parents=True, exist_ok=True)
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in self.env.items()))
        registry.register(self.run_id, self.profile, str(self.env_file), detached=self.detached)
        self.started = True
        if not self.detached:
            _own(self)
        try:
            try:
                self._compose.start()
            except subprocess.CalledProcessError as exc:
                err = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
                raise HarnessError(f"`docker compose up` failed for run {self.run_id}: {compose_error(err)}",
                                   _fix_for(err)) from None
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout: float = 180, services: list[str] | None = None) -> None:
        deadline = time.monotonic() + timeout
        pending: dict[str, str] = {}
        while time.monotonic() < deadline:
            pending = {}
            states = self._container_states()
            expected = set(services or self.service_names())
            for svc in expected:
                st = states.get(svc)
                if st is None:
                    pending[svc] = "not created"
                elif svc in ONE_SHOT:
                    if st["state"] == "exited" and st["exit_code"] != 0:
                        raise HarnessError(f"{svc} exited with code {st['exit_code']}: "
                                           + " | ".join(self.log_tail(svc, 4)))
                    if st["state"] != "exited":
                        pending[svc] = st["state"]
                elif st["state"] != "running" or st["health"] not in ("healthy", "none"):
                    pending[svc] = f"{st['state']}/{st['health']}"
            if not pending:
                return
            time.sleep(0.5)
        details = "; ".join(f"{svc} [{why}]: " + " | ".join(self.log_tail(svc, 3)) for svc, why in pending.items())
        raise HarnessError(f"topology {self.run_id} not healthy after {timeout:.0f} s: {details}",
                           "see `docker logs` of those services; `ha-chaos doctor` checks the machine")

    def stop(self) -> dict[str, int]:
        """Tear down; always ends with a label sweep of this run so nothing leaks even if compose fails."""
        if not self.started:
            return {}
        try:
            self._compose._run_command([*self._compose.compose_command_property, "down", "-v",
                                        "--remove-orphans", "-t", "2"])
        except (subprocess.CalledProcessError, OSError, HarnessError) as exc:
            log.warning("compose down failed for %s: %s", self.run_id, exc)
        counts = registry.remove_run_objects(self.run_id)
        registry.unregister(self.run_id)
        self.env_file.unlink(missing_ok=True)
        self.started = False
        _disown(self)
        return counts

    def __enter__(self) -> Topology:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- queries --------------------------------------------------------------------------------------
    def service_names(self) -> list[str]:
        names = [s.name for s in self.model.services]
        if self.profile in ("faultproxy", "full"):
            names += ["faultproxy", "faultproxy-init"] if self.profile == "faultproxy" else ["faultproxy-init"]
        return list(dict.fromkeys(names))

    def containers(self) -> dict[str, Container]:
        client = docker_client()
        out = {}
        for c in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={self.run_id}"},
                                            ignore_removed=True):
            svc = c.labels.get("com.docker.compose.service")
            if svc:
                out[svc] = c
        return out

    def container(self, service: str) -> Container:
        c = self.containers().get(service)
        if c is None:
            raise HarnessError(f"service {service!r} has no container in run {self.run_id}")
        return c

    def _container_states(self) -> dict[str, dict[str, Any]]:
        out = {}
        for svc, c in self.containers().items():
            st = c.attrs.get("State", {})
            out[svc] = {"state": st.get("Status", "?"), "exit_code": st.get("ExitCode"),
                        "health": (st.get("Health") or {}).get("Status", "none"), "ports": _published(c)}
        return out

    def host_port(self, service: str, port: int) -> int:
        c = self.container(service)
        c.reload()
        bindings = (c.attrs["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp") or []
        for b in bindings:
            if b.get("HostIp") in ("127.0.0.1", "0.0.0.0", ""):
                return int(b["HostPort"])
        raise HarnessError(f"{service}:{port} is not published on the host")

    def url(self, service: str, port: int) -> str:
        return f"http://127.0.0.1:{self.host_port(service, port)}"

    def log_tail(self, service: str, lines: int = 20) -> list[str]:
        try:
            raw = self.container(service).logs(tail=lines).decode(errors="replace")
        except (HarnessError, NotFound):
            return ["<no container>"]
        return [ln[:300] for ln in raw.strip().splitlines()] or ["<no output>"]

    def live(self) -> LiveState:
        """The one reader of this topology's live state (harness/topology/live.py)."""
        from harness.topology.live import LiveState

        return LiveState(self)

    def pg_roles(self) -> dict[str, str]:
        """Patroni's view: service -> role (primary, sync_standby, replica, ...), by the one leader rule."""
        return self.live().pg_roles()

    def primary(self) -> str | None:
        return self.live().pg_primary()

    def node_role(self, service: str) -> str | None:
        return self.live().role_of(service)

    def status(self) -> list[ServiceStatus]:
        states = self._container_states()
        live = self.live()
        roles = live.pg_roles() if any(s in states for s in self.model.replicas("postgres")) else {}
        out = []
        for svc in self.service_names():
            st = states.get(svc, {"state": "absent", "health": "-"})
            role = roles.get(svc)
            if role is None and svc in states and self.model_role(svc) in ("participant", "mediator", "sequencer"):
                role = live.role_of(svc)
            out.append(ServiceStatus(svc, st["state"], st["health"], role, st.get("ports", {})))
        return out

    def model_role(self, service: str) -> str | None:
        try:
            return self.model.service(service).role
        except KeyError:
            return None


def replication_name(synchronous: bool) -> str:
    return "synchronous" if synchronous else "asynchronous"


def _published(c: Container) -> dict[str, int]:
    """Container port -> host port on 127.0.0.1, e.g. {"5432": 18432}."""
    out = {}
    for cport, bindings in ((c.attrs.get("NetworkSettings") or {}).get("Ports") or {}).items():
        for b in bindings or []:
            if b.get("HostIp") in ("127.0.0.1", "0.0.0.0", "") and str(b.get("HostPort", "")).isdigit():
                out[cport.split("/")[0]] = int(b["HostPort"])
    return out


def compose_error(err_lines: list[str]) -> str:
    """The cause in compose's stderr: its last error line (compose also prints a progress line per container)."""
    lines = [ln.strip() for ln in err_lines if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    cause = (errors or lines or ["no output"])[-1]
    # "... on endpoint <project>-pg-lb-1 (<64 hex digits>): ..." -> drop the endpoint id
    return re.sub(r" \([0-9a-f]{64}\)", "", cause)[:400]


def _fix_for(err_lines: list[str]) -> str:
    text = " ".join(err_lines)
    if "port is already allocated" in text or "address already in use" in text:
        return "a published port is taken: free it or use another --port-base (0 = ephemeral ports)"
    if "No such image" in text or "pull access denied" in text:
        return "run `ha-chaos images build`"
    return "run `ha-chaos doctor`"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
