"""Shared fixtures. The embedded model loads in well under a second; one per test session."""

from __future__ import annotations

import pytest

from llmnb import Models


@pytest.fixture(scope="session")
def embedded_model():
    """The real embedded SmolLM2-135M through llama.cpp (offline)."""
    return Models.create()


@pytest.fixture
def fault_server():
    """A fresh fault-injecting OpenAI-compatible server on 127.0.0.1 (tests/fault_server.py)."""
    from fault_server import FaultServer

    with FaultServer() as server:
        yield server
