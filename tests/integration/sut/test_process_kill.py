"""Participant replicas as real processes (``python -m harness.sut``): SIGKILL of the active under load."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from sut_support import Cluster, PgServer, node_config, node_env, wait_until

from harness.client.json_api import HealthClient, Indeterminate, LedgerClient

pytestmark = pytest.mark.integration


def test_sigkill_active_participant_process_fails_over_without_double_accept(pg: PgServer) -> None:
    async def main() -> None:
        c = await Cluster(pg, with_participants=("p2",)).start()
        db = await pg.create_db("p1")
        logs = Path(tempfile.mkdtemp(prefix="sut-proc-"))
        cfgs = [node_config("participant", r, "p1", pg.dsn(db), timers=c.timers,
                            endpoints=tuple(f"127.0.0.1:{s.cfg.api_port}" for s in c.sequencers))
                for r in ("p1a", "p1b")]
        files = {cfg.replica: (logs / f"{cfg.replica}.log").open("w") for cfg in cfgs}
        procs = {cfg.replica: subprocess.Popen([sys.executable, "-m", "harness.sut"], env=node_env(cfg),
                                               stdout=files[cfg.replica], stderr=subprocess.STDOUT)
                 for cfg in cfgs}
        acked: list[str] = []
        stop = asyncio.Event()

        async def ready(cfg: object) -> bool:
            async with HealthClient(f"http://127.0.0.1:{cfg.health_port}", timeout=1) as h:  # type: ignore[attr-defined]
                return bool(await h.ready())

        async def active() -> list[str]:
            return [cfg.replica for cfg in cfgs if procs[cfg.replica].poll() is None and await ready(cfg)]

        async def load() -> None:
            k = 0
            while not stop.is_set():
                for cfg in cfgs:
                    cid = f"k{k}-{uuid.uuid4().hex[:4]}"
                    try:
                        async with LedgerClient(f"http://127.0.0.1:{cfg.api_port}", timeout=2) as cl:
                            r = await cl.submit(user="u", act_as=["alice"], command_id=cid)
                        if r.ok:
                            acked.append(cid)
                            k += 1
                    except Indeterminate:
                        pass
                await asyncio.sleep(0.02)

        try:
            async def one_active() -> bool:
                return len(await active()) == 1
            await wait_until(one_active, 30, "one ready p1 replica")
            victim = (await active())[0]
            survivor = next(cfg for cfg in cfgs if cfg.replica != victim)
            bg = asyncio.create_task(load())
            await wait_until(lambda: len(acked) >= 20, 30, "load running")
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            n_before = len(acked)
            await wait_until(lambda: len(acked) > n_before + 10, 60, "commands acknowledged by the survivor")
            stop.set()
            await bg
            assert await ready(survivor)

            async def all_completed() -> bool:
                rows = await pg.query(db, "select body from p_completions")
                return len({json.loads(r["body"])["command_id"] for r in rows}) >= len(acked)
            await wait_until(all_completed, 60, "every acknowledged command completed")
            rows = await pg.query(db, "select body from p_completions")
            oks: dict[str, int] = {}
            for r in rows:
                b = json.loads(r["body"])
                if b["status"] == "OK":
                    oks[b["command_id"]] = oks.get(b["command_id"], 0) + 1
            assert [k for k, v in oks.items() if v > 1] == []
            assert {json.loads(r["body"])["command_id"] for r in rows} >= set(acked)
        finally:
            stop.set()
            for p in procs.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs.values():
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
            for f in files.values():
                f.close()
            await c.stop()
    asyncio.run(main())
