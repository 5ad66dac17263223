"""`%%llm_parallel --batch` in a real kernel, against a real Batch API server (OGX): a kernel killed
with SIGKILL while its job runs, then the cell run again in a new kernel, collects the same job:
no second job, and the model server sees each row once. `--batch` on the embedded model is
refused in one line."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections import Counter

import pytest
from fault_server import EchoServer
from ogx_server import MODEL, OgxServer
from test_cache_kernel import printed

jupyter_client = pytest.importorskip("jupyter_client")
pytestmark = pytest.mark.slow

ITEMS = 150
CELL = "%%llm_parallel --model model --for x in items --batch -q -o res\nsay: Say {x}"


def setup_code(base_url: str, path) -> str:
    return ("%load_ext llmnb\nfrom llmnb import Models\n"
            f"items = [f'item {{i}}' for i in range({ITEMS})]\n"
            f"model = Models.create('openai:{MODEL}', base_url={base_url!r}, api_key='none', cache={str(path)!r})")


def job_ids(path) -> list[str]:
    try:
        with sqlite3.connect(path, timeout=10) as db:
            return [row[0] for row in db.execute("SELECT job FROM batch_jobs WHERE job IS NOT NULL")]
    except sqlite3.OperationalError:  # no file or no table yet
        return []


def start_kernel(code: str):
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="python3")
    printed(kc, kc.execute(code), [])
    return km, kc


def test_a_kernel_killed_while_its_job_runs_collects_that_job_when_the_cell_runs_again(tmp_path):
    path = tmp_path / "answers.sqlite"
    with EchoServer() as upstream, OgxServer(upstream.base_url, tmp_path / "ogx") as ogx:
        upstream.latency = 0.2  # 150 rows, 10 at a time: the job runs about 3 s
        km, kc = start_kernel(setup_code(ogx.base_url, path))
        try:
            kc.execute(CELL)
            deadline = time.monotonic() + 60
            while not job_ids(path) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert job_ids(path), "no job was written to the cache file"
            os.kill(km.provisioner.process.pid, signal.SIGKILL)
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        assert len(upstream.asked) < ITEMS  # killed while the job ran

        km, kc = start_kernel(setup_code(ogx.base_url, path))
        try:
            out: list[str] = []
            printed(kc, kc.execute(CELL), out, timeout=120)
            printed(kc, kc.execute("print(res.as_list() == [f'echo: Say item {i}' for i in range(150)])"), out)
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        text = "".join(out)
        assert f"{ITEMS} done in 1 batch job" in text and text.rstrip().endswith("True"), text
        asked = Counter(upstream.asked)
        assert len(asked) == ITEMS and set(asked.values()) == {1}  # each row seen once
        assert len(job_ids(path)) == 1


def test_batch_on_the_embedded_model_is_refused_in_one_line():
    km, kc = start_kernel("%load_ext llmnb")
    try:
        out: list[str] = []
        printed(kc, kc.execute("%%llm_parallel --batch\nhello"), out, timeout=120)  # IPython prints a UsageError
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    text = "".join(out)
    assert text.startswith("UsageError: ") and "it has no Batch API; run without --batch" in text, text
    assert text.count("\n") == 1, text
