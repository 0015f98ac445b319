"""Host-side benchmarks and load generation: the ``ha-chaos bench`` sub-commands and ``python -m`` measurements.

Why one package apart from the packages they measure: a benchmark is a front door (like ``harness/cli.py``) that
may use any layer - topology, workload client, checkers, report - while the packages it measures must not import
back up (tests/unit/test_layering.py). The container packages ``harness/sut`` and ``harness/faultproxy`` hold only
what runs in their images, so a benchmark edit never changes an image id (issue 13 item 5).

| module | what |
|---|---|
| ``ledger`` | ``bench ledger``: throughput/latency through ledger-lb, participant failover time |
| ``loadgen`` | the self-checking command load ``bench ledger`` and the reference-node tests drive |
| ``proxy`` | ``bench proxy``: fault-proxy overhead against a direct loopback path |
| ``db_failover`` | ``bench db-failover``: Patroni leader SIGKILL under a write loop |
| ``checkers`` | ``bench checkers``: every checker over a synthetic million-operation history |
| ``fault_effects`` | ``bench fault-effects``: scheduled moment -> verified effect over stored runs |
| ``executor`` | ``python -m harness.bench.executor``: the executor's own share of that latency, on fakes |
"""
