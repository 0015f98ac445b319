"""Fixtures of the SUT integration tests: one throwaway PostgreSQL 15 per session (see sut_support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sut_support import PgServer


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """A PostgreSQL 15 server on a free 127.0.0.1 port; each test creates its own databases on it."""
    server = PgServer().start()
    try:
        yield server
    finally:
        server.stop()
