"""Toxiproxy toxics as plan parameters: one model per toxic type, with Toxiproxy's own attribute names.

Why mirror Toxiproxy exactly: the fault proxy speaks Toxiproxy's HTTP API, so a validated ``params`` block
is posted as-is; an attribute Toxiproxy would silently ignore (a typo) must fail here instead. Units as
Toxiproxy: milliseconds, KB/s for bandwidth, microseconds for the slicer's delay.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Millis = Annotated[int, Field(ge=0, le=3_600_000)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class Strict(BaseModel):
    """Base of every plan model: unknown keys, NaN and infinities are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LatencyAttrs(Strict):
    latency: Millis
    jitter: Millis = 0


class BandwidthAttrs(Strict):
    rate: Annotated[int, Field(ge=0, le=10_000_000, description="KB/s; 0 stalls the link")]


class SlowCloseAttrs(Strict):
    delay: Millis


class TimeoutAttrs(Strict):
    timeout: Annotated[int, Field(ge=0, le=3_600_000, description="ms; 0 = hold data forever (blackhole)")]


class ResetPeerAttrs(Strict):
    timeout: Millis = 0


class SlicerAttrs(Strict):
    average_size: Annotated[int, Field(ge=1, le=1_000_000)]
    size_variation: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    delay: Annotated[int, Field(ge=0, le=60_000_000, description="microseconds between slices")] = 0

    @model_validator(mode="after")
    def _variation_below_size(self) -> SlicerAttrs:
        if self.size_variation >= self.average_size:
            raise ValueError("size_variation must be smaller than average_size")
        return self


class LimitDataAttrs(Strict):
    bytes: Annotated[int, Field(ge=0, le=1 << 40)]


class _Toxic(Strict):
    stream: Literal["upstream", "downstream"] = "downstream"
    toxicity: Fraction = 1.0


class LatencyToxic(_Toxic):
    type: Literal["latency"]
    attributes: LatencyAttrs


class BandwidthToxic(_Toxic):
    type: Literal["bandwidth"]
    attributes: BandwidthAttrs


class SlowCloseToxic(_Toxic):
    type: Literal["slow_close"]
    attributes: SlowCloseAttrs


class TimeoutToxic(_Toxic):
    type: Literal["timeout"]
    attributes: TimeoutAttrs


class ResetPeerToxic(_Toxic):
    type: Literal["reset_peer"]
    attributes: ResetPeerAttrs = ResetPeerAttrs()


class SlicerToxic(_Toxic):
    type: Literal["slicer"]
    attributes: SlicerAttrs


class LimitDataToxic(_Toxic):
    type: Literal["limit_data"]
    attributes: LimitDataAttrs


ToxicParams = Annotated[
    LatencyToxic | BandwidthToxic | SlowCloseToxic | TimeoutToxic | ResetPeerToxic | SlicerToxic
    | LimitDataToxic,
    Field(discriminator="type"),
]
TOXIC_TYPES = ("latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data")


