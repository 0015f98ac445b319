"""Nemesis: fault primitives with an undo for each (see docs/ARCHITECTURE). proxy_client talks to fault proxies."""
