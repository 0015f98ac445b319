"""Toxic definitions: names, attribute schemas, defaults and validation, as the Toxiproxy 2.x API has them.

Why a table instead of one class per toxic: the API side only needs to know which attributes a type has, their
defaults (all 0, as Go's zero values) and how to validate them; the behaviour lives in ``stages.py``. Keeping the
schema as data makes the JSON round trip (``attributes`` in, the same ``attributes`` out) exact and the error
messages uniform.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from harness.faultproxy.errors import ApiError, bad_request

UPSTREAM = "upstream"
DOWNSTREAM = "downstream"
#: Upstream lists toxics direction by direction in this order (Go's ``stream.Upstream`` is 0).
DIRECTIONS = (UPSTREAM, DOWNSTREAM)

#: type -> attribute name -> default. All attributes are integers (Go ``int``/``int64``).
TOXIC_TYPES: dict[str, dict[str, int]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
    "limit_data": {"bytes": 0},
}


@dataclass
class ToxicSpec:
    """One toxic as the API shows it. ``stream`` keeps the spelling the client sent, as upstream does."""

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, int] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        return self.stream.lower()

    def to_json(self) -> dict[str, Any]:
        return {
            "attributes": dict(self.attributes),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
        }


def _want_int(type_name: str, key: str, value: Any) -> int:
    # bool is an int subclass in Python but not a JSON number: Go rejects it, so do we.
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
                          f"{type_name}.attributes.{key} of type int64")
    if value < 0:
        raise bad_request(f"attribute {key} of {type_name} must not be negative, got {value}")
    if value > 2**62:
        raise bad_request(f"attribute {key} of {type_name} is too large: {value}")
    return value


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _want_toxicity(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
                          "ToxicWrapper.toxicity of type float32")
    if not 0.0 <= float(value) <= 1.0:
        raise bad_request(f"toxicity must be between 0 and 1, got {value}")
    return float(value)


def merge_attributes(type_name: str, current: dict[str, int], given: Any) -> dict[str, int]:
    """Apply ``given`` (a JSON object or null) over ``current``; unknown keys are ignored like Go's decoder."""
    merged = dict(current)
    if given is None:
        return merged
    if not isinstance(given, dict):
        raise bad_request(f"json: cannot unmarshal {_json_kind(given)} into Go struct field "
                          f"ToxicWrapper.attributes of type toxics.{type_name}")
    schema = TOXIC_TYPES[type_name]
    for key, value in given.items():
        if key in schema and value is not None:
            merged[key] = _want_int(type_name, key, value)
    _validate(type_name, merged)
    return merged


def _validate(type_name: str, attrs: dict[str, int]) -> None:
    """Reject settings upstream would accept but that cannot work (upstream panics or loops forever)."""
    if type_name == "slicer":
        if attrs["average_size"] < 1:
            raise bad_request("attribute average_size of slicer must be at least 1")
        if attrs["size_variation"] >= attrs["average_size"]:
            raise bad_request("attribute size_variation of slicer must be less than average_size")


def parse_new_toxic(body: Any) -> ToxicSpec:
    """Build a toxic from a POST body, with upstream's defaults and its order of checks."""
    if not isinstance(body, dict):
        raise bad_request(f"json: cannot unmarshal {_json_kind(body)} into Go value of type toxics.ToxicWrapper")
    stream = body.get("stream", DOWNSTREAM)
    if stream is None:
        stream = DOWNSTREAM
    if not isinstance(stream, str):
        raise bad_request(f"json: cannot unmarshal {_json_kind(stream)} into Go struct field "
                          "ToxicWrapper.stream of type string")
    type_name = body.get("type", "")
    if type_name is None:
        type_name = ""
    if not isinstance(type_name, str):
        raise bad_request(f"json: cannot unmarshal {_json_kind(type_name)} into Go struct field "
                          "ToxicWrapper.type of type string")
    name = body.get("name") or ""
    if not isinstance(name, str):
        raise bad_request(f"json: cannot unmarshal {_json_kind(name)} into Go struct field "
                          "ToxicWrapper.name of type string")
    toxicity = body.get("toxicity", 1.0)
    toxicity = 1.0 if toxicity is None else _want_toxicity(toxicity)
    if stream.lower() not in DIRECTIONS:
        raise ApiError("stream was invalid, can be either upstream or downstream", 400)
    if not name:
        name = f"{type_name}_{stream}"
    if type_name not in TOXIC_TYPES:
        raise ApiError("invalid toxic type", 400)
    attributes = merge_attributes(type_name, dict(TOXIC_TYPES[type_name]), body.get("attributes"))
    return ToxicSpec(name=name, type=type_name, stream=stream, toxicity=toxicity, attributes=attributes)


def apply_update(spec: ToxicSpec, body: Any) -> ToxicSpec:
    """PATCH semantics of upstream: only ``attributes`` (merged) and ``toxicity`` change; the rest is ignored."""
    if not isinstance(body, dict):
        raise bad_request(f"json: cannot unmarshal {_json_kind(body)} into Go value")
    updated = copy.deepcopy(spec)
    updated.attributes = merge_attributes(spec.type, spec.attributes, body.get("attributes"))
    if body.get("toxicity") is not None:
        updated.toxicity = _want_toxicity(body["toxicity"])
    return updated
