"""The one client interface (issue 13 item 2): answers classified by the implementation's one table, clients
picked by the protocol a target names, and a clear error for a protocol nobody speaks."""

from __future__ import annotations

import pytest

from harness.client import api
from harness.client.json_api import SUBMIT_OUTCOMES, SubmitResult
from harness.errors import InputError
from harness.topology.target import reference_target

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("status,body,outcome", [
    (202, {"replica": "p1a"}, "ok"),
    (503, {"error": "NODE_IS_PASSIVE_REPLICA"}, "retryable"),
    (503, {"error": "UNAVAILABLE"}, "retryable"),
    (503, {}, "retryable"),                        # HTTP_503 without a body
    (502, {"error": "anything"}, "indeterminate"),  # a gateway that took the request and gave no answer
    (504, {}, "indeterminate"),
    (400, {"error": "INVALID_ARGUMENT"}, "definite"),
    (409, {"error": "SUBMISSION_ALREADY_IN_FLIGHT"}, "definite"),
])
def test_the_implementation_classifies_every_answer(status: int, body: dict, outcome: str) -> None:
    assert SubmitResult(status, body).outcome == outcome


def test_the_table_holds_only_known_classes() -> None:
    assert set(SUBMIT_OUTCOMES.values()) <= {"retryable", "indeterminate"}


def test_clients_are_picked_by_the_targets_protocols() -> None:
    t = reference_target()
    assert api.check_protocols(t.endpoints) == []
    assert isinstance(api.ledger_client("ha-chaos-json", "http://127.0.0.1:1"), api.json_api.LedgerClient)
    with pytest.raises(InputError, match="canton-grpc-v2"):
        api.ledger_client("canton-grpc-v2", "http://127.0.0.1:1")
    endpoints = {**t.endpoints, "participant": {"ledger": {"port": 5001, "protocol": "canton-grpc-v2"}}}
    assert api.check_protocols(endpoints) == ["participant.ledger: canton-grpc-v2"]
