"""``clock``: a node's wall clock jumps, or runs fast or slow, then is put right (Jepsen's clock nemesis).

What it finds: trust in clocks. The model assumes synchronised clocks (a sequencer's timestamps, its view of which
peers are offline), so within a tolerance a correct deployment must stay safe *and* live: timestamps never go back,
nothing is ordered by a clock that was stepped, a skewed node is at worst slower. Beyond it (a step larger than
the sequencers' offline threshold) a correct deployment must still stay safe.

Mechanism: containers share the kernel's clock, so each node has a per-process fake clock (see
``harness/sut/common/clock.py``: why not libfaketime). The target says where its control file is (``clock.file``)
and which roles read it; the harness writes it through the Docker API (``put_archive``: works on a stopped or
paused container too, and survives a restart of the node: a clock stays wrong until someone fixes it).
Verified by asking the node for its clock (``clock_s`` of the admin client) and comparing with the host's, within
``TOLERANCE_S``; a node that is not running is verified by reading the file back (it reads it when it starts).
Undone by writing a zero skew.
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from harness.errors import HarnessError
from harness.faults.kinds import NODE_ROLES, FaultKind
from harness.plans.stepbase import StepBase, TargetSpec
from harness.plans.toxics import Strict

#: how close the node's clock must be to the skew asked for (the node re-reads its control file every 0.1 s; an
#: HTTP round trip on a loaded host adds a few tenths)
TOLERANCE_S = 0.75


class ClockParams(Strict):
    offset_s: Annotated[float, Field(ge=-600, le=600, description="step the clock by this many seconds (negative: "
                                                                   "back in time)")] = 0.0
    drift: Annotated[float, Field(ge=-0.9, le=10, description="from the step on, the clock gains this many "
                                                               "seconds per second (negative: it runs slow)")] = 0.0

    @model_validator(mode="after")
    def _does_something(self) -> ClockParams:
        if self.offset_s == 0 and self.drift == 0:
            raise ValueError("a clock fault needs a non-zero offset_s or drift")
        return self


class ClockStep(StepBase):
    TARGET_TAGS: ClassVar[frozenset[str]] = frozenset(NODE_ROLES)
    kind: Literal["clock"]
    target: TargetSpec
    params: ClockParams


def _tar(path: str, text: str) -> bytes:
    data = text.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(posixpath.basename(path))
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _read(container: Any, path: str) -> str | None:
    try:
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.next()
            f = tar.extractfile(member) if member is not None else None
            return f.read().decode() if f is not None else None
    except Exception:  # any failure to read it back: not verified
        return None


class Clock(FaultKind):
    name = "clock"
    step = ClockStep

    def applicable(self, model: Any) -> bool:
        return any(s.role in model.clock_roles for s in model.services)

    def coverage_roles(self, model: Any, service_roles: list[str]) -> list[str]:
        return [r for r in service_roles if r.split(".")[0] in model.clock_roles]

    def target(self, model: Any) -> Any:
        from hypothesis import strategies as st

        pairs = sorted(p for p, reps in model.pairs.items() if model.service(reps[0]).role in model.clock_roles)
        options: list[Any] = []
        if model.by_role("sequencer") and "sequencer" in model.clock_roles:
            options.append(st.just("any(sequencer)"))
        if pairs:
            options.append(st.sampled_from(pairs).map(lambda p: f"active({p})"))
        return st.one_of(*options)

    def params(self, model: Any) -> Any:
        """Within what synchronised clocks tolerate here (the sequencers mark a peer offline 8 s behind): steps of
        a few seconds either way, or a clock a few percent fast or slow; the safety of larger steps is a curated
        scenario, since a correct deployment may stall while they last."""
        from hypothesis import strategies as st

        steps = st.sampled_from([-5.0, -2.0, -0.5, 0.5, 2.0, 5.0]).map(lambda o: {"offset_s": o})
        drifts = st.sampled_from([-0.2, -0.05, 0.05, 0.2]).map(lambda d: {"drift": d})
        return st.one_of(steps, drifts)

    def weaker(self, params: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        if abs(params.get("offset_s", 0)) > 0.5:
            yield "half the step", {**params, "offset_s": params["offset_s"] / 2}
        if params.get("drift") and params.get("offset_s"):
            yield "no drift", {**params, "drift": 0.0}

    # --- live ---------------------------------------------------------------------------------------------------
    def _control(self, live: Any, services: list[str]) -> str:
        target = live.topo.target
        if target.clock is None:
            raise HarnessError(f"target {target.name!r} declares no clock control (`clock:`): clock faults do not "
                               "apply to it")
        wrong = [s for s in services if live.topo.model.service(s).role not in target.clock.roles]
        if wrong:
            raise HarnessError(f"clock: {', '.join(wrong)} cannot be skewed (target {target.name!r} skews roles "
                               f"{', '.join(target.clock.roles)})")
        return str(target.clock.file)

    def _write(self, container: Any, path: str, spec: dict[str, float]) -> None:
        if not container.put_archive(posixpath.dirname(path) or "/", _tar(path, json.dumps(spec))):
            raise HarnessError(f"clock: could not write {path} in {container.name}")

    def apply(self, live: Any, step: Any, res: Any) -> tuple[Callable[[], bool], dict[str, Any]]:
        path = self._control(live, list(res.targets))
        spec = {"offset_s": float(step.params.offset_s), "drift": float(step.params.drift), "since": time.time()}
        for svc in res.targets:
            self._write(live.container(svc), path, spec)

        def skew_now() -> float:
            return spec["offset_s"] + spec["drift"] * max(0.0, time.time() - spec["since"])

        def seen(svc: str) -> bool:
            c = live.container(svc)
            if c.attrs["State"]["Status"] != "running" or c.attrs["State"].get("Paused"):
                return _read(c, path) == json.dumps(spec)
            role = live.topo.model.service(svc).role
            from harness.client.api import admin_client

            endpoint = live.topo.target.endpoints[role]["health"]
            t0 = time.time()
            clock = admin_client(endpoint.protocol, live.topo.url(svc, endpoint.port), timeout=2).clock_s()
            t1 = time.time()
            return clock is not None and abs(clock - (t0 + t1) / 2 - skew_now()) <= TOLERANCE_S + (t1 - t0) / 2

        def verify() -> bool:
            return all(seen(s) for s in res.targets)

        return verify, {"services": list(res.targets), "file": path, "spec": spec}

    def heal(self, live: Any, record: dict[str, Any], targets: list[str], fault_id: str) -> None:
        path = record.get("file")
        if not path:
            return
        for svc in record.get("services") or targets:
            c = live.container_or_none(svc)
            if c is not None:
                self._write(c, path, {"offset_s": 0.0, "drift": 0.0, "since": time.time()})


KIND = Clock()
