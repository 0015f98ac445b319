"""``ha-chaos images build``: every image the topology runs, built locally.

Why local builds: no container registry is reachable on these machines, not even for ``debian``. The base image is
made by debootstrap from the host's own apt mirror and ``docker import``-ed under the project's namespace (so it can
never shadow a real upstream image). With ``--upstream`` the very same Dockerfiles build ``FROM
debian:bookworm-slim`` instead (a build arg), for users who can pull.

Caching: the base image is built once per machine; the Dockerfiles order their layers so that apt and pip layers
are reused, and only the final ``COPY harness/<package>`` layer changes when that container's code changes. Each
project image copies only the package its container runs (``harness/sut`` for the node image, ``harness/faultproxy``
for the fault proxy; ``.dockerignore`` sends nothing else of the project), so host code - workload, checkers, report,
benchmarks - is not in any image and editing it leaves the image ids (a run's fingerprint in ``topology.json``)
unchanged: Docker's builder keys a ``COPY`` layer's cache on a checksum of the copied files' contents and modes (not
their mtimes), a cache hit reuses the earlier image, and ``content_digest`` computes the same dependence here.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.platform.shell import ok, run

log = logging.getLogger("ha-chaos.images")

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO_ROOT / "compose" / "images"
PREFIX = os.environ.get("HA_CHAOS_IMAGE_PREFIX", "ha-chaos")
BASE_IMAGE = f"{PREFIX}/debian:bookworm"
UPSTREAM_BASE = "debian:bookworm-slim"


@dataclass(frozen=True)
class ImageSpec:
    name: str
    #: build context relative to the repo root (images that copy project code use the repo root)
    context: str

    @property
    def tag(self) -> str:
        return f"{PREFIX}/{self.name}:latest"

    @property
    def dockerfile(self) -> Path:
        return IMAGES_DIR / self.name / "Dockerfile"


#: Build order matters only for cache reuse: node and faultproxy share their first layers.
IMAGES: tuple[ImageSpec, ...] = (
    ImageSpec("etcd", "compose/images/etcd"),
    ImageSpec("postgres", "compose/images/postgres"),
    ImageSpec("haproxy", "compose/images/haproxy"),
    ImageSpec("node", "."),
    ImageSpec("faultproxy", "."),
)


def image_exists(tag: str) -> bool:
    return ok(["docker", "image", "inspect", tag], timeout=30)


def missing_images() -> list[str]:
    return [spec.tag for spec in IMAGES if not image_exists(spec.tag)]


def host_apt_text() -> str:
    texts = []
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if p.is_file():
            texts.append(p.read_text(errors="replace"))
    return "\n".join(texts)


def apt_sources(text: str) -> tuple[str, str | None]:
    """(debian mirror URI, security URI) from apt configuration text (deb822 or one-line format)."""
    mirror = security = None
    # deb822 stanzas: URIs + Suites
    for stanza in re.split(r"\n\s*\n", text):
        uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
        suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
        if uris and suites:
            if "security" in suites.group(1):
                security = security or uris.group(1)
            elif "bookworm" in suites.group(1):
                mirror = mirror or uris.group(1)
    # one-line format
    for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
        uri, suite = m.groups()
        if "security" in suite:
            security = security or uri
        elif suite.startswith("bookworm"):
            mirror = mirror or uri
    if not mirror:
        raise HarnessError("no bookworm mirror found in the host's apt sources",
                           "add a Debian mirror to /etc/apt/sources.list(.d) or build with --upstream")
    return mirror, security


ROOTFS_PREFIX = "ha-chaos-rootfs-"


def sweep_rootfs(tmpdir: str | None = None) -> list[Path]:
    """Remove the debootstrap trees of builds whose process is gone (a SIGKILLed build leaves ~130 MB)."""
    removed = []
    for d in Path(tmpdir or tempfile.gettempdir()).glob(f"{ROOTFS_PREFIX}*"):
        pid = d.name[len(ROOTFS_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and Path(f"/proc/{pid}").exists():
            continue  # a build that is still running (or, rarely, a reused pid: swept next time)
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def build_base_image(force: bool = False) -> str:
    """debootstrap a minimal bookworm from the host's mirror and import it as ``<prefix>/debian:bookworm``."""
    if not force and image_exists(BASE_IMAGE):
        return f"{BASE_IMAGE} present"
    if shutil.which("debootstrap") is None:
        raise HarnessError("debootstrap is missing", "run `ha-chaos setup` or apt-get install debootstrap")
    mirror, security = apt_sources(host_apt_text())
    t0 = time.monotonic()
    sweep_rootfs()
    with tempfile.TemporaryDirectory(prefix=f"{ROOTFS_PREFIX}{os.getpid()}-") as tmp:
        root = Path(tmp) / "rootfs"
        run(["debootstrap", "--variant=minbase", "bookworm", str(root), mirror], timeout=900)
        lines = [f"deb {mirror} bookworm main", f"deb {mirror} bookworm-updates main"]
        if security:
            lines.append(f"deb {security} bookworm-security main")
        (root / "etc/apt/sources.list").write_text("\n".join(lines) + "\n")
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        (root / "etc/apt/apt.conf.d/90ha-chaos").write_text(
            'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n')
        for p in (root / "var/lib/apt/lists").glob("*"):
            if p.is_file():
                p.unlink()
        for p in (root / "var/cache/apt/archives").glob("*.deb"):
            p.unlink()
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(["docker", "import", "-c", "CMD [\"/bin/bash\"]", "-", BASE_IMAGE],
                             stdin=tar.stdout, capture_output=True, text=True, timeout=600)
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise HarnessError(f"docker import of the base image failed: {imp.stderr.strip()[:300]}")
    return f"{BASE_IMAGE} built from {mirror} in {time.monotonic() - t0:.1f} s"


