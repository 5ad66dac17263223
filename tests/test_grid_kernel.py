"""A grid of models in a real kernel: `%%llm_parallel --model a,b` as a notebook sees it."""

from __future__ import annotations

import pytest
from test_kernel import errors, run

jupyter_client = pytest.importorskip("jupyter_client")

SETUP = """%load_ext llmnb
from llmnb import Models
from llmnb.demo_server import DemoServer
server = DemoServer(latency=0.2, per_token=0.01).start()
a = Models.create()
b = Models.create("openai:demo", base_url=server.base_url, api_key="k")"""

CELL = """%%llm_parallel --model a,b -o res
capital: What is the capital of France? Answer in one word.
colours -> list[str]: Name three colours.
label ? spam | ham: Win a free phone now!!!"""


@pytest.fixture(scope="module")
def kernel():
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="python3")
    try:
        assert not errors(run(kc, SETUP))
        yield kc
    finally:
        run(kc, "server.stop()")
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.mark.slow
def test_three_lines_on_two_models_give_six_results_and_one_table(kernel):
    messages = run(kernel, CELL)
    assert not errors(messages)
    result = [m["content"]["data"] for m in messages if m["msg_type"] == "execute_result"]
    assert len(result) == 1
    table = result[0]["text/html"]
    assert table.count("<table") == 1 and table.count("<tr>") == 4  # a header and three tasks
    assert all(f"<th>{model}</th>" in table for model in ("a", "b"))
    assert "6 done" in result[0]["text/plain"] and "capital @ b" in result[0]["text/plain"]
    check = run(kernel, "print(len(res), res.grid().shape, sorted({m for _, m in res}), "
                        "[r['name'].split('/')[0] for r in res.timeline.records()])")
    printed = "".join(m["content"].get("text", "") for m in check if m["msg_type"] == "stream")
    assert printed.strip() == "6 (3, 2) ['a', 'b'] ['a', 'a', 'a', 'b', 'b', 'b']"
