"""`llmnb.demo_server` in a process of its own, for benchmarks whose client CPU time must be the
client's alone."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_demo_server(port: int, latency: float, per_token: float) -> subprocess.Popen:
    """The demo server on `port` (first token `latency` after a request, then one every
    `per_token`), returned once it answers."""
    cmd = [sys.executable, "-m", "llmnb.demo_server", "--port", str(port), "--latency", str(latency),
           "--per-token", str(per_token)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
        except urllib.error.HTTPError:
            return proc  # it answers (the root is no chat endpoint)
        except OSError:
            time.sleep(0.1)
        else:
            return proc
    proc.kill()
    raise SystemExit("the demo server did not start")
