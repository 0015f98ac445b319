"""Mediator pair (active/passive): aggregates confirmation responses and sequences verdicts."""
