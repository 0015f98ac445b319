"""Reference Canton-style nodes (sequencer, mediator, participant) whose HA behaves like the real thing.

Why our own nodes: real Canton images cannot be obtained here, and the harness is only as good as the system it is
aimed at. The behaviour reproduced is specified in ``canton-ha-model.md``; the HTTP/JSON APIs and every environment
variable are documented in ``harness/sut/API.md``. Entry point: ``python -m harness.sut`` with ``NODE_ROLE`` set.
"""
