"""The workload's clients on a target of any shape (no Docker): seen live on targets/small.yaml (one participant),
every client died at its first cross-participant command (no other participant to inform), after 16 submits."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.history import HistoryWriter
from harness.topology.target import TARGETS_DIR, load_target, reference_target
from harness.workload import Workload, WorkloadConfig

pytestmark = pytest.mark.unit


class FakeEndpoints:
    def __init__(self, target: Any) -> None:
        self.topo = SimpleNamespace(model=target.model("full"), target=target)

    def refresh(self, force: bool = False) -> None:
        pass


@pytest.mark.parametrize("target", [load_target(TARGETS_DIR / "small.yaml"), reference_target()],
                         ids=["small", "reference"])
def test_clients_keep_submitting_whatever_the_number_of_participants(tmp_path: Path, target: Any) -> None:
    w = Workload(FakeEndpoints(target), HistoryWriter(tmp_path / "h.jsonl"),  # type: ignore[arg-type]
                 WorkloadConfig(rate=2000.0, clients=1, cross_participant_ratio=1.0, resubmit_ratio=0.0))
    sent: list[dict[str, Any]] = []

    async def fake_submit(proc: str, cmd: dict[str, Any], rng: Any) -> None:
        sent.append(cmd)
        if len(sent) >= 50:
            w._stop_submit.set()

    w._submit = fake_submit  # type: ignore[method-assign]

    async def main() -> None:
        await asyncio.wait_for(w._client(0), 10)

    asyncio.run(main())
    assert len(sent) == 50
    parts = set(target.parties)
    for cmd in sent:
        assert set(cmd["informees"]) <= parts and cmd["participant"] in cmd["informees"]
    # with a second participant to inform, cross-participant commands are drawn; with one, none can be
    assert any(len(c["informees"]) > 1 for c in sent) is (len(parts) > 1)


def test_a_workload_task_that_dies_is_recorded_not_swallowed(tmp_path: Path) -> None:
    w = Workload(FakeEndpoints(reference_target()), HistoryWriter(tmp_path / "h.jsonl"),  # type: ignore[arg-type]
                 WorkloadConfig())

    async def dies() -> None:
        raise IndexError("Cannot choose from an empty sequence")

    async def main() -> None:
        task = asyncio.create_task(dies())
        await asyncio.gather(task, return_exceptions=True)
        w._task_done(task)

    asyncio.run(main())
    assert w.crashes and "IndexError" in w.crashes[0] and "dies" in w.crashes[0]
    w.h.close()
    assert "workload_error" in (tmp_path / "h.jsonl").read_text()


def test_the_sequencer_reader_moves_on_when_a_sequencer_refuses_the_subscription(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen live (clock-steps with wall_clock_timestamps): a sequencer that does not serve refuses a subscription
    with 503 UNAVAILABLE, and the harness's reader died of it (a harness error) instead of trying the next one."""
    from harness.client.json_api import StreamEnded
    from harness.workload import runner

    w = Workload(FakeEndpoints(reference_target()), HistoryWriter(tmp_path / "h.jsonl"),  # type: ignore[arg-type]
                 WorkloadConfig())
    w.ep.sequencer = lambda seq: f"http://{seq}"  # type: ignore[attr-defined]
    tried: list[str] = []

    class Refusing:
        def __init__(self, url: str, session: Any, timeout: float) -> None:
            self.url = url

        async def subscribe(self, member: str, frm: int, idle_timeout: float):  # type: ignore[no-untyped-def]
            tried.append(self.url)
            if len(tried) >= 3:
                w._stop_all.set()
            raise StreamEnded("UNAVAILABLE", None)
            yield {}

    monkeypatch.setattr(runner, "SequencerApiClient", Refusing)
    asyncio.run(asyncio.wait_for(w._seq_reader("p1"), 10))
    assert tried == ["http://seq1", "http://seq2", "http://seq3"]
