"""Shared fixtures. The embedded model loads in well under a second; one per test session."""

from __future__ import annotations

import pytest

from llmnb import Models


@pytest.fixture(scope="session")
def embedded_model():
    """The real embedded SmolLM2-135M through llama.cpp (offline)."""
    return Models.create()