NODE_DIR = IMAGES_DIR / "node"
WHEELS_DIR = NODE_DIR / "wheels"
POSTGRES_DIR = IMAGES_DIR / "postgres"
_PLATFORM_ARGS = ["--python-version", "3.11", "--implementation", "cp", "--platform", "manylinux2014_x86_64",
                  "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "any"]


def prepare_wheels(image_dir: Path = NODE_DIR) -> str:
    """Download an image's Python wheels on the host, into its build context (``<image_dir>/wheels``).

    Why: build containers may not trust the host's TLS setup towards PyPI (seen here: a proxy CA only the host
    knows), while the host's pip works. The image then installs with ``--no-index``. Cached by the hash of
    requirements.txt, so a warm build downloads nothing.

    The node image's requirements name only top-level packages: pip resolves them to binary wheels for the image's
    Python (3.11, x86_64). The postgres image's requirements pin every package (Patroni and its dependencies), two
    of which exist only as source archives: they are downloaded without resolution and the pure-Python archives are
    built into wheels on the host.
    """
    import hashlib

    req = image_dir / "requirements.txt"
    wheels = image_dir / "wheels"
    name = image_dir.name
    digest = hashlib.sha256(req.read_bytes()).hexdigest()
    stamp = wheels / ".requirements.sha256"
    if stamp.exists() and stamp.read_text() == digest:
        return f"{name} wheels cached"
    wheels.mkdir(parents=True, exist_ok=True)
    for old in [*wheels.glob("*.whl"), *wheels.glob("*.tar.gz"), *wheels.glob("*.zip")]:
        old.unlink()
    pip = ["python3", "-m", "pip"]
    if image_dir == NODE_DIR:
        run([*pip, "download", "-q", "--only-binary", ":all:", *_PLATFORM_ARGS, "-d", str(wheels), "-r", str(req)],
            timeout=600)
    else:
        run([*pip, "download", "-q", "--no-deps", *_PLATFORM_ARGS, "-d", str(wheels), "-r", str(req)], timeout=600)
        for sdist in [*wheels.glob("*.tar.gz"), *wheels.glob("*.zip")]:
            run([*pip, "wheel", "-q", "--no-deps", "-w", str(wheels), str(sdist)], timeout=600)
            sdist.unlink()
    stamp.write_text(digest)
    return f"{name} wheels downloaded"


def copy_sources(dockerfile: Path) -> list[str]:
    """The context paths a Dockerfile's ``COPY``/``ADD`` instructions take (``--from`` stages left out), in order.

    Why a small parser of our own: only the project's own Dockerfiles are read, whose COPY lines are single-line and
    unquoted; a Dockerfile parser library would be a dependency for four lines of reading.
    """
    sources: list[str] = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]) or len(args) < 2:
            continue
        sources += [a.rstrip("/") for a in args[:-1]]
    return sources


def copied_files(spec: ImageSpec, root: Path | None = None) -> list[Path]:
    """Every file of the build context an image's Dockerfile copies, relative to the context (sorted; caches left
    out as ``.dockerignore`` leaves them out). Host code must never appear here (tests/unit/test_layering.py)."""
    root = root or REPO_ROOT
    context = root / spec.context
    dockerfile = root / spec.dockerfile.relative_to(REPO_ROOT)
    files: set[Path] = set()
    for src in copy_sources(dockerfile):
        path = context / src
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files.update(p.relative_to(context) for p in candidates
                     if "__pycache__" not in p.parts and p.suffix != ".pyc")
    return sorted(files)


def content_digest(spec: ImageSpec, root: Path | None = None) -> str:
    """sha256 over what the image copies (paths, executable bits, contents): what its COPY layers' cache keys depend
    on. Same digest (and same base and Dockerfile) -> Docker reuses the cached layers -> the same image id."""
    import hashlib

    root = root or REPO_ROOT
    context = root / spec.context
    digest = hashlib.sha256((root / spec.dockerfile.relative_to(REPO_ROOT)).read_bytes())
    for rel in copied_files(spec, root):
        path = context / rel
        digest.update(f"\0{rel.as_posix()}\0{path.stat().st_mode & 0o111:o}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build_image(spec: ImageSpec, *, base: str) -> str:
    if not spec.dockerfile.exists():
        raise HarnessError(f"{spec.dockerfile} does not exist")
    t0 = time.monotonic()
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    cmd = ["docker", "build", "--network", "host", "-q", "-f", str(spec.dockerfile),
           "--build-arg", f"BASE={base}", "-t", spec.tag, str(REPO_ROOT / spec.context)]
    run(cmd, timeout=1200, env=env, cwd=str(REPO_ROOT))
    # the content digest names what went in, so two builds can be compared without inspecting the image
    return f"{spec.tag} built in {time.monotonic() - t0:.1f} s (content {content_digest(spec)[:12]})"


def build_images(*, upstream: bool = False, only: list[str] | None = None) -> list[str]:
    """Build (or refresh from cache) every project image; returns one line per image with its time."""
    done: list[str] = []
    t0 = time.monotonic()
    if upstream:
        base = UPSTREAM_BASE
    else:
        done.append(build_base_image())
        base = BASE_IMAGE
    for spec in IMAGES:
        if only and spec.name not in only:
            continue
        if spec.context == ".":
            done.append(prepare_wheels(NODE_DIR))
        elif spec.name == "postgres":
            done.append(prepare_wheels(POSTGRES_DIR))
        done.append(build_image(spec, base=base))
    done.append(f"images ready in {time.monotonic() - t0:.1f} s")
    return done
