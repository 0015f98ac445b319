"""The reference nodes' wall clock (harness/sut/common/clock.py): the real clock plus the skew in a control file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from harness.sut.common import clock

pytestmark = pytest.mark.unit


@pytest.fixture
def control(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "clock"
    monkeypatch.setattr(clock, "CLOCK_FILE", str(path))
    monkeypatch.setattr(clock, "RECHECK_S", 0.0)
    clock._state.update(checked=-1.0, text=None, offset=0.0, drift=0.0, since=0.0)
    return path


def _write(path: Path, **spec: float) -> None:
    """Written with one fixed mtime, as the harness's tar archives can (whole seconds): the text tells a change."""
    path.write_text(json.dumps(spec))
    os.utime(path, ns=(10**18, 10**18))


def test_no_file_is_the_real_clock(control: Path) -> None:
    assert abs(clock.wall_s() - time.time()) < 0.05
    assert clock.skew_s() == 0.0


def test_a_step_and_a_drift_are_seen_and_a_zero_skew_puts_it_right(control: Path) -> None:
    _write(control, offset_s=-30.0, drift=0.0, since=time.time())
    assert abs(clock.wall_s() - (time.time() - 30)) < 0.05
    _write(control, offset_s=0.0, drift=0.5, since=time.time() - 10)
    assert abs(clock.skew_s() - 5.0) < 0.05
    _write(control, offset_s=0.0, drift=0.0, since=time.time())
    assert abs(clock.wall_us() / 1e6 - time.time()) < 0.05


def test_a_broken_file_is_the_real_clock(control: Path) -> None:
    control.write_text("{not json")
    assert clock.skew_s() == 0.0
