"""A real kernel killed with SIGKILL in the middle of a `%%llm_parallel --for` run, then restarted:
the re-run sends only what was not kept, and every answer shown before the kill comes back."""

from __future__ import annotations

import os
import queue
import re
import signal
import sqlite3
import time

import pytest
from fault_server import NumberedServer

jupyter_client = pytest.importorskip("jupyter_client")

ITEMS = 120
CELL = "%%llm_parallel --model model --for x in items -o res\nsay: Say {x}"
LINE = re.compile(r"^(say_\d+)\s.*: '(answer \d+)'$", re.MULTILINE)


def setup_code(server, path) -> str:
    return ("%load_ext llmnb\nfrom llmnb import Models\n"
            f"items = [f'item {{i}}' for i in range({ITEMS})]\n"
            f"model = Models.create('openai:demo', base_url={server.base_url!r}, cache={str(path)!r}, "
            "max_concurrency=6)")


def kept(path) -> int:
    try:
        with sqlite3.connect(path, timeout=10) as db:
            return db.execute("SELECT count(*) FROM answers").fetchone()[0]
    except sqlite3.OperationalError:  # not made yet
        return 0


def printed(kc, msg_id: str, into: list[str], until=None, timeout: float = 120) -> None:
    """Collect the cell's printed text until its idle status (or until `until()` is true)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until is not None and until():
            return
        try:
            msg = kc.get_iopub_msg(timeout=0.05)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            into.append(msg["content"]["text"])
        if msg["msg_type"] == "error":
            raise AssertionError(msg["content"])
        if until is None and msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return
    raise AssertionError(f"the cell did not get there within {timeout} s")


def start_kernel(server, path):
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="python3")
    out: list[str] = []
    printed(kc, kc.execute(setup_code(server, path)), out)
    return km, kc


@pytest.mark.slow
def test_a_killed_run_resumes_sending_only_what_was_not_kept(tmp_path):
    path = tmp_path / "answers.sqlite"
    with NumberedServer(latency=0.25) as server:
        km, kc = start_kernel(server, path)
        try:
            before: list[str] = []
            printed(kc, kc.execute(CELL), before, until=lambda: kept(path) >= ITEMS // 3)
            os.kill(km.provisioner.process.pid, signal.SIGKILL)
            time.sleep(0.5)  # requests already on their way reach the server
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        seen = dict(LINE.findall("".join(before)))
        kept_at_kill, sent_at_kill = kept(path), server.requests
        assert ITEMS // 3 <= kept_at_kill < ITEMS and seen
        assert sent_at_kill - kept_at_kill <= 6  # only the calls in flight were lost

        km, kc = start_kernel(server, path)
        try:
            after: list[str] = []
            printed(kc, kc.execute(CELL), after)
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    text = "".join(after)
    assert server.requests - sent_at_kill == ITEMS - kept_at_kill
    assert f"{ITEMS} done; {kept_at_kill} from the cache, {ITEMS - kept_at_kill} sent" in text
    again = dict(LINE.findall(text))
    assert len(again) == ITEMS
    assert {name: again[name] for name in seen} == seen  # what the notebook showed before the kill
