"""The fault-proxy link table as Toxiproxy ``/populate`` JSON, generated from the topology model.

``python -m harness.topology.links > compose/config/faultproxy/proxies.json`` regenerates the file the compose
``faultproxy-init`` service posts; ``python -m harness.topology.links TARGET`` prints another target's (e.g.
``targets/small.yaml`` -> ``compose/config/faultproxy/small.json``). A unit test fails when a checked-in file and
its target disagree.
"""

from __future__ import annotations

import json
import sys

from harness.topology.model import TopologyModel, reference_model


def populate_payload(model: TopologyModel) -> list[dict[str, object]]:
    return [{"name": lk.name, "listen": lk.listen, "upstream": lk.upstream, "enabled": True}
            for lk in model.links]


def render(model: TopologyModel | None = None) -> str:
    return json.dumps(populate_payload(model or reference_model()), indent=1) + "\n"


if __name__ == "__main__":
    if len(sys.argv) > 1:
        from harness.topology.target import load_target

        sys.stdout.write(render(load_target(sys.argv[1]).model("full")))
    else:
        sys.stdout.write(render())
