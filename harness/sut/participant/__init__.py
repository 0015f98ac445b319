"""Participant pairs: Ledger API on the active replica, dedup + in-flight store, two-phase protocol, indexer."""
