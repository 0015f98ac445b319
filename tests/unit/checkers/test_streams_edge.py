"""Hand-written stream histories for cases the synthetic bugs do not cover: forks, resume gaps, regressions."""

from __future__ import annotations

from typing import Any

import pytest

from harness.checkers.sequencer import check_sequencer_stream, check_watermark
from harness.checkers.streams import check_offsets
from harness.history import Event

pytestmark = pytest.mark.unit


def seq(t: float, counter: int, ts: int, w: int, *, h: str | None = None, prev: int | None = None,
        sequencer: str = "seq1") -> Event:
    v: dict[str, Any] = {"member": "p1", "sequencer": sequencer, "counter": counter, "ts": ts, "prev_ts": prev,
                         "safe_watermark": w, "payload_hash": h or f"h{ts}"}
    return Event(t=t, process="seqreader-p1", type="ok", f="seq_event", value=v)


def sub(t: float, from_counter: int, sequencer: str) -> Event:
    return Event(t=t, process="seqreader-p1", type="info", f="seq_subscribe",
                 value={"member": "p1", "sequencer": sequencer, "from_counter": from_counter})


def base() -> list[Event]:
    return [sub(0, 0, "seq1"), seq(1, 0, 100, 150), seq(2, 1, 200, 250, prev=100), seq(3, 2, 300, 350, prev=200)]


def test_clean_resubscribe_with_identical_redelivery_passes() -> None:
    h = [*base(), sub(4, 2, "seq2"), seq(4.1, 2, 300, 360, prev=200, sequencer="seq2"),
         seq(4.2, 3, 400, 450, prev=300, sequencer="seq2")]
    assert check_sequencer_stream(h).verdict == "pass"
    assert check_watermark(h).verdict == "pass"


def test_fork_after_resubscribe_fails_at_the_redelivered_event() -> None:
    h = [*base(), sub(4, 2, "seq2"), seq(4.1, 2, 300, 360, h="other", prev=200, sequencer="seq2")]
    r = check_sequencer_stream(h)
    assert r.verdict == "fail"
    assert r.witnesses[0]["t"] == 4.1 and "fork" in r.witnesses[0]["note"]


def test_redelivery_without_resubscribe_fails() -> None:
    h = [*base(), seq(4, 2, 300, 360, prev=200)]
    r = check_sequencer_stream(h)
    assert r.verdict == "fail" and "without a re-subscribe" in r.witnesses[0]["note"]


def test_resubscribe_first_event_must_be_the_requested_counter() -> None:
    h = [*base(), sub(4, 2, "seq2"), seq(4.1, 3, 400, 450, prev=300, sequencer="seq2")]
    assert check_sequencer_stream(h).verdict == "fail"


def test_watermark_regression_fails() -> None:
    h = [*base(), seq(4, 3, 400, 320, prev=300)]
    r = check_watermark(h)
    assert r.verdict == "fail"
    assert any(w["t"] == 4 for w in r.witnesses)


def tx(t: float, off: int) -> Event:
    return Event(t=t, process="transactions-p1", type="ok", f="transaction",
                 value={"participant": "p1", "offset": off, "tx_id": f"tx{off}"})


def tsub(t: float, from_offset: int) -> Event:
    return Event(t=t, process="transactions-p1", type="info", f="subscribe",
                 value={"participant": "p1", "from_offset": from_offset, "reason": "failover"})


def test_resume_past_the_last_seen_offset_is_a_gap() -> None:
    r = check_offsets([tx(1, 1), tx(2, 2), tsub(3, 5), tx(4, 6)])
    assert r.verdict == "fail"
    assert r.witnesses[0]["f"] == "subscribe"


def test_resume_from_the_last_offset_passes_and_hex_offsets_order() -> None:
    assert check_offsets([tx(1, 1), tx(2, 2), tsub(3, 2), tx(4, 3)]).verdict == "pass"
    hexes = [Event(t=i, process="transactions-p1", type="ok", f="transaction",
                   value={"participant": "p1", "offset": f"{o:016x}", "tx_id": str(o)}) for i, o in
             enumerate([9, 10, 255])]
    assert check_offsets(hexes).verdict == "pass"
    assert check_offsets(list(reversed(hexes))).verdict == "fail"


def test_lower_watermark_right_after_switching_sequencer_is_not_a_violation() -> None:
    h = [*base(), sub(4, 2, "seq2"), seq(4.1, 2, 300, 340, prev=200, sequencer="seq2"),
         seq(4.2, 3, 400, 450, prev=300, sequencer="seq2")]
    assert check_watermark(h).verdict == "pass"
