"""The PostgreSQL sampler's wiring in the workload and its behaviour without a server (no Docker, no PostgreSQL;
tests/integration/sut/test_pg_evidence.py runs it against a real one)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.history import HistoryWriter
from harness.topology.model import model_for_profile, reference_model
from harness.topology.target import reference_target
from harness.workload import Workload, WorkloadConfig
from harness.workload.pgsampler import PgSampler

pytestmark = pytest.mark.unit


class FakeEndpoints:
    def __init__(self, model: Any, port: int | None) -> None:
        self.topo = SimpleNamespace(model=model, target=reference_target())
        self.port = port
        self.refreshed = 0

    def host_port(self, service: str, port: int) -> int | None:
        return self.port if (service, port) == ("pg-lb", 5432) else None

    def refresh(self, force: bool = False) -> None:
        self.refreshed += 1


def _workload(tmp_path: Path, model: Any, port: int | None, **cfg: Any) -> Workload:
    return Workload(FakeEndpoints(model, port), HistoryWriter(tmp_path / "h.jsonl"),  # type: ignore[arg-type]
                    WorkloadConfig(**cfg))


def test_the_workload_samples_every_pair_through_pg_lb(tmp_path: Path) -> None:
    w = _workload(tmp_path, reference_model(), 15432)
    try:
        sampler = w._pg_sampler()
        assert sampler is not None
        assert sampler.dsn() == "postgresql://postgres:ha-chaos@127.0.0.1:15432/postgres"
        assert sampler.pairs == {node: list(reps) for node, reps in reference_model().pairs.items()}
        assert set(sampler.pairs) == {"p1", "p2", "med1"} and sampler.interval_s == 0.25
    finally:
        w._loop.close()


def test_no_sampler_when_switched_off_or_without_pairs(tmp_path: Path) -> None:
    for w in (_workload(tmp_path, reference_model(), 15432, pg_sampling=False),
              _workload(tmp_path, model_for_profile("postgres"), 15432)):
        try:
            assert w._pg_sampler() is None
        finally:
            w._loop.close()


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def ok(self, process: str, f: str, value: dict[str, Any] | None = None) -> None:
        self.events.append(("ok", f, value or {}))

    def info(self, process: str, f: str, value: dict[str, Any] | None = None) -> None:
        self.events.append(("info", f, value or {}))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_sample_that_cannot_be_taken_is_recorded_as_info_and_the_sampler_goes_on() -> None:
    rec = Recorder()
    errors: list[int] = []
    port = _closed_port()
    addresses = iter([None, f"postgresql://postgres@127.0.0.1:{port}/postgres"])
    sampler = PgSampler(lambda: next(addresses, f"postgresql://postgres@127.0.0.1:{port}/postgres"), rec,
                        {"p1": ["p1a", "p1b"]}, interval_s=0.05, on_error=lambda: errors.append(1))

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.4, stop.set)
        await asyncio.wait_for(sampler.run(stop), 10)
    asyncio.run(main())
    assert sampler.samples == 0 and sampler.failures >= 3 and len(errors) == sampler.failures
    assert all(t == "info" and f == "pg_sample" for t, f, _ in rec.events)
    assert "not known" in rec.events[0][2]["error"] and "Error" in rec.events[1][2]["error"]
