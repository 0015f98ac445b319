"""The two-phase protocol end to end, in-process over a real PostgreSQL: submit, dedup, completions, streams."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sut_support import Cluster, PgServer, collect, wait_until

from harness.client.json_api import LedgerClient

pytestmark = pytest.mark.integration


def test_commands_complete_dedup_and_streams_agree(pg: PgServer) -> None:
    async def main() -> None:
        c = await Cluster(pg).start()
        comps: dict[str, list[dict[str, Any]]] = {"p1": [], "p2": []}
        txs: dict[str, list[dict[str, Any]]] = {"p1": [], "p2": []}
        clients = {p: LedgerClient(c.ledger_url(p)) for p in ("p1", "p2")}
        tasks = [asyncio.create_task(collect(clients[p].completions(0, idle_timeout=30), comps[p])) for p in comps]
        tasks += [asyncio.create_task(collect(clients[p].transactions(0, idle_timeout=30), txs[p])) for p in txs]
        try:
            n = 60
            for k in range(n):
                p, party = ("p1", "alice") if k % 2 == 0 else ("p2", "carol")
                informees = ["dave" if p == "p1" else "bob"] if k % 3 == 0 else []
                r = await clients[p].submit(user="u", act_as=[party], command_id=f"c{k}", informees=informees,
                                            payload={"k": k})
                assert r.ok, r.body
            await wait_until(lambda: len(comps["p1"]) + len(comps["p2"]) >= n, 30, "all completions")
            # the same change ID twice at once: one is acknowledged, the other is refused as in flight. p1 is cut
            # from the sequencers meanwhile, so the first cannot complete (and make the second a duplicate) before
            # the second is decided: the nodes share this test's event loop, and a command completes in a few ms.
            act = c.active("p1")
            c.cut_sequencers(act.cfg.replica)
            try:
                twice = await asyncio.gather(*(clients["p1"].submit(user="u", act_as=["alice"], command_id="x",
                                                                    submission_id=s) for s in ("s1", "s2")))
            finally:
                c.heal_sequencers(act.cfg.replica)
            assert sorted(str(r.error) for r in twice) == ["None", "SUBMISSION_ALREADY_IN_FLIGHT"], twice
            n += 1
            await wait_until(lambda: len(comps["p1"]) + len(comps["p2"]) >= n, 30, "all completions")
            assert [x["status"] for x in comps["p1"] + comps["p2"]] == ["OK"] * n
            # resubmit accepted command ids -> DUPLICATE_COMMAND with the original offset
            orig = {x["command_id"]: x for x in comps["p1"]}
            for k in (0, 2, 4):
                r = await clients["p1"].submit(user="u", act_as=["alice"], command_id=f"c{k}")
                assert r.ok
            await wait_until(lambda: len(comps["p1"]) >= (n + 1) // 2 + 3, 20, "duplicate completions")
            dups = [x for x in comps["p1"] if x["status"] == "DUPLICATE_COMMAND"]
            assert len(dups) == 3
            for d in dups:
                assert d["offset"] == orig[d["command_id"]]["offset"]
                assert d["existing_submission_id"] == orig[d["command_id"]]["submission_id"]
            # streams: offsets dense, shared transactions in the same order on both participants
            for p in ("p1", "p2"):
                assert [t["offset"] for t in txs[p]] == list(range(1, len(txs[p]) + 1))
                assert [x["completion_offset"] for x in comps[p]] == list(range(1, len(comps[p]) + 1))
                rts = [t["record_time"] for t in txs[p]]
                assert rts == sorted(rts)
            shared = [t["tx_id"] for t in txs["p1"] if set(t["informee_participants"]) == {"p1", "p2"}]
            assert len(shared) == 20
            assert shared == [t["tx_id"] for t in txs["p2"] if set(t["informee_participants"]) == {"p1", "p2"}]
            by_id = {t["tx_id"]: t for t in txs["p2"]}
            for t in txs["p1"]:
                if t["tx_id"] in by_id:
                    assert t["payload_hash"] == by_id[t["tx_id"]]["payload_hash"]
            ok_offsets = {x["offset"] for x in comps["p1"] if x["status"] == "OK"}
            assert ok_offsets <= {t["offset"] for t in txs["p1"]}
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for cl in clients.values():
                await cl.close()
            await c.stop()
    asyncio.run(main())
