"""Starting real servers (llama.cpp's, JupyterLab) as subprocesses for tests."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], ready_url: str, log_path: Path, seconds: float = 90, env=None) -> subprocess.Popen:
    """Start `cmd` with its output in `log_path` (a pipe could fill up and stall it) and wait
    until `ready_url` answers; fail the test with the log's tail if it exits or never answers."""
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(ready_url, timeout=2)
            return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    log.close()
    pytest.fail(f"{cmd[2]} did not start: {log_path.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=20)
