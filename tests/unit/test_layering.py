"""Layering (issue 13 item 5): container code apart from host code, and imports that run one way.

- ``harness/sut`` (node image) and ``harness/faultproxy`` (fault-proxy image) import nothing of the project but
  themselves, and each imports with *only its own directory* of the project on the path, as in its image;
  their third-party imports are exactly what the images install (compose/images/node/requirements.txt).
- Host layers: plans -> faults / workload -> topology -> client / history; checkers see only the history; the
  report sees only results (the checkers' result model) and the history; nothing below the front doors imports a
  front door.
- What an image copies is only its container package, so host edits leave its content digest (what Docker's COPY
  cache keys on, hence the image id) unchanged.

Imports are read with ``ast`` (every ``import``, at module level or inside a function, ``TYPE_CHECKING`` ones too).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.platform import images

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "harness"

#: front doors and orchestration: may import any layer, and no layer may import them
FRONT_DOORS = {"cli", "runner", "campaign", "campaign_cli", "pytest_plugin", "swarm", "coverage", "merge", "shard",
               "budget", "bench"}
#: host package -> the harness packages it may import ("" = ``harness`` itself: RUN_LABEL, __version__)
ALLOWED = {
    "history": {"errors"},
    "checkers": {"history"},
    "report": {"checkers", "history", "errors"},
    "topology": {"platform", "history", "errors", "", "yamlfile", "client"},
    "yamlfile": {"errors"},
    # the one client interface and its implementations: what every layer above uses to reach a node
    "client": {"errors"},
    "workload": {"topology", "history", "platform", "errors", "", "client"},
    # faults -> plans: the live injector implements the plan executor's protocol (harness.plans.injector) over the
    # plan schema's step types; a known back-edge (issue 13), left until the step model moves below the plans.
    "faults": {"topology", "history", "platform", "errors", "", "plans", "yamlfile", "client"},
    "plans": {"faults", "workload", "topology", "history", "platform", "errors", "", "yamlfile", "client"},
}
CONTAINER_PACKAGES = {"sut": "node", "faultproxy": "faultproxy"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file; relative imports resolved against its package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            # ``from harness import x``: x may be a package (``harness.campaign``) or a name (RUN_LABEL)
            out += [(node.lineno, f"{base}.{a.name}") if base == "harness" else (node.lineno, base)
                    for a in node.names]
    return out


def _harness_package(module: str) -> str | None:
    """``harness.topology.pg`` -> ``topology``; ``harness.RUN_LABEL`` -> ``""``; non-project -> None."""
    parts = module.split(".")
    if parts[0] != "harness":
        return None
    if len(parts) == 1:
        return ""
    name = parts[1]
    is_module = (HARNESS / name).is_dir() or (HARNESS / f"{name}.py").is_file()
    return name if is_module else ""


def _files(package: str) -> list[Path]:
    """The files of a package (a directory) or of a top-level module (``history`` is ``harness/history.py``)."""
    if (HARNESS / package).is_dir():
        return sorted((HARNESS / package).rglob("*.py"))
    return [HARNESS / f"{package}.py"]


def _violations(package: str, allowed: set[str]) -> list[str]:
    bad = []
    for f in _files(package):
        for line, mod in _imports(f):
            dep = _harness_package(mod)
            if dep is not None and dep != package and dep not in allowed:
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {mod}")
    return bad


@pytest.mark.parametrize("package", sorted(CONTAINER_PACKAGES))
def test_container_packages_import_only_themselves(package: str) -> None:
    assert _violations(package, set()) == []


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_host_layers_import_only_downwards(package: str) -> None:
    assert not FRONT_DOORS & ALLOWED[package]
    assert _violations(package, ALLOWED[package]) == []


def test_the_scanner_sees_what_it_must() -> None:
    """The rules above are only as good as the import reader: nested, aliased and ``from harness import`` forms."""
    assert ("harness.client.json_api" in {m for _, m in _imports(HARNESS / "runner.py")})
    assert _harness_package("harness.RUN_LABEL") == "" and _harness_package("harness.campaign") == "campaign"
    assert _violations("runner", set())  # a front door imports plenty: the scanner is not blind


def _third_party(package: str) -> set[str]:
    names = set()
    for f in _files(package):
        for _, mod in _imports(f):
            top = mod.split(".")[0]
            if top and top != "harness" and top != "__future__" and top not in sys.stdlib_module_names:
                names.add(top)
    return names


@pytest.mark.parametrize("package", sorted(CONTAINER_PACKAGES))
def test_container_third_party_imports_are_installed_in_the_image(package: str) -> None:
    reqs = (ROOT / "compose/images/node/requirements.txt").read_text().split()
    installed = {r.split("==")[0].lower() for r in reqs}
    import_names = {"pyyaml": "yaml"}
    provided = {import_names.get(r, r) for r in installed}
    assert _third_party(package) <= provided


def test_both_event_loop_modules_are_one_code() -> None:
    """Each container package carries its own copy (so each image copies one directory); they must not drift."""
    assert (HARNESS / "sut/common/evloop.py").read_bytes() == (HARNESS / "faultproxy/evloop.py").read_bytes()


# --- the container packages run with nothing else of the project ----------------------------------------------
IMPORT_ALL = textwrap.dedent("""
    import importlib, pkgutil, sys
    # the editable install's finder would fetch a missing module from the checkout: drop it, as the image has none
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path[:] = [sys.argv[1]] + [p for p in sys.path[1:] if "editable" not in p and p not in ("", {root!r})]
    pkg = importlib.import_module("harness." + sys.argv[2])
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
    for name, mod in sorted(sys.modules.items()):
        if name == "harness" or name.startswith("harness."):
            print(name, getattr(mod, "__file__", None))
