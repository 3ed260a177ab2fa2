"""Fixtures for the client tests: the live server comes from tests/conftest.py
(`default_server`: `poolstream serve` on an ephemeral port via --port-file)."""

from __future__ import annotations

import pytest

from tests.clients.helpers import build_client_programs


@pytest.fixture(scope="session")
def client_programs() -> None:
    build_client_programs()


@pytest.fixture(scope="session")
def address(default_server) -> str:
    return default_server.address


@pytest.fixture(scope="session")
def py_client(address):
    from poolstream_client import Client

    with Client(address, timeout=120) as client:
        yield client
