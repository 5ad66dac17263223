"""%%llm_parallel --cluster in a real kernel: a Client of the namespace runs the cell on a
LocalCluster's workers, and the cell's timeline shows both workers."""

from __future__ import annotations

import pytest

pytest.importorskip("distributed")
jupyter_client = pytest.importorskip("jupyter_client")

from test_kernel import errors, run, stream_text  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SETUP = """%load_ext llmnb
from distributed import Client, LocalCluster
from llmnb import Models
from llmnb.demo_server import DemoServer
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
client = Client(cluster)
client.wait_for_workers(2, timeout=60)
server = DemoServer(latency=0.2).start()
demo = Models.create("openai:demo", base_url=server.base_url, rpm=600)
texts = [f"text {i}" for i in range(40)]
"""


@pytest.fixture(scope="module")
def kernel():
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="python3")
    try:
        assert not errors(run(kc, SETUP, timeout=120))
        yield km, kc
    finally:
        run(kc, "client.close(); cluster.close(); server.stop()", timeout=60)
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_cell_runs_on_the_cluster(kernel):
    _, kc = kernel
    messages = run(kc, "%%llm_parallel --model demo --for text in texts --cluster client -o res -q\n"
                       "say: Say hello to {text}", timeout=120)
    assert not errors(messages), errors(messages)
    assert "40 done" in stream_text(messages)
    check = run(kc, "from llmnb.demo_server import REPLY\n"
                    "print(res.as_list() == [REPLY] * 40, res.timeline.summary()['workers'],\n"
                    "      len({r['worker'] for r in res.timeline.records()}))")
    assert stream_text(check).split() == ["True", "2", "2"]


def test_a_scheduler_address_works_too(kernel):
    _, kc = kernel
    messages = run(kc, "address, few = cluster.scheduler_address, texts[:6]\n"
                       "%llm_model demo", timeout=60)
    assert not errors(messages)
    messages = run(kc, "%%llm_parallel --for text in few --cluster $address -o again -q\n"
                       "say: Say hello to {text}", timeout=120)
    assert not errors(messages), errors(messages)
    assert "6 done" in stream_text(messages)
