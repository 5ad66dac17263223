"""OGX, a real OpenAI Batch API server (/v1/files, /v1/batches), started for the tests against an
upstream OpenAI-compatible server (llmnb's demo server or the fault server) that answers each line.

OGX needs Python 3.12, so it lives in a venv of its own, `.ogx-venv` at the repository's root
(see CONTRIBUTING.md); without it the tests that need it are skipped, except in CI (LLMNB_CI=1),
where they fail. Its offline configuration is tests/ogx/config.yaml.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from servers import free_port, start, stop

ROOT = Path(__file__).resolve().parent.parent
OGX = ROOT / ".ogx-venv" / "bin" / "ogx"
CONFIG = Path(__file__).resolve().parent / "ogx" / "config.yaml"
MODEL = "demo"  # the model name tests/ogx/config.yaml registers


class OgxServer:
    """One OGX process: `base_url` serves the Batch API (and live chat completions) for MODEL."""

    def __init__(self, upstream_url: str, state: Path):
        self.upstream_url, self.state = upstream_url, state
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OgxServer:
        if not OGX.exists():
            message = f"OGX is not installed in {OGX.parent.parent.name} (see CONTRIBUTING.md, 'The Batch API tests')"
            if os.environ.get("LLMNB_CI"):
                pytest.fail(message)
            pytest.skip(message)
        self.state.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "UPSTREAM_URL": self.upstream_url, "OGX_STATE": str(self.state),
               "OGX_PORT": str(self.port), "NO_COLOR": "1"}
        self.proc = start([str(OGX), "run", str(CONFIG)], f"{self.base_url}/health", self.state / "ogx.log",
                          seconds=120, env=env)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def __enter__(self) -> OgxServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
