"""A TCP fault proxy speaking the Toxiproxy 2.x HTTP API, with reproducible randomness.

Run it with ``python -m harness.faultproxy``; drive it with ``harness.faults.proxy_client.FaultProxyClient``
or any Toxiproxy client. Layout: ``api`` (HTTP), ``proxy`` (listeners, toxic lists), ``link`` (the data path),
``stages`` (one toxic on one connection direction), ``toxics`` (schemas), ``rng`` (seeded draws),
``metrics`` (Prometheus text), ``server`` (running it), ``bench`` (``ha-chaos bench proxy``).
"""