""")


@pytest.mark.parametrize("package", sorted(CONTAINER_PACKAGES))
def test_every_container_module_imports_with_only_its_image_contents(package: str, tmp_path: Path) -> None:
    """Lay out /opt/ha-chaos as the image does (an empty harness/__init__.py, the COPY'd package) and import every
    module of the package there, with the checkout off the path; every harness module must come from the copy."""
    spec = next(s for s in images.IMAGES if s.name == CONTAINER_PACKAGES[package])
    (tmp_path / "harness").mkdir()
    (tmp_path / "harness/__init__.py").write_text("")
    for src in images.copy_sources(spec.dockerfile):
        if src.startswith("harness/"):
            shutil.copytree(ROOT / src, tmp_path / src, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", IMPORT_ALL.format(root=str(ROOT)), str(tmp_path), package],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert f"harness.{package}.__main__" in loaded
    outside = {name: f for name, f in loaded.items() if f != "None" and not f.startswith(str(tmp_path))}
    assert outside == {}


# --- what the images copy, and what that means for their ids --------------------------------------------------
PROJECT_IMAGES = [s for s in images.IMAGES if s.context == "."]


def test_project_images_copy_only_their_container_package() -> None:
    assert {s.name for s in PROJECT_IMAGES} == set(CONTAINER_PACKAGES.values())
    for package, name in CONTAINER_PACKAGES.items():
        spec = next(s for s in PROJECT_IMAGES if s.name == name)
        harness_files = {p.as_posix() for p in images.copied_files(spec) if p.parts[0] == "harness"}
        assert harness_files and all(p.startswith(f"harness/{package}/") for p in harness_files), harness_files
        assert {p for p in images.copy_sources(spec.dockerfile) if p.startswith("harness")} == {f"harness/{package}"}


def test_dockerignore_sends_only_the_container_packages() -> None:
    """The build context carries no host code at all (smaller, and nothing for a careless COPY to pick up)."""
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    included = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!harness")}
    copied = {p for s in PROJECT_IMAGES for p in images.copy_sources(s.dockerfile) if p.startswith("harness")}
    assert lines[0] == "*" and included == copied


def _fake_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(HARNESS, root / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    for spec in PROJECT_IMAGES:
        (root / spec.dockerfile.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(spec.dockerfile, root / spec.dockerfile.relative_to(ROOT))
    node = root / "compose/images/node"
    shutil.copy(ROOT / "compose/images/node/requirements.txt", node / "requirements.txt")
    (node / "wheels").mkdir(exist_ok=True)
    (node / "wheels/fake-1.0-py3-none-any.whl").write_bytes(b"wheel")
    return root


def _digests(root: Path) -> dict[str, str]:
    return {s.name: images.content_digest(s, root) for s in PROJECT_IMAGES}


def _touch(path: Path) -> None:
    path.write_text(path.read_text() + "\n# edited\n")


def test_host_code_edits_leave_every_image_digest_unchanged(tmp_path: Path) -> None:
    """Editing the report renderer, the workload client, a checker or a benchmark changes no image: their
    COPY layers are cache hits, so ``docker build`` returns the earlier image id."""
    root = _fake_repo(tmp_path)
    before = _digests(root)
    for host_file in ("report/html.py", "client/json_api.py", "checkers/roles.py", "bench/ledger.py", "__init__.py"):
        _touch(root / "harness" / host_file)
    os.utime(root / "harness/sut/__main__.py", (1, 1))  # an mtime alone (a checkout) is no change either
    assert _digests(root) == before


def test_container_code_edits_change_only_their_own_image(tmp_path: Path) -> None:
    root = _fake_repo(tmp_path)
    before = _digests(root)
    _touch(root / "harness/sut/common/db.py")
    after_sut = _digests(root)
    assert after_sut["node"] != before["node"] and after_sut["faultproxy"] == before["faultproxy"]
    _touch(root / "harness/faultproxy/proxy.py")
    after_fp = _digests(root)
    assert after_fp["faultproxy"] != after_sut["faultproxy"] and after_fp["node"] == after_sut["node"]
