"""ha-chaos: a chaos-testing harness for HA deployments of a Canton-style ledger network."""

__version__ = "0.1.0"

#: Every Docker object the harness creates carries this label with the run id as value.
RUN_LABEL = "ha-chaos.run"
