"""Shared fixtures. The embedded model loads in well under a second; one serves the whole test run."""

from __future__ import annotations

import os
import signal

import pytest

from llmnb import Models

# The tests and notebooks run offline: with a key in the environment the notebooks would switch
# to OpenAI (their one-line switch), and kernels started by the tests inherit this environment.
os.environ.pop("OPENAI_API_KEY", None)


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


@pytest.fixture(scope="module")
def ip():
    """An IPython shell with llmnb's magics loaded; its namespace is reset after each module."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython() or InteractiveShell.instance()  # started once per process; later modules share it
    shell.run_cell("%load_ext llmnb", store_history=False)
    yield shell
    shell.run_cell("%reset -f", store_history=False)


@pytest.fixture
def sigint_raises():
    """Ctrl-C raises KeyboardInterrupt, as in a kernel or a terminal. A process started in the
    background by a non-interactive shell (as a CI runner may be) inherits SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
